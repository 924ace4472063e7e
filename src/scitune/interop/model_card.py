"""The model card (``README.md``) of an exported llava-hf folder: hub metadata, what the model is made of, the data it
was trained on, its prompt format and stops, how to run it with transformers and vLLM, and its eval scores."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from scitune.processor import Processor

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EXAMPLE_QUESTION = "What type of figure is this?"


def base_models(identity: dict[str, Any]) -> list[str]:
    """The hub ids of the vision encoder and LLM the model was built from (local folders are left out)."""
    out = []
    for part in ("vision", "llm"):
        path = (identity.get(part) or {}).get("path")
        if isinstance(path, str) and _HUB_ID.match(path) and not os.path.exists(path):
            out.append(path)
    return out


def eval_scores(checkpoint: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """``{benchmark, examples, summary}`` of each ``eval/*/results.json`` under the checkpoint (`scitune eval`'s default
    output folders), numeric summary values only."""
    from scitune.io import read_json

    if checkpoint is None:
        return []
    scores = []
    for file in sorted(Path(checkpoint).glob("eval/*/results.json")):
        try:
            res = read_json(file)
        except ValueError:
            continue
        summary = res.get("summary") if isinstance(res, dict) else None
        if not isinstance(summary, dict):
            continue
        numbers = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        examples = (res.get("input") or {}).get("examples") or (res.get("checkpoint") or {}).get("input", {}).get(
            "examples"
        )
        scores.append({"benchmark": res.get("benchmark", file.parent.name), "examples": examples, "summary": numbers})
    return scores


def training_data(checkpoint: str | os.PathLike[str] | None) -> list[str]:
    """Markdown lines on what the checkpoint was trained on: its run config's data file, stage and template, and the
    data's content hash from its manifest."""
    from scitune.model.checkpoint import read_run_config
    from scitune.outputs import read_manifest

    run = read_run_config(checkpoint) if checkpoint is not None else None
    if run is None:
        return ["Not recorded: the checkpoint was not written by `scitune train` (built, imported or merged)."]
    data, train, model = run.get("data", {}), run.get("train", {}), run.get("model", {})
    fp = ((read_manifest(checkpoint) or {}).get("fingerprint") or {}).get("data", {}).get("train", {})
    train_data = data.get("train")
    if isinstance(train_data, list):  # a mixture (docs/data.md)
        name = "mixture of " + ", ".join(Path(str(s.get("path", "?"))).name for s in train_data)
    else:
        name = Path(train_data).name if train_data else "(none)"
    lines = [f"- data file: `{name}`" + (f" ({fp['size']} bytes, sha256 `{fp['sha256']}`)" if fp else "")]
    lines.append(f"- stage: `{train.get('stage')}`, chat template `{data.get('template')}`")
    if model.get("init_from"):
        lines.append(f"- continued from the checkpoint `{Path(model['init_from']).name}` (its own data not listed)")
    return lines


def _usage(model_class: str, sep_needed: bool) -> str:
    gen_args = "max_new_tokens=256" + (", tokenizer=processor.tokenizer" if sep_needed else "")
    return f"""```python
from PIL import Image
from transformers import AutoProcessor, {model_class}

processor = AutoProcessor.from_pretrained("path/to/this/folder")
model = {model_class}.from_pretrained("path/to/this/folder")
image = Image.open("figure.png")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "{EXAMPLE_QUESTION}"}}]}}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=image, text=text, add_special_tokens=False, return_tensors="pt")  # the text has its BOS
out = model.generate(**inputs, {gen_args})
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def model_card(
    model: Any,
    processor: Processor,
    model_class: str,
    connector: str,
    generation: dict[str, Any],
    vllm_problems: list[str],
    checkpoint: str | os.PathLike[str] | None = None,
) -> str:
    """The README.md text of an export.

    Args:
        model: the exported `VisionLanguageModel`.
        processor: its processor (template, stops).
        model_class: ``LlavaForConditionalGeneration`` or ``LlavaNextForConditionalGeneration``.
        connector: the connector's exported form (`scitune.interop.connector`).
        generation: the generation config's ``eos_token_id`` and ``stop_strings`` (`hf_files.write_generation_config`).
        vllm_problems: why vLLM would not load the folder (`vllm_compat.vllm_llava_problems`), empty when it would.
        checkpoint: the scitune checkpoint folder it came from (run config, manifest, eval results), if any.
    """
    import yaml

    from scitune.interop.chat_template import _scitune_text
    from scitune.interop.vllm_compat import VLLM_VERSION_READ

    ident = model.identity
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-text-to-text"}
    if bases := base_models(ident):
        meta["base_model"] = bases
    meta["tags"] = ["scitune", "llava-next" if model.anyres_grids else "llava", "vision-language"]
    name = Path(checkpoint).name if checkpoint is not None else "scitune model"
    v, lm = ident.get("vision", {}), ident.get("llm", {})
    stops = processor.stop_strings()
    sep_needed = bool(generation.get("stop_strings"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": EXAMPLE_QUESTION}]}]
    prompt = _scitune_text(processor, messages, True)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    lines += [f"A vision-language model trained with scitune, exported as transformers' `{model_class}`.", ""]
    lines += ["## Model", ""]
    lines += [
        f"- vision encoder: `{v.get('name')}` {('`' + v['path'] + '`') if v.get('path') else '(built in memory)'}, "
        f"features of layer {v.get('feature_layer')} ({v.get('select')} tokens), {model.num_image_tokens} image tokens"
        + (f", AnyRes grids {', '.join(f'{r}x{c}' for r, c in model.anyres_grids)}" if model.anyres_grids else ""),
        f"- connector: `{ident.get('projector', {}).get('name')}`, exported in the `{connector}` form",
        f"- language model: {('`' + lm['path'] + '`') if lm.get('path') else '(built in memory)'}",
        "",
        "## Training data",
        "",
        *training_data(checkpoint),
        "",
        "## Prompt format",
        "",
        f"Chat template `{processor.template_name}` (scitune's; the folder's Jinja template renders the same text, "
        "BOS included). A question about one image is prompted as:",
        "",
        "```text",
        prompt,
        "```",
        "",
        "Generation stops at "
        + ", ".join(f"`{s!r}`" for s in dict.fromkeys([processor.tokenizer.eos_token, *stops]))
        + " (`generation_config.json`"
        + (": its `stop_strings` need `tokenizer=` in `generate`)" if sep_needed else ")"),
        "",
        "## Use with transformers (4.45 or later, 5.x)",
        "",
        _usage(model_class, sep_needed),
        "",
        "## Use with vLLM",
        "",
    ]
    if vllm_problems:
        lines += ["vLLM's LLaVA loader would not load this folder:", "", *(f"- {p}" for p in vllm_problems)]
    else:
        own = [s for s in stops if s != processor.tokenizer.eos_token]
        stop_arg = f", stop={own!r}" if own else ""
        lines += [
            f"The config and weights pass the checks of vLLM {VLLM_VERSION_READ}'s LLaVA loader.",
            "",
            "```python",
            "from vllm import LLM, SamplingParams",
            'ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # text as above',
            'llm = LLM(model="path/to/this/folder")',
            f"params = SamplingParams(temperature=0, max_tokens=256{stop_arg})",
            'out = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": image}}, params)',
            "```",
        ]
    lines += ["", "## Scores", ""]
    scores = eval_scores(checkpoint)
    if not scores:
        lines.append("No evaluation results were found beside the checkpoint (`scitune eval` writes `eval/*/`).")
    else:
        lines += ["| benchmark | metric | value | examples |", "|---|---|---|---|"]
        for s in scores:
            lines += [f"| {s['benchmark']} | {k} | {v:.4g} | {s['examples'] or ''} |" for k, v in s["summary"].items()]
    return "\n".join(lines) + "\n"
