"""Adafactor — tf_keras / Keras 3 ``Adafactor`` (tf_keras numerics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, tf_cast_value
from ..optimizer import Coefficients
from ._keras3 import Keras3Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords
    from ..optimizer import Record


def _rms(x: Tensor) -> Tensor:
    return (x * x).mean().sqrt()


#: rows summed per block by the compiled column mean (``_column_mean``)
_ROW_BLOCK = 32


def _column_mean(x: Tensor) -> Tensor:
    """``x.mean(dim=-2)``; compiled, for a whole number (at least two) of ``_ROW_BLOCK``-row
    blocks, the sums of each block, then of the blocks: inductor reduces a column over rows one
    row apart, a page apart in a wide matrix (4x slower than a row's mean), where a block's few
    rows stream side by side. Another order of the same sum: within a few ulp of the eager mean,
    as every compiled reduction is. (One more graph per shape class at most: other row counts
    take the plain mean, with no remainder to specialise on.)"""
    rows = x.shape[-2]
    if not torch.compiler.is_compiling() or rows % _ROW_BLOCK or rows < 2 * _ROW_BLOCK:
        return x.mean(dim=-2)
    blocks = x.reshape(*x.shape[:-2], rows // _ROW_BLOCK, _ROW_BLOCK, x.shape[-1])
    return blocks.sum(dim=-2).sum(dim=-2) / rows


class AdafactorCoefficients(Coefficients):
    """Adafactor's step coefficients (``prepare`` sets them, the rule reads them)."""

    rho_t: Tensor
    beta_2_t: Tensor
    one_minus_beta_2_t: Tensor
    epsilon_1: Tensor
    epsilon_2: Tensor
    clip_threshold: Tensor
    one: Tensor


class Adafactor(Keras3Optimizer):
    """Adafactor (Shazeer & Stern, 2018): factored second moments, relative step size.

    For a variable of rank >= 2 the second moment is factored over the **last two axes**: slot
    ``r`` (shape ``var.shape[:-1]``) and slot ``c`` (shape ``var.shape[:-2] + var.shape[-1:]``)
    are running means of ``g² + ε1`` over the last and second-to-last axis, and ``v`` holds their
    reconstruction; leading axes are batch axes. A variable of rank < 2 has only ``v`` (the
    running mean itself): no ``r``/``c`` state. There is no first moment. The rule needs whole
    tensors (RMS, axis means), so it always runs tensor by tensor.

    Update rule (docs/reference-behaviour.md Part 2 §3.4), ``t = iterations + 1``, RMS(x) = sqrt(mean(x²))::

        ρ_t   = min(η, 1/sqrt(t))
        α_t   = max(ε2, RMS(θ)) · ρ_t            (θ after the base's weight decay)
        G2    = g² + ε1
        β̂2_t = 1 − t^d                          (d = beta_2_decay)
        rank ≥ 2:
            r ← β̂2_t · r + (1 − β̂2_t) · mean(G2, axis=−1)
            c ← β̂2_t · c + (1 − β̂2_t) · mean(G2, axis=−2)
            v ← ( r / mean(r, axis=−1, keepdims) )[..., :, None] · c[..., None, :]
        rank < 2:
            v ← β̂2_t · v + (1 − β̂2_t) · G2
        u  = g · rsqrt(v)
        û  = u / max(1, RMS(u) / clip_threshold)
        θ ← θ − α_t · û

    ``relative_step`` has no numerical effect (tf_keras and Keras 3 both end up with
    ``ρ_t = min(η, 1/sqrt(t))``, also for a schedule); it is kept for the signature and config.

    Unlike ``torch.optim.Adafactor`` (ε1 a floor of the denominator, default lr 1e-2, ``RMS(θ)``
    taken before weight decay), ε1 is added to ``g²`` and ``RMS(θ)`` is taken after the decay.

    Args:
        learning_rate: float, schedule or callable; the cap of the relative step ρ_t.
            Defaults to 0.001.
        beta_2_decay: exponent d of the second-moment decay ``1 − t^d``. Defaults to -0.8.
        epsilon_1: added to ``g²``. Defaults to 1e-30.
        epsilon_2: floor of ``RMS(θ)`` in the step size. Defaults to 1e-3.
        clip_threshold: threshold of the update's RMS clipping (independent of ``clipnorm``).
            Defaults to 1.0.
        relative_step: kept for compatibility (no numerical effect, see above). Defaults to True.
        name: defaults to ``"Adafactor"``.
        **kwargs: the base-class keywords (``weight_decay``, ``clipnorm``, ...).

    Example:
        >>> import torch, kerasopt as ko
        >>> kernel = ko.Variable(torch.ones(2, 3, 4))
        >>> opt = ko.optimizers.Adafactor(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (kernel**2).sum(), [kernel])
        >>> [tuple(opt.get_slot(kernel, s).shape) for s in ("r", "c", "v")]
        [(2, 3), (2, 4), (2, 3, 4)]
        >>> round(kernel.numpy()[0, 0, 0].item(), 4)
        0.9
    """

    coefficients: ClassVar[type[Coefficients]] = AdafactorCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_2_decay = Param(-0.8)
    epsilon_1 = Param(1e-30)
    epsilon_2 = Param(1e-3)
    clip_threshold = Param(1.0)
    relative_step = Param(True, convert=bool)

    slots: ClassVar[tuple[str, ...]] = ("r", "c", "v")
    slot_aliases: ClassVar[dict[str, str]] = {"velocity": "v"}
    slot_arguments: ClassVar[dict[str, str]] = {"c": "c_factor"}  # `c` is the coefficients
    elementwise: ClassVar[bool] = False
    compiles_whole_tensors: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_2_decay: float = -0.8,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        relative_step: bool = True,
        name: str = "Adafactor",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_2_decay = beta_2_decay
        self.epsilon_1 = epsilon_1
        self.epsilon_2 = epsilon_2
        self.clip_threshold = clip_threshold
        self.relative_step = relative_step

    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        for var in var_list:
            if var.dim() >= 2:
                shape = tuple(var.shape)
                self.add_slot(var, "r", shape=shape[:-1])
                self.add_slot(var, "c", shape=shape[:-2] + shape[-1:])
            self.add_slot(var, "v")

    def slot_names_for(self, record: Record) -> tuple[str, ...]:
        return ("r", "c", "v") if record.var.dim() >= 2 else ("v",)

    def prepare(self, c: AdafactorCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        local_step = self._local_step(dtype, device)
        # tf_keras first caps a non-schedule lr at rsqrt(t) when relative_step is set, then takes
        # the same minimum again: min(min(lr, s), s) == min(lr, s), so one minimum is exact.
        c.rho_t = torch.minimum(c.lr_t, torch.rsqrt(local_step))
        c.beta_2_t = 1 - torch.pow(local_step, self._const(self.beta_2_decay, dtype, device))
        c.one_minus_beta_2_t = 1 - c.beta_2_t
        c.epsilon_1 = self._const(self.epsilon_1, dtype, device)
        # fidelity: tf_keras uses `tf.cast(epsilon_2, dtype)`, float32-rounded (shows in float64).
        c.epsilon_2 = self._const(tf_cast_value(self.epsilon_2), dtype, device)
        c.clip_threshold = self._const(self.clip_threshold, dtype, device)
        c.one = self._const(1.0, dtype, device)

    def update(
        self,
        var: Tensor,
        grad: Tensor,
        v: Tensor,
        r: Tensor | None = None,
        c_factor: Tensor | None = None,
        *,
        c: AdafactorCoefficients,
    ) -> None:
        alpha_t = torch.maximum(c.epsilon_2, _rms(var)) * c.rho_t
        regulated_grad_square = c.square(grad) + c.epsilon_1
        if r is not None and c_factor is not None:  # factored: variables of rank >= 2
            r.copy_(c.beta_2_t * r + c.one_minus_beta_2_t * regulated_grad_square.mean(dim=-1))
            c_factor.copy_(
                c.beta_2_t * c_factor + c.one_minus_beta_2_t * _column_mean(regulated_grad_square)
            )
            row = (r / r.mean(dim=-1, keepdim=True)).unsqueeze(-1)
            column = c_factor.unsqueeze(-2)
            v_t = row * column
            # Compiled, RMS(u) reads v from the same product in the other operand order (the
            # same values, but not a common subexpression): inductor then computes each where
            # it is used instead of storing v and reading it back twice. Eagerly, u once.
            v_rms = column * row if torch.compiler.is_compiling() else v_t
        else:
            v_t = v_rms = c.beta_2_t * v + c.one_minus_beta_2_t * regulated_grad_square
        u_t = grad * v_t.rsqrt()
        if c.grad_sq is not None:
            # Keras 3's sparse step (kerasopt.keras3) squares u entry by entry: sum_k g_k^2 / v
            # per row
            rms_u = (c.grad_sq / v_t).mean().sqrt()
        else:
            rms_u = _rms(u_t if v_rms is v_t else grad * v_rms.rsqrt())
        u_t_hat = u_t / torch.maximum(c.one, rms_u / c.clip_threshold)
        var.sub_(alpha_t * u_t_hat)
        v.copy_(v_t)
