"""With Java: `score_captions` equals COCOEvalCap's pipeline (PTBTokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr)
called directly from pycocoevalcap; skipped where java is not installed (the Java-free path is in
test_captioning_coco.py)."""

from __future__ import annotations

import shutil

import pytest
from test_captioning_coco import HYPS, REFS, reference_scores

from scitune.eval.coco_caption import score_captions

pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is not installed")


@needs_java
@pytest.mark.slow  # METEOR's jar loads its paraphrase table: ~10 s per start, more on a loaded machine
def test_scores_equal_pycocoevalcap_with_java(monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_module
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    meteor = meteor_module.Meteor()  # one java process, used by score_captions and by the reference below
    monkeypatch.setattr(meteor_module, "Meteor", lambda: meteor)
    got = score_captions(HYPS, REFS)  # auto with java: PTB tokens and METEOR, as COCOEvalCap
    assert got["tokenizer"] == "ptb" and got["skipped"] == {}
    tok = PTBTokenizer()  # COCOEvalCap's calls: references, then predictions
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": HYPS[k]}] for k in REFS})
    want = reference_scores(gts, res)
    want["METEOR"] = meteor.compute_score(gts, res)[0]
    assert got["scores"] == pytest.approx(want, abs=1e-12)
    assert 0.1 < want["METEOR"] < 1
    # a missing prediction (blank) is tokenized to "" without reaching the jar, and scores 0
    blank = score_captions({**HYPS, "4": ""}, REFS, meteor="off")
    assert blank["per_item"]["CIDEr"]["4"] == 0.0 and blank["per_item"]["CIDEr"]["1"] == got["per_item"]["CIDEr"]["1"]
