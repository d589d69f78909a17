"""The VQGAN part of tokenizer training: a PatchGAN discriminator, hinge losses and the adaptive generator weight.

Taming-transformers' recipe: `loss = recon + vq + lambda * d_factor * g_loss` with
`lambda = |grad_last recon| / (|grad_last g_loss| + 1e-4)` (clipped to [0, 1e4], times `config.gan.weight`),
gradients taken at the decoder's last layer, and `d_factor = 0` before `config.gan.start_step`. The
discriminator is a PatchGAN (taming's NLayerDiscriminator, GroupNorm instead of BatchNorm so it holds no
state) trained with the hinge loss on real images and (stop-gradient) reconstructions.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

Array = jax.Array


class PatchDiscriminator(nn.Module):
    """images `[B, H, W, C]` in [-1, 1] -> real/fake logits per patch `[B, h, w, 1]`."""

    ndf: int = 32  # width of the first layer; doubles (up to 8x) each layer
    num_layers: int = 2  # stride-2 layers after the first (each halves the resolution)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.leaky_relu(nn.Conv(self.ndf, (4, 4), strides=(2, 2), padding=1)(x), 0.2)
        for i in range(1, self.num_layers + 1):
            stride = 2 if i < self.num_layers else 1
            x = nn.Conv(self.ndf * min(2 ** i, 8), (4, 4), strides=(stride, stride), padding=1, use_bias=False)(x)
            x = nn.leaky_relu(nn.GroupNorm(num_groups=min(32, self.ndf))(x), 0.2)
        return nn.Conv(1, (4, 4), padding=1)(x)


def hinge_d_loss(logits_real: Array, logits_fake: Array) -> Array:
    """`(mean relu(1 - D(x)) + mean relu(1 + D(G(z)))) / 2`."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake: Array) -> Array:
    """`-mean D(G(z))`."""
    return -jnp.mean(logits_fake)


def adaptive_weight(recon_grad: Array, gan_grad: Array, max_weight: float = 1e4) -> Array:
    """`|recon_grad| / (|gan_grad| + 1e-4)`, clipped to [0, max_weight], without gradient (gradients of the
    decoder's last layer)."""
    w = jnp.linalg.norm(recon_grad) / (jnp.linalg.norm(gan_grad) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


def make_disc(config: ml_collections.ConfigDict) -> tuple[PatchDiscriminator, optax.GradientTransformation]:
    g = config.gan
    return (PatchDiscriminator(g.ndf, g.num_layers),
            optax.adam(g.learning_rate, b1=g.b1, b2=g.b2))


def init_disc(config: ml_collections.ConfigDict, image_shape: tuple[int, ...], rng: Array) -> dict[str, Any]:
    """`{"disc_params", "disc_opt_state"}` to add to the tokenizer train state."""
    disc, tx = make_disc(config)
    params = disc.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return {"disc_params": params, "disc_opt_state": tx.init(params)}


def generator_grads(config: ml_collections.ConfigDict, parts_fn: Any, params: Any, disc_params: Any,
                    step: Array) -> tuple[Any, Array, Any, dict[str, Array]]:
    """Gradients of `recon + vq + lambda * d_factor * g_loss` for the VQ params.

    `parts_fn(params) -> ((base_loss, recon_loss), (recon_images, aux))`. One forward, two backward passes
    (the base and the GAN loss), so lambda can compare their gradients at the decoder's last layer.
    Returns `(grads, loss, aux, metrics)`.
    """
    disc, _ = make_disc(config)

    def losses(p: Any) -> tuple[Array, Array]:
        (base, rec), (recon, aux) = parts_fn(p)
        g = hinge_g_loss(disc.apply({"params": disc_params}, recon))
        return jnp.stack([base, g]), (rec, recon, aux)

    vals, vjp, (rec, recon, aux) = jax.vjp(losses, params, has_aux=True)
    base_grads, = vjp(jnp.array([1.0, 0.0]))
    gan_grads, = vjp(jnp.array([0.0, 1.0]))
    last = ("decoder", "conv_out", "kernel")
    lam = config.gan.weight * adaptive_weight(_get(base_grads, last), _get(gan_grads, last))
    d_factor = (step >= config.gan.start_step).astype(jnp.float32)
    grads = jax.tree.map(lambda a, b: a + lam * d_factor * b, base_grads, gan_grads)
    loss = vals[0] + lam * d_factor * vals[1]
    return grads, loss, (rec, recon, aux), {"g_loss": vals[1], "gan_lambda": lam, "d_factor": d_factor}


def _get(tree: Any, path: tuple[str, ...]) -> Array:
    for key in path:
        tree = tree[key]
    return tree


def disc_step(config: ml_collections.ConfigDict, disc_params: Any, disc_opt_state: Any, real: Array, fake: Array,
              step: Array) -> tuple[Any, Any, dict[str, Array]]:
    """One hinge-loss update of the discriminator (a no-op before `config.gan.start_step`)."""
    disc, tx = make_disc(config)

    def loss_fn(p: Any) -> tuple[Array, tuple[Array, Array]]:
        lr, lf = disc.apply({"params": p}, real), disc.apply({"params": p}, jax.lax.stop_gradient(fake))
        return hinge_d_loss(lr, lf), (lr.mean(), lf.mean())

    (d_loss, (lr, lf)), grads = jax.value_and_grad(loss_fn, has_aux=True)(disc_params)
    updates, new_opt = tx.update(grads, disc_opt_state, disc_params)
    new_params = optax.apply_updates(disc_params, updates)
    on = step >= config.gan.start_step
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(on, a, b), new, old)  # noqa: E731
    return (keep(new_params, disc_params), keep(new_opt, disc_opt_state),
            {"d_loss": d_loss, "logits_real": lr, "logits_fake": lf})
