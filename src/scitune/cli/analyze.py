"""`scitune analyze embed|wup|awa2|nocaps`: representation analysis of seed 003 (LiMBeR): embedding maps, Wu-Palmer
scores, AwA2 property overlap of mistaken animals and the NoCaps per-encoder table."""

from __future__ import annotations

import dataclasses
import json

from scitune.cli.common import parser

DESCRIPTION = """Representation analysis (LiMBeR).

  scitune analyze embed --checkpoint runs/ft/final --data scifig/scicap/test.jsonl --out analysis/ft-vision
  scitune analyze embed --checkpoint runs/ft/final --with_connector true --data labelled.jsonl --out analysis/ft-conn
  scitune analyze embed --checkpoint demo/models/clip --data scifig/scicap/test.jsonl --method tsne --out analysis/clip
  scitune analyze wup --predictions captions.jsonl --out analysis/wup [--ignore '[picture, photo]']
  scitune analyze awa2 --awa2 Animals_with_Attributes2 --predictions '{"BEiT": b.jsonl, "CLIP": c.jsonl}' \\
      --labels awa2_test.jsonl --out analysis/awa2
  scitune analyze nocaps --annotations nocaps_val_4500_captions.json --predictions '{"CLIP": c.jsonl}' \\
      --clip models/clip --out analysis/nocaps

embed: results.json (k-NN leave-one-out accuracy, silhouette), <method>.png, embeddings.npy, labels.json.
wup: results.json (mean Wu-Palmer similarity), wup.jsonl, wup_hist.png.
awa2: results.json (property overlap, Wu-Palmer of captions missing the animal), awa2_overlap.png, wup_missed.png.
nocaps: results.json, table.md (CIDEr-D in/near/out/all, CLIPScore). See docs/analysis.md."""

# action -> (options class path, help, required import names)
_ACTIONS = {
    "embed": ("scitune.analysis.embed:EmbedOptions",
              "embed labelled images through an encoder (+ connector): 2-D plot and separability", ("sklearn",)),
    "wup": ("scitune.analysis.wordnet:WupOptions",
            "Wu-Palmer similarity (WordNet 3.0) of generated text to the true class word", ("nltk",)),
    "awa2": ("scitune.analysis.awa2:AwA2Options",
             "AwA2 property overlap of mistaken animals, Wu-Palmer of captions missing the animal", ()),
    "nocaps": ("scitune.analysis.nocaps:NocapsOptions",
               "NoCaps in/near/out-domain CIDEr-D and CLIPScore per encoder, one table", ("pycocoevalcap",)),
}  # fmt: skip


def _options(action: str):
    import importlib

    module, _, name = _ACTIONS[action][0].partition(":")
    return getattr(importlib.import_module(module), name)


def _run(action: str, opts) -> dict | str:
    """Run one analysis; what the command prints."""
    if action == "embed":
        from scitune.analysis.embed import run_embed

        res = run_embed(opts)
        keys = ("n", "dim", "method", "knn_loo_accuracy", "k", "majority_rate", "silhouette_cosine", "silhouette_2d")
        return {"out": opts.out, **{k: res[k] for k in keys}, "plot": res["plot"]}
    if action == "awa2":
        from scitune.analysis.awa2 import run_awa2

        res = run_awa2(opts)
        keys = ("n", "named_rate", "n_mistaken", "overlap_most_mistaken", "wup_missed")
        per = {n: {k: r[k] for k in keys if k in r} for n, r in res["encoders"].items()}
        return {"out": opts.out, "encoders": per, "plots": res["plots"]}
    if action == "nocaps":
        from scitune.analysis.nocaps import run_nocaps

        return run_nocaps(opts)["table"]
    from scitune.analysis.wordnet import run_wup

    res = run_wup(**dataclasses.asdict(opts))
    keys = ("wup_mean", "wup_mean_not_named", "exact_rate", "n", "n_scored", "n_no_noun", "n_unknown_label")
    return {"out": opts.out, **{k: res[k] for k in keys}}


def main(argv: list[str]) -> int:
    p = parser("analyze", DESCRIPTION)
    sub = p.add_subcommands(dest="action")
    for name, (_, help_, _) in _ACTIONS.items():
        cls = _options(name)
        sp = parser(f"analyze {name}", (cls.__doc__ or "").strip())
        sp.add_class_arguments(cls, None)
        sub.add_subcommand(name, sp, help=help_)
    ns = p.parse_args(argv)
    cls = _options(ns.action)
    opts = cls(**{f.name: ns[ns.action][f.name] for f in dataclasses.fields(cls)})
    from scitune.extras import require

    need = _ACTIONS[ns.action][2] + (("nltk",) if ns.action == "awa2" and opts.wup else ())
    require(f"scitune analyze {ns.action}", *need)
    res = _run(ns.action, opts)
    print(res if isinstance(res, str) else json.dumps(res, indent=2))
    return 0
