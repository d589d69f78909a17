"""The model-family protocol: what training, evaluation, decoding and pipelines call on any family's config.

Every family (`TransformerConfig`, `MaskGITConfig`, `PixelCNNConfig`, `PixelCNNPPConfig`) is a frozen dataclass
of hyper-parameters with these members, so that the code around the models never branches on the model class
(decoding chooses its loop in one place, `ar_jax.decode.generate`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import jax


@runtime_checkable
class ModelFamily(Protocol):
    """A model family's config."""

    exact_likelihood: ClassVar[bool]  # token_nll is an exact likelihood (MaskGIT's is a masked-token NLL)
    condition: str  # what it is conditioned on (`ar_jax.models.conditions.KINDS`); the PixelCNN families: "class"

    @property
    def vocab_size(self) -> int: ...  # token ids the model predicts

    @property
    def seq_len(self) -> int: ...  # tokens an image is

    @property
    def null_label(self) -> int: ...  # the class id of the unconditional (null) class

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """`(params, logical_axes)`."""
        ...

    def logical_axes(self) -> Any:
        """The tree of logical axis names of the parameters."""
        ...

    def token_nll(self, params: Any, tokens: jax.Array, labels: jax.Array, rng: jax.Array | None = None,
                  backend: Any = None) -> jax.Array:
        """NLL in nats of each token `[B, T]` (dropout on when rng is given); `backend` from `ar_jax.backends`."""
        ...

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        ...
