"""What `scitune demo` runs: the user's options (`DemoConfig`) and the named sizes (`SIZES`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scitune.pretrain.clip import ClipPretrainConfig
from scitune.pretrain.lm import LmPretrainConfig
from scitune.sources.scifig import GLANCE_KINDS


@dataclass
class DemoConfig:
    """The demo run."""

    out: str = "demo_out"
    """Output folder (a rerun with the same folder skips the steps already done there)."""
    size: Literal["test", "micro", "small"] = "micro"
    """micro: the real demo (a few minutes on 2 CPU cores); small: more data and steps; test: seconds, a smoke run."""
    ablation: bool = False
    """Also run stages 1 and 2 with the stage-1 variants C, CT and CTO (caption; + type; + OCR) and report them
    beside CTOM (+ paragraphs and mentions) as SciTune's Table 3; data, tokenizer and micro models are shared."""
    ocr: Literal["auto", "tesseract", "truth"] = "auto"
    """auto: when Tesseract is installed, measure it on 20 test figures against SciFig's OCR truth and train on the
    truth; tesseract: OCR every figure and train on Tesseract's text (slow: ~0.4 s a figure); truth: no OCR."""
    seed: int = 0
    """Seed of the data and the models."""
    threads: int = 1
    """Torch CPU threads. 1 (the default) is fastest for the micro models and gives the same numbers on a quiet or a
    busy machine (a different thread count changes float sums, so the numbers move in the last digits and the
    training drifts); 0 chooses from the CPUs not already busy."""
    progress: bool = True
    """Show progress bars."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""


@dataclass
class StageSize:
    """One training stage of the demo."""

    epochs: float = 1.0
    """Passes over the stage's data."""
    batch: int = 16
    """Global batch size (one micro batch)."""
    lr: float = 1e-3
    """Peak learning rate."""
    max_steps: int = -1
    """Stop after this many steps (-1 = all epochs)."""


@dataclass
class DemoSize:
    """How big each part of the demo is."""

    n_train: int = 2000
    """SciFig train figures."""
    n_val: int = 100
    """SciFig val figures (not trained on; the CLIP's held-out retrieval is measured on them)."""
    n_test: int = 200
    """SciFig test figures (figure type, captions, MCQs)."""
    questions_per_figure: int = 3
    """Image MCQs per figure (of distinct kinds; fewer where a figure supports fewer of the asked kinds)."""
    kinds: tuple[str, ...] = tuple(k for k in GLANCE_KINDS if k != "figure-type")
    """SciFig question kinds: those a 64-pixel figure answers without reading its text, less the figure type (stage
    1 teaches and tests it) (empty = all kinds)."""
    fixed_choices: bool = True
    """SciFig lists each question's choices in a fixed order (`SciFigConfig.fixed_choices`: counts ascending over
    their whole range, names in the vocabulary's order), so the letter follows from the answer. Shuffled (False),
    the micro LM names the right choice but not its letter: it does not learn to look the choice up in the option
    list (issue 19: 52 % of answers named the right choice, 24 % gave its letter, chance 26 %)."""
    lm_mcq_dialogues: bool = False
    """Also pretrain the micro LM on the train MCQs as text-only dialogues (it then learns to answer them blind
    before stage 2 shows it the figures). Off: it reads the lectures and solutions as plain text only."""
    image_size: int = 64
    """SciFig image side in pixels."""
    vocab_size: int = 1536
    """BPE vocabulary size."""
    clip: ClipPretrainConfig = field(default_factory=ClipPretrainConfig)
    lm: LmPretrainConfig = field(default_factory=LmPretrainConfig)
    feature_layer: int = -2
    """Vision hidden layer fed to the connector: the penultimate, as LLaVA (the micro CLIP's contrastive loss trains
    the last layer for its CLS output only). Measured on the micro size, seed 0 (issue 19): official ScienceQA
    56.79 % with the figure vs 39.51 % blind at -2; 53.09 % vs 38.89 % at -1."""
    select: str = "cls_patch"
    """patch | cls_patch."""
    projector: str = "mlp2x-gelu"
    """Connector registry key."""
    align: StageSize = field(default_factory=lambda: StageSize(epochs=2.0, batch=16, lr=2e-3))
    finetune: StageSize = field(default_factory=lambda: StageSize(epochs=3.0, batch=16, lr=1e-3))
    prompt_format: str = "QCM-EA"
    """ScienceQA prompt format of stage 2 (and the input half of the test prompt). EA: the solution, which ends by
    naming the answer, then ``The answer is X.``"""
    finetune_vision: bool = True
    """Stage 2 also trains the vision encoder (``--model.vision.trainable``): the micro CLIP only learned captions."""
    caption_tokens: int = 48
    """Tokens generated per figure description (type + first caption sentence)."""
    answer_tokens: int = 48
    """Tokens generated per MCQ answer (solution and letter)."""
    examples: int = 6
    """Example figures shown in the report."""


SIZES: dict[str, DemoSize] = {
    "micro": DemoSize(),
    "small": DemoSize(
        n_train=2000,
        n_val=200,
        n_test=400,
        questions_per_figure=3,
        clip=ClipPretrainConfig(epochs=20.0, vision_hidden=128, vision_layers=4),
        lm=LmPretrainConfig(epochs=6.0, layers=4, hidden=192, heads=6),
        align=StageSize(epochs=2.0, batch=16, lr=2e-3),
        finetune=StageSize(epochs=3.0, batch=16, lr=1e-3),
    ),
    "test": DemoSize(
        n_train=20,
        n_val=5,
        n_test=10,
        questions_per_figure=1,
        vocab_size=512,
        clip=ClipPretrainConfig(
            epochs=1.0,
            batch_size=10,
            vision_hidden=32,
            vision_layers=1,
            text_hidden=32,
            text_layers=1,
            projection_dim=32,
        ),  # fmt: skip
        lm=LmPretrainConfig(epochs=1.0, hidden=32, layers=1, heads=2, block_size=64, batch_size=8),
        align=StageSize(epochs=1.0, batch=8, lr=1e-2, max_steps=3),
        finetune=StageSize(epochs=1.0, batch=8, lr=1e-2, max_steps=3),
        caption_tokens=8,
        answer_tokens=6,
        examples=2,
    ),
}
"""Named sizes; the micro CLIP and LM defaults are those of `ClipPretrainConfig` and `LmPretrainConfig`."""
