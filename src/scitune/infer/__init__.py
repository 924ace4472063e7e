"""Generation: one engine (`scitune.infer.engine`: KV cache, continuous batching, per-request sampling, stops and
streaming) that `generate`, `chat`, eval (`scitune.infer.generate`) and `serve` all use."""
