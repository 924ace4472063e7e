"""Reads scitune's llava-hf exports with whatever transformers is importable, as a user would, and reports what it got.

The export tests import it (transformers 5) and run it as a script under transformers 4.x (an overlay on
``PYTHONPATH``): ``python hf_reader.py SPEC.json OUT_DIR``. For each case it loads AutoConfig, AutoTokenizer,
AutoImageProcessor and AutoProcessor, the model class with its loading report, compares every parameter with the
folder's weight files, renders the chat template, makes the inputs of one image and question, and computes the logits
and the greedy tokens with the folder's generation config. Only transformers, torch, safetensors and PIL are used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch


def canonical(key: str) -> str:
    """One name for a weight in the llava-hf file layout and in either line's module tree."""
    key = key.removeprefix("model.")
    if key.startswith("vision_tower.vision_model."):
        key = "vision_tower." + key[len("vision_tower.vision_model.") :]
    if key.startswith("language_model.model."):
        key = "language_model." + key[len("language_model.model.") :]
    return key.removeprefix("language_model.") if key.startswith("language_model.lm_head.") else key


def parameter_problems(model: Any, folder: Path) -> tuple[int, list[str]]:
    """(number of parameters, the ones that are not the folder's tensors bit for bit, and file tensors never used)."""
    from safetensors.torch import load_file

    files: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        files.update({canonical(k): v for k, v in load_file(str(f)).items()})
    problems, used = [], set()
    params = dict(model.named_parameters())
    for name, p in params.items():
        key = canonical(name)
        if key not in files:
            problems.append(f"{name}: not in the files (initialised by the loader)")
        elif files[key].dtype != p.dtype or not torch.equal(files[key], p.detach()):
            problems.append(f"{name}: differs from the file's {key}")
        used.add(key)
    problems += [f"{k}: in the files, loaded into no parameter" for k in files if k not in used]
    return len(params), problems


def read_export(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What transformers makes of the export ``case["folder"]``: a JSON-able report and the tensors."""
    import transformers
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

    folder = Path(case["folder"])
    cls = getattr(transformers, case["model_class"])
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = AutoImageProcessor.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    model.eval()
    n_params, problems = parameter_problems(model, folder)
    conversation, prompt = case["conversation"], case["conversation"][:2]
    texts = {
        "tokenizer_train": tokenizer.apply_chat_template(conversation, tokenize=False),
        "processor_train": processor.apply_chat_template(conversation, tokenize=False),
        "tokenizer_prompt": tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
        "processor_prompt": processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
    }
    image = Image.open(case["image"]).convert("RGB")
    msgs = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": case["question"]}]}
    ]
    inputs = processor.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    if "pixel_values" not in inputs:  # before 4.47 apply_chat_template tokenizes the text only: the processor's call
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=image, text=text, add_special_tokens=False, return_tensors="pt")
    gen = model.generation_config
    extra = {"tokenizer": processor.tokenizer} if gen.stop_strings else {}  # stop strings need it, in both lines
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
        out = model.generate(**inputs, max_new_tokens=case["max_new_tokens"], **extra)
    report = {
        "transformers": transformers.__version__,
        "classes": {
            "config": type(config).__name__,
            "tokenizer": type(tokenizer).__name__,
            "image_processor": type(image_processor).__name__,
            "processor": type(processor).__name__,
            "processor_tokenizer": type(processor.tokenizer).__name__,
        },
        "loading": {k: list(v) for k, v in info.items() if k != "error_msgs"},
        "n_params": n_params,
        "parameter_problems": problems,
        "texts": texts,
        "input_ids": inputs["input_ids"][0].tolist(),
        "tokens": out[0, inputs["input_ids"].shape[1] :].tolist(),
        "generation": {"eos_token_id": gen.eos_token_id, "stop_strings": gen.stop_strings},
    }
    return report, {"pixel_values": inputs["pixel_values"], "logits": logits}


def main(spec: str, out: str) -> None:
    torch.set_num_threads(1)
    reports = {}
    for case in json.loads(Path(spec).read_text()):
        reports[case["name"]], tensors = read_export(case)
        torch.save(tensors, Path(out) / f"{case['name']}.pt")
    (Path(out) / "reports.json").write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
