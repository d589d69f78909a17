"""The mesh and the logical-axis rules, in one place.

Parameters carry logical names (`ar_jax/axes.py`); `RULES` maps each name to mesh axes. A dimension that
a mesh axis does not divide stays replicated along it (e.g. a 17-token vocabulary on 2 tensor shards).
`data` and `fsdp` both split the batch; `fsdp` also splits parameters and optimizer state along `embed` (or, where
that does not divide, their largest dimension that does); `tensor` splits heads, MLP width and vocabulary.
Activations carry the same names (`constrain`, with `batch` first, so the batch takes `data` and `fsdp` and an
activation's `embed` stays whole); `length` and `layers` have no rule.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ar_jax import axes

MESH_AXES = ("data", "fsdp", "tensor")

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.EMBED, ("fsdp",)),
    (axes.HEADS, ("tensor",)),
    (axes.KV_HEADS, ("tensor",)),
    (axes.MLP, ("tensor",)),
    (axes.VOCAB, ("tensor",)),
)


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """`jax.distributed.initialize()` when `config.distributed` is set or a cluster environment says so."""
    wanted = bool(config.get("distributed", False)) or "JAX_COORDINATOR_ADDRESS" in os.environ
    if wanted and jax.process_count() == 1 and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
    """Sizes of (data, fsdp, tensor); one axis may be -1 ("the rest"). ValueError if they do not fit."""
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: each axis is a positive size, and at most one "
                         "is -1 (the rest of the devices).")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: the fixed axes ({known} devices) do not "
                             f"divide the {num_devices} devices; choose sizes whose product divides {num_devices}.")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} devices but "
                         f"{num_devices} are present; make the product {num_devices} or set one axis to -1.")
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(batch_size: int, mesh: Mesh) -> None:
    dp = data_parallel_size(mesh)
    if batch_size % dp:
        raise ValueError(f"batch_size={batch_size} is not divisible by the data-parallel size {dp} "
                         f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); use a multiple of {dp}.")


def spec_for(shape: tuple[int, ...], names: tuple[str | None, ...] | PartitionSpec | None, mesh: Mesh,
             parameter: bool = False) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dimensions carry logical `names`. With `parameter`, an `fsdp` axis
    that its rule's dimension does not divide (GPT-3B's embed 3200 on 256 devices) goes to the largest free dimension
    it divides (never `layers`), so that no parameter stays whole on every device for want of one divisor."""
    if names is None:
        return PartitionSpec()
    rules = dict(RULES)
    used: set[str] = set()
    out: list[Any] = []
    for dim, name in zip(shape, tuple(names)):
        mesh_axes = [a for a in rules.get(name, ()) if a not in used and mesh.shape.get(a, 1) > 1]
        while mesh_axes and dim % math.prod(mesh.shape[a] for a in mesh_axes):
            mesh_axes.pop()
        used.update(mesh_axes)
        out.append(tuple(mesh_axes) if len(mesh_axes) > 1 else (mesh_axes[0] if mesh_axes else None))
    n = mesh.shape.get("fsdp", 1)
    if parameter and n > 1 and "fsdp" not in used:
        free = [i for i, (dim, name) in enumerate(zip(shape, tuple(names)))
                if out[i] is None and name != axes.LAYERS and dim % n == 0]
        if free:
            out[max(free, key=lambda i: shape[i])] = "fsdp"
    return PartitionSpec(*out)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """`x` laid out over the mesh in context (`on_mesh`) as `RULES` map its dimensions' logical `names`; `x` itself
    where no mesh of several devices is in context (one device, decoding), so the model needs no branch of its own."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(x.shape, names, mesh))


def on_mesh(fun: Callable, mesh: Mesh) -> Callable:
    """`fun` (e.g. a jitted step) called with `mesh` in context, so that the activations inside it are laid out as
    their logical names say (`constrain`); the mesh is part of the jit cache key."""
    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        with jax.set_mesh(mesh):
            return fun(*args, **kwargs)

    return call


def tree_shardings(shapes: Any, logical: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of arrays/ShapeDtypeStructs with a matching tree of logical names."""
    return jax.tree.map(lambda s, n: NamedSharding(mesh, spec_for(s.shape, n, mesh, parameter=True)), shapes, logical,
                        is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batch-major arrays `[B, ...]`: B over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: Any, mesh: Mesh) -> Any:
    """This process's rows of a global batch (a pytree of arrays) -> global arrays sharded over (data, fsdp)."""
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v), batch)


def process_rows(global_batch_size: int) -> slice:
    """The rows of a global batch that this process reads (each host reads only its share)."""
    per = global_batch_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)
