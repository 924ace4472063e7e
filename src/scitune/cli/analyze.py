"""`scitune analyze embed|wup`: representation analysis of seed 003 (LiMBeR): embedding maps and Wu-Palmer scores."""

from __future__ import annotations

import dataclasses
import json

from scitune.cli.common import parser

DESCRIPTION = """Representation analysis (LiMBeR).

  scitune analyze embed --checkpoint runs/ft/final --data scifig/scicap/test.jsonl --out analysis/ft-vision
  scitune analyze embed --checkpoint runs/ft/final --with_connector true --data labelled.jsonl --out analysis/ft-conn
  scitune analyze embed --checkpoint demo/models/clip --data scifig/scicap/test.jsonl --method tsne --out analysis/clip
  scitune analyze wup --predictions captions.jsonl --out analysis/wup [--ignore '[picture, photo]']

embed: results.json (k-NN leave-one-out accuracy, silhouette), <method>.png, embeddings.npy, labels.json.
wup: results.json (mean Wu-Palmer similarity), wup.jsonl, wup_hist.png. See docs/analysis.md."""


def main(argv: list[str]) -> int:
    from scitune.analysis import EmbedOptions, WupOptions

    p = parser("analyze", DESCRIPTION)
    sub = p.add_subcommands(dest="action")
    for name, cls, help_ in (
        ("embed", EmbedOptions, "embed labelled images through an encoder (+ connector): 2-D plot and separability"),
        ("wup", WupOptions, "Wu-Palmer similarity (WordNet 3.0) of generated text to the true class word"),
    ):
        sp = parser(f"analyze {name}", (cls.__doc__ or "").strip())
        sp.add_class_arguments(cls, None)
        sub.add_subcommand(name, sp, help=help_)
    ns = p.parse_args(argv)
    cls = EmbedOptions if ns.action == "embed" else WupOptions
    opts = cls(**{f.name: ns[ns.action][f.name] for f in dataclasses.fields(cls)})
    from scitune.extras import require

    require(f"scitune analyze {ns.action}", *(("sklearn",) if ns.action == "embed" else ("nltk",)))
    if ns.action == "embed":
        from scitune.analysis.embed import run_embed

        res = run_embed(opts)
        keys = ("n", "dim", "method", "knn_loo_accuracy", "k", "majority_rate", "silhouette_cosine", "silhouette_2d")
        print(json.dumps({"out": opts.out, **{k: res[k] for k in keys}, "plot": res["plot"]}, indent=2))
        return 0
    from scitune.analysis.wordnet import run_wup

    res = run_wup(**dataclasses.asdict(opts))
    keys = ("wup_mean", "wup_mean_not_named", "exact_rate", "n", "n_scored", "n_no_noun", "n_unknown_label")
    print(json.dumps({"out": opts.out, **{k: res[k] for k in keys}}, indent=2))
    return 0
