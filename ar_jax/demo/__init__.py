"""A local demo page for one trained run (`python -m ar_jax.demo --workdir W`; the `[demo]` extra)."""
