"""Adamax — TF's ``tf.keras.optimizers.Adamax`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, epsilon_or_default, non_negative
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class AdamaxCoefficients(Coefficients):
    """Adamax's step coefficients (``prepare`` sets them, the rule reads them)."""

    scaled_lr: Tensor
    neg_scaled_lr: Tensor
    epsilon: Tensor
    beta_1_t: Tensor
    one_minus_beta_1_t: Tensor
    beta_2_t: Tensor


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm in place of the second moment (TF's Adamax).

    Update rule (docs/reference-behaviour.md Part 1 §1.10), ``t = iterations + 1``::

        m += (g - m) * (1 - beta_1)
        v = max(beta_2 * v, |g|)
        var -= lr / (1 - beta_1^t) * (m / (v + epsilon))

    Sparse gradients update only their rows of ``var``, ``m`` and ``v``, with the first line
    written ``m_i = m_i * beta_1 + g_i * (1 - beta_1)`` (as TF's sparse path rounds it).

    Unlike ``torch.optim.Adamax``, whose epsilon sits inside the maximum
    (``max(beta_2 * v, |g| + eps)``), epsilon is added to the denominator and ``v`` stores the
    plain maximum.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the infinity norm. Defaults to 0.999.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        name: defaults to ``"Adamax"``.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.Adamax(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.9, 1.9]
        >>> opt.get_slot_names()
        ['m', 'v']
    """

    coefficients: ClassVar[type[Coefficients]] = AdamaxCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Hyper(0.9)
    beta_2 = Hyper(0.999)
    epsilon = Param(1e-7, convert=epsilon_or_default)

    slots: ClassVar[tuple[str, ...]] = ("m", "v")
    sparse_mode: ClassVar[str] = "lazy"  # custom update_sparse below

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: Any = 0.9,
        beta_2: Any = 0.999,
        epsilon: float | None = 1e-7,
        name: str = "Adamax",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def prepare(self, c: AdamaxCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        local_step = self._local_step(dtype, device)
        beta_1_t = self._hyper_t("beta_1", dtype, device)
        beta_1_power = torch.pow(beta_1_t, local_step)
        # The dense kernel's step size lr / (1 - b1p); the sparse path adds -lr / (1 - b1p),
        # which is the same number negated (negation is exact).
        c.scaled_lr = c.lr_t / (1 - beta_1_power)
        c.neg_scaled_lr = -c.lr_t / (1 - beta_1_power)
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.beta_1_t = beta_1_t
        c.one_minus_beta_1_t = 1 - beta_1_t
        c.beta_2_t = self._hyper_t("beta_2", dtype, device)

    def update(self, var: Any, grad: Any, m: Any, v: Any, *, c: AdamaxCoefficients) -> None:
        c.add_product(m, grad - m, c.one_minus_beta_1_t)
        v.copy_((v * c.beta_2_t).maximum(c.absolute(grad)))
        var.sub_(c.scaled_lr * (m / (v + c.epsilon)))

    def update_sparse(
        self, var: Any, indices: Any, values: Any, m: Any, v: Any, *, c: AdamaxCoefficients
    ) -> None:
        # TF's sparse path writes the first-moment line as a weighted sum, not as the dense
        # kernel's `m += (g - m) * (1 - beta_1)`: the two round differently.
        m_rows = m.index_select(0, indices) * c.beta_1_t + values * c.one_minus_beta_1_t
        m.index_copy_(0, indices, m_rows)
        v_rows = torch.maximum(v.index_select(0, indices) * c.beta_2_t, values.abs())
        v.index_copy_(0, indices, v_rows)
        var.index_add_(0, indices, c.neg_scaled_lr * (m_rows / (v_rows + c.epsilon)))
