"""Adamax — Keras 3's ``keras.optimizers.Adamax``: the legacy rule with Keras 3's coefficients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .._hyper import Param
from ..optimizers import adamax as _legacy
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class Adamax(Keras3Base, _legacy.Adamax):
    """Adamax (Adam with the infinity norm), as Keras 3 defines it.

    Update rule (``t = iterations + 1``)::

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        var -= lr * m / ((1 - beta_1^t) * (u + epsilon))

    Slots ``momentum`` and ``norm`` (variable by variable). Sparse gradients (Keras 3 on
    TensorFlow): every row moves; ``|g|`` is the row sum of the absolute values of the entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: Defaults to 0.9.
        beta_2: Defaults to 0.999.
        epsilon: Defaults to 1e-7.
        name: defaults to ``"adamax"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.keras3.Adamax(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()], opt.get_slot_names()
        ([0.9, 1.9], ['momentum', 'norm'])
    """

    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-7)
    slots: ClassVar[tuple[str, ...]] = ("momentum", "norm")
    slot_arguments: ClassVar[dict[str, str]] = {"momentum": "m", "norm": "v"}
    slot_aliases: ClassVar[dict[str, str]] = {"m": "momentum", "v": "norm"}

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            name=name,
            **kwargs,
        )

    def prepare(
        self, c: _legacy.AdamaxCoefficients, device: torch.device, dtype: torch.dtype
    ) -> None:
        (beta_1_power,) = self._beta_powers(dtype, device, self.beta_1)
        c.scaled_lr = c.lr_t / (1 - beta_1_power)
        c.one_minus_beta_1_t = self._py(1 - self.beta_1, dtype, device)
        c.beta_2_t = self._py(self.beta_2, dtype, device)
        c.epsilon = self._py(self.epsilon, dtype, device)
