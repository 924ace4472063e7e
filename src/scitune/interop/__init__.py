"""Interoperability with other layouts: llava-hf (transformers Llava / LlavaNext) export and import, original LLaVA
checkpoints. This layer sees both the model and the processor."""
