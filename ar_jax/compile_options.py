"""XLA:CPU compile options chosen per function: which kernel library runs a function's products and convolutions.

XLA:CPU (jaxlib 0.10) hands dots and convolutions to YNNPACK by default. Measured on 2 AVX2 cores
(`benchmarks/speed.py`): YNNPACK is much faster for decoding's few-row products (generation at batch 1 took 46.6 s
without it, 11-13 s with it), while Eigen's kernels run the VQ decoder's 3x3 convolutions about 1.5x faster (the VQ-16
decode went from 26 s to 17 s). So the decoding loop keeps XLA's default and convolution-heavy functions compile
with `EIGEN_CPU`. The options are set per compilation (`jax.jit(..., compiler_options=...)`), never in
`XLA_FLAGS`, and only when the function runs on the CPU: other backends compile exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

EIGEN_CPU = {"xla_cpu_experimental_ynn_fusion_type": ""}  # no YNNPACK fusions: Eigen runs dots and convolutions


def cpu_options(options: dict[str, Any], platform: str | None = None) -> dict[str, Any] | None:
    """`options` when `platform` (default: JAX's default backend) is the CPU, else None (XLA's defaults)."""
    return dict(options) if (platform or jax.default_backend()) == "cpu" else None


def cpu_jit(fun: Callable | None = None, *, options: dict[str, Any] = EIGEN_CPU, **jit_kwargs: Any) -> Any:
    """`jax.jit(fun, **jit_kwargs)`, compiled with `options` on the CPU backend.

    The backend is looked up at the first call, not at import, so importing a module that uses this does not
    start JAX's backend (a script may still set `XLA_FLAGS` or the device count after the import). Called
    inside another `jax.jit` (traced arguments), it is a plain nested `jax.jit`: options belong to the outermost
    compilation, which is the caller's.
    Usable as `cpu_jit(f, static_argnames=...)` or as a decorator `@functools.partial(cpu_jit, ...)`.
    """
    if fun is None:
        return functools.partial(cpu_jit, options=options, **jit_kwargs)
    nested = jax.jit(fun, **jit_kwargs)
    top: list[Any] = []

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
            return nested(*args, **kwargs)
        if not top:
            top.append(jax.jit(fun, compiler_options=cpu_options(options), **jit_kwargs))
        return top[0](*args, **kwargs)

    return call
