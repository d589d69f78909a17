"""Import of public checkpoints (LlamaGen GPT and VQ tokenizer) onto ar_jax models."""
