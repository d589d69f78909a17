"""ar_jax: autoregressive image generation in JAX/Flax."""

from ar_jax.backends import use_cpu_cores
from ar_jax.pipeline import ARPipeline, load

__all__ = ["ARPipeline", "load", "use_cpu_cores"]
