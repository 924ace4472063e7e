"""Typed configuration dataclasses; attribute docstrings become the CLI's ``--help`` text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_IMAGE_TOKEN = "<image>"
"""The placeholder that marks an image in the text (LLaVA's); every other module takes it from here."""


def require(ok: bool, flag: str, problem: str) -> None:
    """Raise a ``ValueError`` naming ``flag`` when its value is out of range (``ok`` False)."""
    if not ok:
        raise ValueError(f"{flag}: {problem}")


@dataclass
class VisionConfig:
    """The vision encoder."""

    name: str = "clip-vit-l-14"
    """Vision encoder registry key (`scitune ls vision-encoders`)."""
    path: str | None = None
    """Hub id or local folder of the weights; empty = the registry entry's default hub id."""
    feature_layer: int = -2
    """Hidden layer whose features feed the connector (-2 = penultimate, as LLaVA)."""
    select: Literal["patch", "cls_patch", "pooled"] = "patch"
    """Tokens to keep: patch tokens, CLS + patch tokens, or one pooled vector per image (LiMBeR's ResNet/CLIP)."""
    trainable: bool = False
    """Train the vision encoder too (align and finetune keep it frozen by default; full-finetune always trains it)."""
    random_init: bool = False
    """Keep the encoder's architecture and image processing but start from freshly initialised weights (seed 0)
    instead of the pretrained ones: LiMBeR's "Random" baselines (NFRN50 Random, BEiT Random)."""
    anyres: list[str] = field(default_factory=list)
    """AnyRes tiling (LLaVA-NeXT): candidate grids ROWSxCOLS, e.g. [1x1,1x2,2x1,2x2]; each image is cut into the
    best-fitting grid of encoder-sized tiles plus one overview, so it takes (rows*cols+1) x the tokens of one tile.
    Empty = off (one encoder pass per image)."""
    image_aspect: Literal["resize", "pad"] = "resize"
    """How an image that is not square reaches the encoder: resize = the image processor's own resize and centre
    crop; pad = first padded to a square in the processor's mean colour (LLaVA-1.5's expand2square,
    image_aspect_ratio: pad), so nothing is cut off. Not with anyres."""

    def __post_init__(self) -> None:
        if self.image_aspect == "pad" and self.anyres:
            raise ValueError("--model.vision.image_aspect pad: not with --model.vision.anyres (AnyRes tiles the image)")
        for g in self.anyres:
            if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", str(g)):
                raise ValueError(f"--model.vision.anyres: {g!r} is not a grid like '2x3' (rows x cols, both >= 1)")


@dataclass
class ProjectorConfig:
    """The connector from vision features to LLM embeddings."""

    name: str = "linear"
    """Projector registry key: linear (SciTune, LLaVA-1, LiMBeR), mlp2x-gelu (LLaVA-1.5), linear-prefix, identity,
    linear-ln (MAGMA's image prefix: linear then LayerNorm)."""
    num_tokens: int = 0
    """linear-prefix only: image tokens each pooled image vector becomes (LiMBeR's k)."""


@dataclass
class AdapterConfig:
    """MAGMA bottleneck adapters inside the frozen LM's blocks."""

    name: str | None = None
    """Adapter registry key: magma / magma-mlp / magma-attn = sequential bottleneck adapters
    after attention and MLP / MLP only (MAGMA_v1) / attention only; parallel[-mlp|-attn] = He et al.'s parallel
    adapters (on the block's input, added to its output); scaled-parallel[-mlp|-attn] = the same times a learned
    scale s; empty = no adapters."""
    downsample_factor: int = 4
    """Hidden width of each adapter = LM width / this."""


@dataclass
class LlmConfig:
    """The decoder language model."""

    path: str = "huggyllama/llama-7b"
    """Hub id or local folder of any AutoModelForCausalLM."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder; empty = same as `path`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the frozen weights are loaded in."""
    attn_implementation: str | None = None
    """Attention backend passed to transformers (sdpa, eager, flash_attention_2); empty = transformers' default."""


@dataclass
class ModelConfig:
    """The vision-language model: encoder, connector and LLM."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    image_token: str = DEFAULT_IMAGE_TOKEN
    """Placeholder string marking where an image goes in the text."""
    use_im_start_end: bool = False
    """Put <im_start> before and <im_end> after each image's tokens (LLaVA's mm_use_im_start_end; the SciTune
    authors' stage 1). The two new embedding rows start at the mean of the others and train in every stage."""
    init_from: str | None = None
    """A scitune checkpoint to start from (e.g. the align stage's output for finetune); overrides the parts above."""


@dataclass
class DataSource:
    """One source of a training-data mixture (`scitune.data.mixture`)."""

    path: str = ""
    """The source file."""
    format: str = "records"
    """How to read it: records (canonical JSONL or LLaVA .json list, as a single --data.train file) or a converter
    that has a reader (alpaca, openorca; `scitune ls converters`)."""
    image_root: str | None = None
    """Folder that this source's relative image paths are resolved against; empty = --data.image_root, else the
    file's folder."""
    name: str | None = None
    """Name of the source in the run folder's mixture files and record ids (``name/id``); empty = the file's stem."""
    count: int | None = None
    """Records to draw (seeded, without repeats; see ``upsample``); empty = all (or ``fraction``)."""
    fraction: float | None = None
    """Fraction of the records to draw, in (0, 1] (rounded to the nearest count); not with ``count``."""
    upsample: bool = False
    """A ``count`` above the source's size repeats every record as often as it fits and draws the rest (an error
    otherwise)."""
    transforms: list[str] = field(default_factory=list)
    """Named transforms applied in order before sampling (`scitune ls data-transforms`): strip-images,
    llava-group-conversation, llava-group-detail, llava-group-complex-reasoning."""

    def __post_init__(self) -> None:
        where = f"--data.train source {self.name or self.path!r}"
        require(bool(self.path), where, "needs a 'path'")
        require(self.count is None or self.count >= 1, where, f"count must be >= 1, got {self.count}")
        require(
            self.fraction is None or 0.0 < self.fraction <= 1.0,
            where,
            f"fraction must be in (0, 1], got {self.fraction}",
        )
        require(self.count is None or self.fraction is None, where, "give count or fraction, not both")
        self.transforms = list(self.transforms)


def data_sources(value: object) -> list[DataSource]:
    """``--data.train`` given as a list: each item a `DataSource` or a mapping of its fields (an unknown key is an
    error naming it)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(DataSource)}
    out = []
    for i, item in enumerate(value):  # type: ignore[attr-defined]
        if isinstance(item, DataSource):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"--data.train: source {i} must be a mapping with a 'path', got {item!r:.60}")
        unknown = sorted(set(item) - known)
        require(not unknown, f"--data.train source {i}", f"unknown key(s) {unknown} (known: {sorted(known)})")
        out.append(DataSource(**item))
    return out


@dataclass
class DataConfig:
    """Training data."""

    train: list[DataSource] | str | None = None
    """Canonical JSONL (or LLaVA .json list) of training records; or a mixture: a list of sources (path, format,
    image_root, count or fraction, transforms), inline in the config or as a .yaml file of that list
    (docs/data.md)."""
    sample_seed: int = 0
    """Seed of a mixture's sampling (counts, fractions): the same seed draws the same records."""
    image_root: str | None = None
    """Folder that relative image paths are resolved against; empty = the data file's folder."""
    template: str = "scitune"
    """Chat template registry key: scitune, plain, vicuna-v1, chat-template."""
    max_length: int = 2048
    """Context length; a longer sample is an error (never cut silently)."""
    skip_bad_samples: bool = False
    """Train on the valid records and write the skipped ids to the run dir instead of stopping."""
    group_by_length: bool = False
    """Sample batches of similar length (less padding)."""
    image_placement: Literal["as-is", "before", "after", "random"] = "as-is"
    """Where to add <image> in the first human turn of records that have an image but no placeholder."""
    packing: bool = False
    """Pack each micro-batch's samples into one row with no padding (position ids restart; on SDPA each sample
    attends to itself only, through the ``sdpa_varlen`` attention)."""
    feature_cache: str | None = None
    """Folder from `scitune data cache-features`: the align stage reads frozen vision features from it."""
    num_workers: int = 0
    """Worker processes that load images and collate the next micro-batches while a step trains (0 = in the
    training process)."""
    max_image_pixels: int = 50_000_000
    """Largest image in pixels (width x height), checked from the file's header before decoding; a larger image is
    a bad record. 0 = no limit."""
    allow_outside_root: bool = False
    """Read image paths that leave --data.image_root (absolute paths, '..', symlinks pointing out); refused
    otherwise."""
    max_bad_fraction: float = 0.001
    """An image that cannot be read during training (changed after validation) skips its record; the run stops when
    skipped records pass this fraction of the data."""

    def __post_init__(self) -> None:
        if isinstance(self.train, str) and self.train.lstrip().startswith("["):  # an inline list that did not parse
            import yaml

            try:
                self.train = yaml.safe_load(self.train)
            except yaml.YAMLError as e:
                raise ValueError(f"--data.train: not a valid YAML list of sources: {str(e).splitlines()[0]}") from None
        if isinstance(self.train, (list, tuple)):
            self.train = data_sources(self.train)
        require(self.max_length >= 1, "--data.max_length", f"must be >= 1, got {self.max_length}")
        require(self.num_workers >= 0, "--data.num_workers", f"must be >= 0, got {self.num_workers}")
        require(
            self.max_image_pixels >= 0,
            "--data.max_image_pixels",
            f"must be >= 0 (0 = no limit), got {self.max_image_pixels}",
        )
        require(
            0.0 <= self.max_bad_fraction <= 1.0,
            "--data.max_bad_fraction",
            f"must be in [0, 1], got {self.max_bad_fraction}",
        )


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (one per stage preset)."""

    lr: float = 2e-3
    """Peak learning rate."""
    vision_lr: float | None = None
    """Peak learning rate of the vision encoder when it is trained (full-finetune, --model.vision.trainable);
    empty = --optim.lr."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.03
    """Fraction of steps with linear warmup."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    fused: bool = False
    """Use torch's fused AdamW (CUDA only)."""

    def __post_init__(self) -> None:
        b1, b2 = self.betas
        require(0.0 <= self.warmup_ratio < 1.0, "--optim.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        require(self.lr >= 0, "--optim.lr", f"must be >= 0, got {self.lr}")
        require(
            self.vision_lr is None or self.vision_lr >= 0,
            "--optim.vision_lr",
            f"must be >= 0 (or empty = --optim.lr), got {self.vision_lr}",
        )
        require(self.weight_decay >= 0, "--optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0, "--optim.betas", f"must both be in [0, 1), got {self.betas}")
        require(self.eps > 0, "--optim.eps", f"must be > 0, got {self.eps}")
        require(
            self.max_grad_norm >= 0,
            "--optim.max_grad_norm",
            f"must be >= 0 (0 = no clipping), got {self.max_grad_norm}",
        )


@dataclass
class LoraConfig:
    """LoRA adapters for the finetune stage (peft)."""

    r: int = 0
    """LoRA rank; 0 = full finetuning."""
    quantize: Literal["none", "4bit"] = "none"
    """QLoRA: load the frozen LLM in 4-bit (bitsandbytes, CUDA only)."""
    alpha: int = 16
    """LoRA alpha."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: str = "all-linear"
    """Modules to adapt (peft's `target_modules`; comma-separated names or all-linear)."""

    def __post_init__(self) -> None:
        require(self.r >= 0, "--train.lora.r", f"must be >= 0 (0 = full finetuning), got {self.r}")
        require(self.r == 0 or self.alpha > 0, "--train.lora.alpha", f"must be > 0, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, "--train.lora.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """The training run."""

    stage: Literal["align", "finetune", "full-finetune"] = "align"
    """align: train the connector only; finetune: connector + LLM; full-finetune: vision encoder + connector + LLM."""
    out_dir: str = "runs/scitune"
    """Run directory (config, metrics, checkpoints)."""
    epochs: float = 1.0
    """Passes over the data."""
    max_steps: int = -1
    """Train exactly this many optimizer steps, whatever --train.epochs says (as HF Trainer's max_steps; the data
    order continues into further epochs); -1 = run --train.epochs."""
    global_batch_size: int = 128
    """Samples per optimizer step over all processes."""
    micro_batch_size: int = 4
    """Samples per forward pass per process; accumulation = global / (micro * processes)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision via accelerate."""
    gradient_checkpointing: bool = False
    """Recompute LLM activations in the backward pass."""
    compile: bool = False
    """Compile the LLM with torch.compile (opt-in; first steps are slower)."""
    offload_activations: bool = False
    """Keep the tensors saved for the backward pass in host memory (torch.autograd.graph.save_on_cpu, pinned on
    CUDA): less GPU memory for PCIe traffic. On a CPU run it changes nothing."""
    seed: int = 42
    """Seed for initialisation, data order and dropout."""
    log_every: int = 1
    """Write metrics every N steps."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 2
    """Keep the newest K step checkpoints."""
    resume: str | None = None
    """'latest' (the newest checkpoint of --train.out_dir that verifies; damaged ones are skipped) or a checkpoint
    folder, to continue the run exactly."""
    allow_inexact_resume: bool = False
    """Resume even though it cannot be exact: the data, base weights or settings changed since the run started,
    or the checkpoint lacks its RNG or optimizer state."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    report_to: list[str] = field(default_factory=list)
    """Extra trackers (tensorboard, wandb); metrics.jsonl is always written."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        require(self.global_batch_size >= 1, "--train.global_batch_size", f"must be >= 1, got {self.global_batch_size}")
        require(self.micro_batch_size >= 1, "--train.micro_batch_size", f"must be >= 1, got {self.micro_batch_size}")
        require(self.epochs > 0, "--train.epochs", f"must be > 0, got {self.epochs}")
        require(
            self.max_steps == -1 or self.max_steps >= 1,
            "--train.max_steps",
            f"must be >= 1 (or -1 = all epochs), got {self.max_steps}",
        )
        require(self.log_every >= 1, "--train.log_every", f"must be >= 1, got {self.log_every}")
        require(
            self.save_every >= 0, "--train.save_every", f"must be >= 0 (0 = only at the end), got {self.save_every}"
        )
        require(self.keep_last >= 0, "--train.keep_last", f"must be >= 0, got {self.keep_last}")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"--train.global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"--train.micro_batch_size ({self.micro_batch_size})"
            )
        if self.lora.r and self.stage not in ("finetune", "full-finetune"):
            raise ValueError(
                "--train.lora.r applies to the finetune stages; set --train.stage finetune (or full-finetune) or r=0"
            )
        if self.lora.quantize != "none" and not self.lora.r:
            raise ValueError("--train.lora.quantize 4bit is QLoRA: also set --train.lora.r (e.g. 64)")


@dataclass
class RunConfig:
    """Everything a `scitune train` run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class GenerationConfig:
    """Decoding settings."""

    max_new_tokens: int = 256
    """Most tokens to generate."""
    temperature: float = 0.0
    """0 = greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings (the template's own stop is always used)."""

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "--gen.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        require(self.temperature >= 0, "--gen.temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        require(0.0 < self.top_p <= 1.0, "--gen.top_p", f"must be in (0, 1], got {self.top_p}")
