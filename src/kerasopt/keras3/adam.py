"""Adam and AdamW — Keras 3's ``keras.optimizers.Adam`` / ``AdamW``: the legacy rule with Keras
3's coefficients (Python-float betas), slot names and sparse semantics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .._hyper import Param
from ..optimizers import adam as _legacy
from ..optimizers.adamw import AdamW as _LegacyAdamW
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords, OtherKeywords


class Adam(Keras3Base, _legacy.Adam):
    """Adam, as Keras 3 defines it.

    Update rule (``t = iterations + 1``; the betas of the powers go through float32 as
    TensorFlow's ``ops.cast`` does, ``1 - beta`` is exact)::

        m += (g - m) * (1 - beta_1)
        v += (g*g - v) * (1 - beta_2)
        (amsgrad: velocity_hat = max(velocity_hat, v); used for v)
        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        var -= (m * alpha) / (sqrt(v) + epsilon)

    Slots ``momentum``, ``velocity`` (variable by variable), then ``velocity_hat`` (amsgrad).
    Sparse gradients (Keras 3 on TensorFlow): every row moves; ``g*g`` is the row sum of the
    squares of the gradient's entries, so duplicate indices are not summed before squaring.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: used as given. Defaults to 1e-7.
        amsgrad: use the AMSGrad variant. Defaults to False.
        name: defaults to ``"adam"``.
        **kwargs: Keras 3's base keywords (``weight_decay``, ``clipnorm``, ``use_ema``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0], name="w")
        >>> opt = ko.keras3.Adam(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()], opt.get_slot_names()
        ([0.9, 1.9], ['momentum', 'velocity'])
    """

    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-7)
    slot_arguments: ClassVar[dict[str, str]] = {
        "momentum": "m",
        "velocity": "v",
        "velocity_hat": "vhat",
    }
    slot_aliases: ClassVar[dict[str, str]] = {
        "m": "momentum",
        "v": "velocity",
        "vhat": "velocity_hat",
    }

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            name=name,
            **kwargs,
        )

    def slot_names(self) -> tuple[str, ...]:
        return (
            ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")
        )

    def slot_groups(self) -> tuple[tuple[str, ...], ...]:
        return (("momentum", "velocity"),) + ((("velocity_hat",),) if self.amsgrad else ())

    # Keras 3's coefficients are kerasopt.optimizers.AdamW's (that class has Keras 3 numerics).
    prepare = _LegacyAdamW.prepare


class AdamW(Adam):
    """AdamW, as Keras 3 defines it: Keras 3's Adam after the base's decoupled weight decay
    ``var -= var * weight_decay * lr``.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        weight_decay: required (not None). Defaults to 0.004.
        beta_1: Defaults to 0.9.
        beta_2: Defaults to 0.999.
        epsilon: Defaults to 1e-7.
        amsgrad: Defaults to False.
        name: defaults to ``"adam_w"``.
        **kwargs: Keras 3's base keywords.

    Raises:
        ValueError: ``weight_decay`` is None.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.keras3.AdamW(learning_rate=0.1, weight_decay=0.5)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.85, 1.8]
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        weight_decay: float | None = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str | None = None,
        **kwargs: Unpack[OtherKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            name=name,
            weight_decay=weight_decay,
            **kwargs,
        )
        if self.weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
