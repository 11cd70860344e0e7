"""Lamb — Keras 3's ``Lamb`` (layer-wise adaptive moments; not in tf_keras)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative
from ..optimizer import Coefficients
from ._keras3 import Keras3Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class LambCoefficients(Coefficients):
    """Lamb's step coefficients (``prepare`` sets them, the rule reads them)."""

    one_minus_beta_1_power: Tensor
    one_minus_beta_2_power: Tensor
    one_minus_beta_1: Tensor
    one_minus_beta_2: Tensor
    epsilon: Tensor
    one: Tensor


class Lamb(Keras3Optimizer):
    """Adam's bias-corrected direction scaled per tensor by the trust ratio ``‖θ‖ / ‖u‖``.

    The base class's decoupled ``weight_decay`` (default None) is applied to θ before this step
    and is not folded into the trust ratio (unlike the LAMB paper). The rule needs whole-tensor
    norms, so it always runs tensor by tensor; the ratio is chosen with ``torch.where``, so no
    step waits on the host.

    Update rule (docs/reference-behaviour.md Part 2 §3.3), ``t = iterations + 1``, norms are L2 over the tensor::

        m ← m + (g − m)(1 − β1);   v ← v + (g² − v)(1 − β2)
        u = (m / (1 − β1^t)) / ( sqrt(v / (1 − β2^t)) + ε )
        r = ‖θ‖ / ‖u‖   if ‖θ‖ > 0 and ‖u‖ > 0,   else 1
        θ ← θ − r · η · u

    ``torch.optim`` has no Lamb.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: added to the bias-corrected ``sqrt(v)``, used as given. Defaults to 1e-7.
        name: defaults to ``"Lamb"``.
        **kwargs: the base-class keywords (``weight_decay``, ``clipnorm``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([3.0, 4.0])
        >>> opt = ko.optimizers.Lamb(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [2.6464, 3.6464]
    """

    coefficients: ClassVar[type[Coefficients]] = LambCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-7)

    slots: ClassVar[tuple[str, ...]] = ("m", "v")
    slot_aliases: ClassVar[dict[str, str]] = {"momentum": "m", "velocity": "v"}
    elementwise: ClassVar[bool] = False
    compiles_whole_tensors: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str = "Lamb",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def prepare(self, c: LambCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        beta_1_power, beta_2_power = self._beta_powers(dtype, device, self.beta_1, self.beta_2)
        c.one_minus_beta_1_power = 1.0 - beta_1_power
        c.one_minus_beta_2_power = 1.0 - beta_2_power
        c.one_minus_beta_1 = self._one_minus(self.beta_1, dtype, device)
        c.one_minus_beta_2 = self._one_minus(self.beta_2, dtype, device)
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.one = self._const(1.0, dtype, device)

    def update(
        self, var: Tensor, grad: Tensor, m: Tensor, v: Tensor, *, c: LambCoefficients
    ) -> None:
        m.add_((grad - m) * c.one_minus_beta_1)
        v.add_((c.square(grad) - v) * c.one_minus_beta_2)
        m_t_hat = m / c.one_minus_beta_1_power
        v_sqrt = (v / c.one_minus_beta_2_power).sqrt() + c.epsilon
        u = m_t_hat / v_sqrt
        w_norm = (var * var).sum().sqrt()
        u_norm = (u * u).sum().sqrt()
        # Branch-free (no host sync): the ratio where both norms are positive, else 1.
        ratio = torch.where(w_norm > 0, torch.where(u_norm > 0, w_norm / u_norm, c.one), c.one)
        var.sub_(ratio * c.lr_t * u)
