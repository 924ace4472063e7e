"""Representation analysis (LiMBeR): embed a labelled image set through a vision encoder (optionally + connector),
project it to 2-D with UMAP or t-SNE, plot it coloured by label and measure how separable the labels are."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scitune.io import DataError, atomic_path, iter_jsonl, write_json

log = logging.getLogger(__name__)

__all__ = ["EmbedOptions", "Embedder", "knn_loo_accuracy", "load_embedder", "project_2d", "read_labelled", "run_embed"]

METHODS = ("auto", "umap", "tsne")
# exact HF model_type -> `VISION_ENCODERS` family key of a bare encoder folder (anything else loads as "auto")
_FAMILY_OF_MODEL_TYPE = {
    "clip": "clip",
    "clip_vision_model": "clip",
    "siglip": "siglip",
    "siglip_vision_model": "siglip",
}
_LABEL_FIELDS = ("label", "figure_type")


@dataclass
class EmbedOptions:
    """Embed labelled images, plot them in 2-D and score label separability."""

    checkpoint: str
    """A scitune checkpoint folder (its vision encoder; add --with_connector true for encoder + connector) or a bare
    HF vision / CLIP-like folder (e.g. a SciFig demo's models/clip)."""
    data: str
    """Labelled JSONL: one {"id", "image", "label"} per line; SciFig / SciCap records use "figure_type" as label."""
    out: str
    """Output folder: embeddings.npy, labels.json, projection.npy, results.json and <method>.png."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""
    method: str = "auto"
    """2-D projection: umap (needs umap-learn), tsne (scikit-learn) or auto (umap when installed, else tsne)."""
    with_connector: bool = False
    """Pass the encoder's tokens through the checkpoint's connector (projector) before pooling."""
    label_field: str | None = None
    """Record field holding the label (default: "label", else "figure_type")."""
    image_root: str | None = None
    """Folder for relative image paths (default: the data file's folder, then its parent)."""
    feature_layer: int | None = None
    """Encoder hidden layer to embed (default: the checkpoint's layer; -2 for a bare encoder, as LLaVA feeds)."""
    limit: int | None = None
    """Embed only the first N records."""
    batch_size: int = 32
    """Images per encoder batch."""
    k: int = 5
    """Neighbours of the leave-one-out k-NN separability score."""
    seed: int = 0
    """Seed of the 2-D projection."""
    device: str = "cpu"
    """Where the encoder runs (cpu, cuda, cuda:1, ...)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.k < 1:
            raise ValueError(f"--k must be >= 1, got {self.k}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")


def read_labelled(
    path: str | os.PathLike[str],
    label_field: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """Read ``{id, image, label}`` items from a JSONL file; image paths come back resolved.

    Raises:
        DataError: a record without an image or a label (naming file, line and id), or missing image files.
    """
    from scitune.eval.benchmark import resolve_image

    path = Path(path)
    base = path.parent
    roots = [Path(image_root)] if image_root else [base, base.parent]
    items: list[dict[str, str]] = []
    for lineno, rec in iter_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        ident = str(rec.get("id", f"line{lineno}"))
        image = rec.get("image")
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if not isinstance(image, str) or not image:
            raise DataError(f"{where} (id {ident}): needs one image path in 'image', got {image!r}")
        fields = (label_field,) if label_field else _LABEL_FIELDS
        label = next((rec[f] for f in fields if rec.get(f) not in (None, "")), None)
        if not isinstance(label, str | int):
            raise DataError(f"{where} (id {ident}): no label in field(s) {', '.join(fields)} (use --label_field)")
        items.append({"id": ident, "image": resolve_image(image, roots), "label": str(label)})
    missing = [it["image"] for it in items if not Path(it["image"]).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) not found, e.g. {missing[:3]} (set --image_root)")
    if len(items) < 3:
        raise DataError(f"{path}: {len(items)} labelled image(s); a 2-D projection needs at least 3")
    return items


class Embedder:
    """A vision encoder (+ optional connector) that maps images to one mean-pooled vector each.

    Args:
        vision: a `VisionEncoder` (returns (B, N, D_vis)).
        processor: its HF image processor.
        connector: a projector (B, N, D_vis) -> (B, N', D_llm), or None.
        info: what was loaded (recorded in results.json).
    """

    def __init__(self, vision: Any, processor: Any, connector: Any, info: dict[str, Any]):
        self.vision, self.processor, self.connector, self.info = vision, processor, connector, info

    def __call__(self, images: list[Any]) -> np.ndarray:
        """PIL images -> (B, D) float32 embeddings (token mean of the encoder or connector output)."""
        import torch

        dev = next(self.vision.parameters()).device
        with torch.no_grad():
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(dev)
            feats = self.vision(pixels)  # (B, N, D_vis)
            if self.connector is not None:
                dtype = next(self.connector.parameters(), feats).dtype
                feats = self.connector(feats.to(dtype))  # (B, N', D_llm)
            return feats.float().mean(dim=1).cpu().numpy()  # (B, D)


def _connector_width(ckpt: Path, meta: dict[str, Any]) -> int:
    """The LLM embedding width the checkpoint's connector maps to (read from the LLM's config, not its weights)."""
    from transformers import AutoConfig

    lm = meta["llm"]
    src = str(ckpt / "llm") if lm.get("saved") == "full" else lm.get("path")
    if not src:
        raise ValueError(f"{ckpt}: scitune.json names no LLM to read the connector width from")
    cfg = AutoConfig.from_pretrained(src)
    return int(cfg.get_text_config().hidden_size)


def load_embedder(
    path: str | os.PathLike[str], with_connector: bool = False, feature_layer: int | None = None, device: str = "cpu"
) -> Embedder:
    """Load the encoder of a scitune checkpoint (+ its connector), or a bare HF vision / CLIP-like folder.

    Never loads a checkpoint's LLM weights (only its config, for the connector width).
    """
    import json

    from safetensors.torch import load_file
    from transformers import AutoImageProcessor

    from scitune.model.checkpoint import META_FILE, read_meta
    from scitune.model.projector import build_projector
    from scitune.model.vision import load_vision_encoder

    p = Path(path)
    if (p / META_FILE).is_file():
        meta = read_meta(p)
        v = meta["vision"]
        layer = v["feature_layer"] if feature_layer is None else feature_layer
        vpath = str(p / "vision") if v.get("saved") else v.get("path")
        fresh = bool(v.get("random_init")) and not v.get("saved")  # LiMBeR's "Random" encoders, rebuilt as trained
        vision, _ = load_vision_encoder(v["name"], vpath, layer, v["select"], random_init=fresh)
        processor = AutoImageProcessor.from_pretrained(p / "image_processor")
        info = {"kind": "scitune-checkpoint", "path": str(p), "vision": v["name"], "feature_layer": layer}
        connector = None
        if with_connector:
            pm = meta["projector"]
            connector = build_projector(
                pm["name"], vision.hidden_size, _connector_width(p, meta), pm.get("num_tokens", 0)
            )
            connector.load_state_dict(load_file(str(p / "projector.safetensors")))
            connector.eval().to(device)
            info["connector"] = pm["name"]
        return Embedder(vision.eval().to(device), processor, connector, info)
    if with_connector:
        raise ValueError(f"--with_connector needs a scitune checkpoint ({META_FILE}); {p} is a bare encoder folder")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: neither a scitune checkpoint ({META_FILE}) nor a HF model folder (config.json)")
    model_type = json.loads((p / "config.json").read_text()).get("model_type", "")
    family = _FAMILY_OF_MODEL_TYPE.get(model_type, "auto")
    layer = -2 if feature_layer is None else feature_layer
    vision, processor = load_vision_encoder(family, str(p), layer, "patch")
    info = {
        "kind": "encoder-folder",
        "path": str(p),
        "vision": family,
        "model_type": model_type,
        "feature_layer": layer,
    }
    return Embedder(vision.eval().to(device), processor, None, info)


def embed_images(embedder: Embedder, paths: list[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Embed image files in batches; returns (N, D) float32."""
    from tqdm.auto import tqdm

    from scitune.infer.generate import open_image

    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embed", disable=not progress):
        out.append(embedder([open_image(p) for p in paths[i : i + batch_size]]))
    return np.concatenate(out).astype(np.float32)


def resolve_method(method: str) -> str:
    """``auto`` -> ``umap`` when umap-learn is importable, else ``tsne``."""
    from scitune.extras import missing

    if method != "auto":
        return method
    return "tsne" if missing("umap") else "umap"


def project_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) with cosine distances: UMAP (umap-learn) or t-SNE (scikit-learn)."""
    n = len(x)
    if method == "umap":
        from scitune.extras import load

        umap = load("--method umap", "umap")
        # a fixed random_state makes UMAP single-threaded anyway; n_jobs=1 says so and silences its warning
        nn = max(2, min(15, n - 1))
        reducer = umap.UMAP(n_components=2, n_neighbors=nn, metric="cosine", random_state=seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        # perplexity must stay below N; sklearn's default 30 suits a few hundred points
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
        return np.asarray(tsne.fit_transform(x), dtype=np.float32)
    raise ValueError(f"unknown projection method {method!r}; choose umap or tsne")


def knn_loo_accuracy(x: np.ndarray, labels: list[str], k: int = 5) -> float:
    """Leave-one-out k-NN accuracy with cosine distance: each point is labelled by the majority of its k nearest
    other points (a tie goes to the tied label whose member is nearest)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x) - 1)
    # kneighbors() without a query excludes each point from its own neighbours: leave-one-out by construction
    _, idx = NearestNeighbors(n_neighbors=k, metric="cosine").fit(x).kneighbors()
    correct = 0
    for i, row in enumerate(idx):
        votes = Counter(labels[j] for j in row)
        top = max(votes.values())
        pred = next(labels[j] for j in row if votes[labels[j]] == top)  # rows are sorted nearest first
        correct += pred == labels[i]
    return correct / len(x)


def silhouette(x: np.ndarray, labels: list[str], metric: str = "cosine") -> float | None:
    """Mean silhouette coefficient (-1..1), or None when it is undefined (one class, or one point per class)."""
    from sklearn.metrics import silhouette_score

    n_classes = len(set(labels))
    if not 2 <= n_classes <= len(x) - 1:
        return None
    return float(silhouette_score(x, labels, metric=metric))


def scatter_plot(path: str | os.PathLike[str], xy: np.ndarray, labels: list[str], title: str) -> None:
    """Write a 2-D scatter plot coloured by label (PNG, matplotlib's Agg canvas, atomic)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = sorted(set(labels))
    cmap_name = "tab10" if len(classes) <= 10 else "tab20"
    fig = Figure(figsize=(7.5, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[cmap_name]
    lab = np.asarray(labels)
    for i, c in enumerate(classes):
        pts = xy[lab == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.8, color=cmap(i % cmap.N), label=f"{c} ({len(pts)})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=1.5, loc="best", frameon=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def separability(x: np.ndarray, xy: np.ndarray, labels: list[str], k: int) -> dict[str, Any]:
    """k-NN leave-one-out accuracy and silhouette scores, next to the majority-class rate they should beat."""
    counts = Counter(labels)
    return {
        "knn_loo_accuracy": knn_loo_accuracy(x, labels, k),
        "k": min(k, len(x) - 1),
        "majority_rate": max(counts.values()) / len(labels),
        "silhouette_cosine": silhouette(x, labels, "cosine"),
        "silhouette_2d": silhouette(xy, labels, "euclidean"),
    }


def run_embed(opts: EmbedOptions) -> dict[str, Any]:
    """Embed, project, plot and score; write everything into ``opts.out`` and return results.json's content."""
    t0 = time.time()
    items = read_labelled(opts.data, opts.label_field, opts.image_root, opts.limit)
    embedder = load_embedder(opts.checkpoint, opts.with_connector, opts.feature_layer, opts.device)
    x = embed_images(embedder, [it["image"] for it in items], opts.batch_size, opts.progress)
    if not np.isfinite(x).all():
        raise ValueError(f"{opts.checkpoint}: the encoder produced non-finite embeddings")
    labels = [it["label"] for it in items]
    method = resolve_method(opts.method)
    log.info("embedded %d images into %d dims; projecting with %s", len(x), x.shape[1], method)
    xy = project_2d(x, method, opts.seed)
    scores = separability(x, xy, labels, opts.k)

    from scitune.outputs import claim_output_folder

    writes = ("embeddings.npy", "labels.json", "projection.npy", "results.json", "*.png")
    out = claim_output_folder(opts.out, "analysis", writes, opts.overwrite)
    for name, arr in (("embeddings.npy", x), ("projection.npy", xy)):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    write_json(out / "labels.json", [{"id": it["id"], "label": it["label"], "image": it["image"]} for it in items])
    what = embedder.info["vision"] + (f" + {embedder.info['connector']}" if "connector" in embedder.info else "")
    title = (
        f"{Path(opts.checkpoint).name} [{what}] · {method} · n={len(x)}\n"
        f"k-NN LOO acc {scores['knn_loo_accuracy']:.3f} (majority {scores['majority_rate']:.3f})"
    )
    plot = out / f"{method}.png"
    scatter_plot(plot, xy, labels, title)
    results = {
        "encoder": embedder.info,
        "data": str(opts.data),
        "n": len(x),
        "dim": int(x.shape[1]),
        "method": method,
        "classes": dict(sorted(Counter(labels).items())),
        **scores,
        "plot": str(plot),
        "options": asdict(opts),
        "seconds": round(time.time() - t0, 2),
    }
    write_json(out / "results.json", results)
    return results
