"""Adam — TF's ``tf.keras.optimizers.Adam`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, epsilon_or_default, non_negative
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class AdamCoefficients(Coefficients):
    """Adam's step coefficients (``prepare`` sets them, the rule reads them)."""

    alpha: Tensor
    lr: Tensor
    epsilon: Tensor
    beta_1_t: Tensor
    beta_2_t: Tensor
    one_minus_beta_1_t: Tensor
    one_minus_beta_2_t: Tensor


class Adam(Optimizer):
    """Adam with TF's "epsilon hat" form and optional AMSGrad.

    Update rule (docs/reference-behaviour.md Part 1 §1.10), ``t = iterations + 1``::

        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m += (g - m) * (1 - beta_1)
        v += (g*g - v) * (1 - beta_2)
        (amsgrad: vhat = max(vhat, v); use vhat below)
        var -= (m * alpha) / (sqrt(v) + epsilon)

    Sparse gradients: ``m`` and ``v`` decay over all rows, the gradient is added at its rows, and
    the whole variable is updated (the dense rule with zero gradient rows).

    Unlike ``torch.optim.Adam``, epsilon is added after the bias correction is folded into the
    step size (``epsilon`` here is TF's "epsilon hat") and defaults to 1e-7, not 1e-8.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        amsgrad: use the AMSGrad variant (slot ``vhat``).
        name: defaults to ``"Adam"``.
        **kwargs: the base-class keywords.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.Adam(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.9, 1.9]
        >>> sorted(opt.get_slot_names())
        ['m', 'v']
    """

    coefficients: ClassVar[type[Coefficients]] = AdamCoefficients

    keras_v1_weights: ClassVar[str | None] = "with_vhats"
    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Hyper(0.9)
    beta_2 = Hyper(0.999)
    epsilon = Param(1e-7, convert=epsilon_or_default)
    amsgrad = Param(False, convert=bool)

    slot_aliases: ClassVar[dict[str, str]] = {
        "momentum": "m",
        "velocity": "v",
        "velocity_hat": "vhat",
    }
    sparse_mode: ClassVar[str] = "lazy"  # custom update_sparse below

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: Any = 0.9,
        beta_2: Any = 0.999,
        epsilon: float | None = 1e-7,
        amsgrad: bool = False,
        name: str = "Adam",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v", "vhat") if self.amsgrad else ("m", "v")

    def prepare(self, c: AdamCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        local_step = self._local_step(dtype, device)
        beta_1_t = self._hyper_t("beta_1", dtype, device)
        beta_2_t = self._hyper_t("beta_2", dtype, device)
        beta_1_power = torch.pow(beta_1_t, local_step)
        beta_2_power = torch.pow(beta_2_t, local_step)
        root, correction = torch.sqrt(1 - beta_2_power), 1 - beta_1_power  # (each once)
        # The dense kernel's step size, in its order: lr * sqrt(1 - b2p) / (1 - b1p) ...
        c.alpha = c.lr_t * root / correction
        # ... and the sparse path's: lr * (sqrt(1 - b2p) / (1 - b1p)).
        c.lr = c.lr_t * (root / correction)
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.beta_1_t = beta_1_t
        c.beta_2_t = beta_2_t
        c.one_minus_beta_1_t = 1 - beta_1_t
        c.one_minus_beta_2_t = 1 - beta_2_t

    def update(
        self, var: Any, grad: Any, m: Any, v: Any, vhat: Any = None, *, c: AdamCoefficients
    ) -> None:
        # TF's kernel order; temporaries are updated in place (the same IEEE operations in the
        # same order, half the allocations in the eager engines).
        c.add_product(m, grad - m, c.one_minus_beta_1_t)
        c.add_product(v, c.square(grad).sub_(v), c.one_minus_beta_2_t)
        if vhat is not None:
            vhat.copy_(vhat.maximum(v))
            v = vhat
        c.sub_quotient(var, m, c.alpha, v.sqrt().add_(c.epsilon))

    def update_sparse(
        self,
        var: Any,
        indices: Any,
        values: Any,
        m: Any,
        v: Any,
        vhat: Any = None,
        *,
        c: AdamCoefficients,
    ) -> None:
        m.mul_(c.beta_1_t).index_add_(0, indices, values * c.one_minus_beta_1_t)
        v.mul_(c.beta_2_t).index_add_(0, indices, (values * values) * c.one_minus_beta_2_t)
        if vhat is not None:
            vhat.copy_(torch.maximum(vhat, v))
            v = vhat
        var.sub_(c.lr * m / (v.sqrt() + c.epsilon))
