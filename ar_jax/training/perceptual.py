"""LPIPS (Zhang et al., 2018) on VGG16 features: the VQGAN perceptual loss, from weights the user has on disk.

`LPIPS(x, y) = sum_l mean_hw sum_c w_lc (n(f_l(x)) - n(f_l(y)))^2`, where `f_l` are VGG16's relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3 activations of the scaled input and `n` divides by the channel-wise L2 norm
(+1e-10), as in the `lpips` package and taming-transformers / LlamaGen's `LPIPS`. Two files are needed and
nothing is downloaded: torchvision's VGG16 (`vgg16-397923af.pth`, keys `features.{i}.weight|bias`) and the
LPIPS heads (`vgg.pth`, keys `lin{l}.model.1.weight` `[1, C, 1, 1]`), as `.pth` (read without running pickled
code) or `.safetensors`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

VGG_BLOCKS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))  # torchvision `features` conv indices
VGG_WIDTHS = (64, 128, 256, 512, 512)  # channels of each block (and of each LPIPS head)
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer, for inputs in [-1, 1]
SCALE = (0.458, 0.448, 0.450)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key the two state dicts must hold, with its torch shape."""
    shapes, cin = {}, 3
    for block, width in zip(VGG_BLOCKS, VGG_WIDTHS):
        for i in block:
            shapes[f"features.{i}.weight"] = (width, cin, 3, 3)
            shapes[f"features.{i}.bias"] = (width,)
            cin = width
    for n, width in enumerate(VGG_WIDTHS):
        shapes[f"lin{n}.model.1.weight"] = (1, width, 1, 1)
    return shapes


def params_from_state_dicts(vgg: Any, lin: Any) -> dict[str, Any]:
    """LPIPS params `{"convs": [[(w HWIO, b), ...] per block], "lins": [w [C], ...]}` from the two state dicts.

    A missing key or a wrong shape is a ValueError naming it and the file it belongs in.
    """
    merged = {**{k: v for k, v in vgg.items() if k.startswith("features.")},
              **{k: v for k, v in lin.items() if k.startswith("lin")}}
    for key, shape in expected_shapes().items():
        where = "the LPIPS heads file (vgg.pth)" if key.startswith("lin") else "the VGG16 file (vgg16-397923af.pth)"
        if key not in merged:
            raise ValueError(f"perceptual loss: {key!r} is missing from {where}; pass torchvision's VGG16 weights "
                             "as config.perceptual.vgg_weights and the lpips package's vgg.pth as "
                             "config.perceptual.lpips_weights.")
        if tuple(np.shape(merged[key])) != shape:
            raise ValueError(f"perceptual loss: {key!r} in {where} has shape {tuple(np.shape(merged[key]))}, "
                             f"expected {shape}.")
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731
    convs = [[(f32(np.transpose(merged[f"features.{i}.weight"], (2, 3, 1, 0))), f32(merged[f"features.{i}.bias"]))
              for i in block] for block in VGG_BLOCKS]
    lins = [f32(np.reshape(merged[f"lin{n}.model.1.weight"], (-1,))) for n in range(len(VGG_WIDTHS))]
    return {"convs": convs, "lins": lins}


def load_params(vgg_path: str | os.PathLike, lpips_path: str | os.PathLike) -> dict[str, Any]:
    """Read the two weight files (`.pth` / `.safetensors`) into LPIPS params."""
    from ar_jax.convert.llamagen import read_state_dict

    for name, path in (("vgg_weights", vgg_path), ("lpips_weights", lpips_path)):
        if not path or not os.path.isfile(path):
            raise ValueError(f"config.perceptual.{name}={str(path)!r} is not a file; point it at a local copy "
                             "(weights cannot be downloaded here) or set config.perceptual.weight=0.")
    vgg, lin = read_state_dict(vgg_path), read_state_dict(lpips_path)
    vgg = vgg.get("state_dict", vgg) if isinstance(vgg, dict) else vgg
    return params_from_state_dicts(vgg, lin)


def _features(params: dict[str, Any], x: Array) -> list[Array]:
    """The five unit-normalised relu taps of VGG16 for images `[B, H, W, 3]` in [-1, 1]."""
    x = (x.astype(jnp.float32) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    taps = []
    for b, block in enumerate(params["convs"]):
        if b:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        for w, bias in block:
            x = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + bias)
        taps.append(x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10))
    return taps


def lpips(params: dict[str, Any], x: Array, y: Array) -> Array:
    """LPIPS distance per image `[B]` between images `x`, `y` `[B, H, W, 3]` in [-1, 1] (H, W >= 16)."""
    total = 0.0
    for fx, fy, w in zip(_features(params, x), _features(params, y), params["lins"]):
        total = total + jnp.mean(jnp.sum((fx - fy) ** 2 * w, axis=-1), axis=(1, 2))
    return total


def check_config(config: Any) -> None:
    """Raise ValueError for a bad `config.perceptual` section (before compilation)."""
    p = config.get("perceptual")
    if p is None or p.weight == 0:
        return
    if p.weight < 0:
        raise ValueError(f"config.perceptual.weight={p.weight} must be >= 0 (0: no perceptual loss).")
    if tuple(config.data.image_shape)[-1] != 3 or min(tuple(config.data.image_shape)[:2]) < 16:
        raise ValueError(f"the perceptual loss needs RGB images of at least 16x16, got "
                         f"{tuple(config.data.image_shape)}; set config.perceptual.weight=0.")
    for name in ("vgg_weights", "lpips_weights"):
        if not p[name] or not os.path.isfile(p[name]):
            raise ValueError(f"config.perceptual.weight={p.weight} needs config.perceptual.{name}, a local file, "
                             f"but it is {p[name]!r}; point it at the weights or set config.perceptual.weight=0.")
