"""RMSprop — TF's ``tf.keras.optimizers.RMSprop`` (optimizer_v2 numerics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, epsilon_or_default, non_negative
from ..optimizer import Coefficients, Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _momentum_in_unit_interval(name: str, value: Any) -> None:
    # TF checks Python numbers only (a tensor or callable momentum is taken as given).
    if isinstance(value, (int, float)) and (value < 0 or value > 1):
        raise ValueError(
            f"`{name}` must be between [0, 1]. Received: {name}={value} (of type {type(value)})."
        )


class RMSpropCoefficients(Coefficients):
    """RMSprop's step coefficients (``prepare`` sets them, the rule reads them)."""

    neg_lr_t: Tensor
    epsilon: Tensor
    rho: Tensor
    momentum: Tensor
    one_minus_rho: Tensor


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering (TF's RMSprop).

    Update rule (docs/reference-behaviour.md Part 1 §1.10)::

        momentum > 0 (TF's fused kernel: epsilon INSIDE the square root):
            rms += (g*g - rms) * (1 - rho)
            centered: mg += (g - mg) * (1 - rho);  denom = rms - mg*mg + epsilon
            else:     denom = rms + epsilon
            mom = mom * momentum + lr * g / sqrt(denom)
            var -= mom
        momentum == 0 (epsilon OUTSIDE the square root):
            rms = rho * rms + (1 - rho) * g*g
            centered: mg = rho * mg + (1 - rho) * g;  denom = rms - mg*mg
            else:     denom = rms
            var -= lr * g / (sqrt(denom) + epsilon)

    Sparse gradients: with momentum, the fused-kernel lines on the indexed rows only (in the
    order of operations of TF's sparse kernel, which rounds differently); without,
    ``rms`` (and ``mg``) decay over all rows, the gradient is added at its rows, and only the
    indexed rows of the variable move.

    The path is chosen once, at construction, as in TF: momentum given as a tensor, a callable or a
    number > 0 selects the momentum path (and creates the ``momentum`` slot).

    Unlike ``torch.optim.RMSprop`` (``rho`` is ``alpha=0.99`` there, epsilon 1e-8 always outside
    the square root, and the learning rate applied outside the momentum buffer), the momentum path
    puts epsilon inside the square root and folds the learning rate into ``mom``.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        rho: discounting factor of the squared-gradient average. Defaults to 0.9.
        momentum: float in [0, 1], tensor or callable. Defaults to 0.0.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        centered: normalise by the estimated variance (slot ``mg``) instead of the uncentered
            second moment.
        name: defaults to ``"RMSprop"``.
        **kwargs: the base-class keywords (``clipnorm``, ``decay``, ``weight_decay``, ...).

    Raises:
        ValueError: a number ``momentum`` outside [0, 1].

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(10.0)
        >>> opt = ko.optimizers.RMSprop(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 6)
        9.683772
        >>> opt.get_slot_names()
        ['rms']
    """

    coefficients: ClassVar[type[Coefficients]] = RMSpropCoefficients

    supports_complex: ClassVar[bool] = True
    keras_v1_weights: ClassVar[str | None] = "without_iterations"
    learning_rate = Hyper(0.001, check=non_negative)
    rho = Hyper(0.9)
    momentum = Hyper(0.0, check=_momentum_in_unit_interval)
    epsilon = Param(1e-7, convert=epsilon_or_default)
    centered = Param(False, convert=bool)

    def __init__(
        self,
        learning_rate: Any = 0.001,
        rho: Any = 0.9,
        momentum: Any = 0.0,
        epsilon: float | None = 1e-7,
        centered: bool = False,
        name: str = "RMSprop",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.rho = rho
        self.momentum = momentum
        # Structural, decided in Python once (TF's `self._momentum`): a tensor or callable
        # momentum selects the fused-kernel path whatever its value.
        self._momentum = bool(
            isinstance(momentum, Tensor) or callable(momentum) or float(momentum) > 0
        )
        self.epsilon = epsilon
        self.centered = centered

    def slot_names(self) -> tuple[str, ...]:
        return (
            ("rms",)
            + (("momentum",) if self._momentum else ())
            + (("mg",) if self.centered else ())
        )

    def prepare(self, c: RMSpropCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        rho = self._hyper_t("rho", dtype, device)
        c.neg_lr_t = -c.lr_t
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.rho = rho
        c.momentum = self._hyper_t("momentum", dtype, device)
        c.one_minus_rho = 1.0 - rho

    def update(
        self,
        var: Any,
        grad: Any,
        rms: Any,
        momentum: Any = None,
        mg: Any = None,
        *,
        c: RMSpropCoefficients,
    ) -> None:
        # The slots present are the path (fixed at construction): `momentum` selects TF's fused
        # kernel, `mg` centering.
        if momentum is not None:
            mom = momentum
            c.add_product(rms, (grad * grad).sub_(rms), c.one_minus_rho)
            if mg is not None:
                c.add_product(mg, grad - mg, c.one_minus_rho)
                denom = (rms - mg * mg) + c.epsilon
            else:
                denom = rms + c.epsilon
            mom.mul_(c.momentum).add_((grad * c.lr_t) / denom.sqrt())
            var.sub_(mom)
            return
        c.average(rms, c.rho, grad * grad, c.one_minus_rho)
        if mg is not None:
            c.average(mg, c.rho, grad, c.one_minus_rho)
            denom = rms - mg * mg
        else:
            denom = rms
        c.sub_quotient(var, grad, c.lr_t, denom.sqrt().add_(c.epsilon))

    def update_sparse(
        self,
        var: Any,
        indices: Any,
        values: Any,
        rms: Any,
        momentum: Any = None,
        mg: Any = None,
        *,
        c: RMSpropCoefficients,
    ) -> None:
        if momentum is not None:
            # Lazy rows. fidelity: TF's sparse kernel writes the fused lines in its own order
            # (`rms*rho + g*g*(1-rho)`, `rsqrt(denom) * lr * g`, centered `rms + eps - mg*mg`);
            # kept, as it is bit-identical to TF 2.21 where the dense form differs by an ulp.
            mom = momentum
            rms_rows = rms.index_select(0, indices) * c.rho + (values * values) * c.one_minus_rho
            rms.index_copy_(0, indices, rms_rows)
            if mg is not None:
                mg_rows = mg.index_select(0, indices) * c.rho + values * c.one_minus_rho
                mg.index_copy_(0, indices, mg_rows)
                denom = rms_rows + c.epsilon - mg_rows * mg_rows
            else:
                denom = rms_rows + c.epsilon
            mom_rows = mom.index_select(0, indices) * c.momentum + denom.rsqrt() * c.lr_t * values
            mom.index_copy_(0, indices, mom_rows)
            var.index_copy_(0, indices, var.index_select(0, indices) - mom_rows)
            return
        rms.mul_(c.rho).index_add_(0, indices, (values * values) * c.one_minus_rho)
        denom = rms.index_select(0, indices)
        if mg is not None:
            mg.mul_(c.rho).index_add_(0, indices, values * c.one_minus_rho)
            mg_rows = mg.index_select(0, indices)
            denom = denom - mg_rows * mg_rows
        var.index_add_(0, indices, values * c.neg_lr_t / (denom.sqrt() + c.epsilon))
