"""The one seam for the platform: which implementation of the few platform-dependent operations runs.

Those operations (dense projections, attention for training/prefill, one-position decode attention, the VQ model's
3x3 convolutions, the one-time re-layout of trained weights for decoding, compile options) are `Backend` methods.
A backend is chosen once, from the devices the arrays live on (`for_devices`, `for_mesh`, `for_arrays`), and passed
to the models as a static, hashable part of their definition. `Backend` itself (`xla.py`) is plain XLA, the
reference every other implementation is tested against; `cpu/` holds the CPU one (native kernels, weight panels,
Winograd, compile options), `gpu.py` cuDNN attention and `tpu.py` Pallas splash attention.

This module and its package are the only places that look at the platform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax

from ar_jax.backends.xla import Backend, Prepared

XLA = Backend()  # the reference
ATTENTION = ("xla", "cudnn", "splash")  # every training/prefill attention choice (`config.backend.attention`)
__all__ = ["ATTENTION", "XLA", "Backend", "Prepared", "choose_cpu_cores", "for_arrays", "for_devices", "for_mesh",
           "for_platform", "jit", "prepare", "use_cpu_cores"]


def for_platform(platform: str, attention: str = "xla", *, native: bool = False, **kw: Any) -> Backend:
    """The backend class of `platform` ("cpu", "gpu"/"cuda"/"rocm", "tpu"); refuses an attention it cannot run."""
    if platform == "cpu":
        from ar_jax.backends.cpu import CpuBackend

        backend: Backend = CpuBackend(attention_impl=attention, native=native, **kw)
    elif platform in ("gpu", "cuda", "rocm"):
        from ar_jax.backends.gpu import GpuBackend

        backend = GpuBackend(attention_impl=attention, **kw)
    elif platform == "tpu":
        from ar_jax.backends.tpu import TpuBackend

        backend = TpuBackend(attention_impl=attention, **kw)
    else:
        backend = Backend(platform=platform, attention_impl=attention)
    if attention not in ATTENTION:
        raise ValueError(f"attention={attention!r} is not one of {ATTENTION}; 'xla' runs everywhere.")
    backend.check()
    return backend


def for_devices(devices: Iterable[jax.Device], attention: str = "xla") -> Backend:
    """The backend for arrays living on `devices` (all of one platform). On CPU the native kernels are used only
    when the arrays live on a single device (their calls are not partitioned across devices)."""
    devices = list(devices)
    if not devices:
        raise ValueError("for_devices needs at least one device.")
    platforms = {d.platform for d in devices}
    if len(platforms) > 1:
        raise ValueError(f"arrays live on devices of several platforms {sorted(platforms)}; put them on one.")
    platform = platforms.pop()
    native = False
    if platform == "cpu" and len(devices) == 1:
        from ar_jax.backends.cpu import native_available

        native = native_available()
    return for_platform(platform, attention, native=native)


def for_mesh(mesh: jax.sharding.Mesh, attention: str = "xla") -> Backend:
    """The backend of a training mesh (all its devices); a kernel that is not partitioned by XLA (splash) runs per
    device over it."""
    backend = for_devices(mesh.devices.flat, attention)
    return backend.replace(mesh=mesh) if hasattr(backend, "mesh") else backend


def _devices_of(tree: Any) -> set[jax.Device]:
    devices: set[jax.Device] = set()
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            devices |= set(leaf.sharding.device_set)
    return devices


def for_arrays(tree: Any, attention: str = "xla") -> Backend:
    """The backend for the arrays of `tree` (where they live; host arrays count as JAX's default device)."""
    if isinstance(tree, Prepared):
        return tree.backend
    return for_devices(_devices_of(tree) or [jax.devices()[0]], attention)


def prepare(params: Any, dense: Mapping[str, int], backend: Backend | None = None) -> Prepared:
    """`params` re-laid-out once for decoding by `backend` (default: where the params live), outside any jit; a
    `Prepared` is returned as it is."""
    if isinstance(params, Prepared):
        return params
    return (backend or for_arrays(params)).prepare(params, dense)


def jit(fun: Callable | None = None, *, kind: str = "conv", **jit_kwargs: Any) -> Any:
    """`jax.jit(fun, **jit_kwargs)`, compiled with the options the arguments' backend gives functions of `kind`.

    The backend is looked up at each top-level call from the arguments' devices (one compiled function kept per
    set of options); called inside another jit (traced arguments) it is a plain nested `jax.jit`, since options
    belong to the outermost compilation. Usable as `jit(f, static_argnames=...)` or `@functools.partial(jit, ...)`.
    """
    if fun is None:
        return functools.partial(jit, kind=kind, **jit_kwargs)
    nested = jax.jit(fun, **jit_kwargs)
    compiled: dict[Any, Any] = {}

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
            return nested(*args, **kwargs)
        options = for_arrays((args, kwargs)).compile_options(kind)
        key = None if options is None else tuple(sorted(options.items()))
        if key not in compiled:
            compiled[key] = jax.jit(fun, compiler_options=options, **jit_kwargs)
        return compiled[key](*args, **kwargs)

    return call


def use_cpu_cores(n: int | str) -> list[int]:
    """Run this process on `n` of its CPU cores ("all": every one), before JAX's first computation
    (`ar_jax.backends.cpu.cores`: small models decode several times faster on one core)."""
    from ar_jax.backends.cpu import cores

    return cores.use_cores(n)


def choose_cpu_cores(flag: str, params: int | None, rows: int) -> list[int]:
    """A `--cpu_cores` flag ("auto", "all" or a count) applied before JAX starts; "auto" sizes a decoding step of
    `params` parameters (None: unknown, every core) over `rows` rows against `cores.ONE_CORE_WORK`, and changes
    nothing once JAX has started (a script's main called from Python), where a count is refused."""
    from ar_jax.backends.cpu import cores

    n = cores.parse(flag)
    if n == "auto":
        if params is None or cores.backends_started():
            return cores.allowed()
        n = cores.auto_cores(params, rows)
    return cores.use_cores(n)
