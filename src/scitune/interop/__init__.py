"""Interoperability with other layouts: llava-hf (transformers) export and import, original LLaVA checkpoints.
This layer sees both the model and the processor."""
