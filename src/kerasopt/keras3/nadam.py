"""Nadam — Keras 3's ``keras.optimizers.Nadam``: the momentum schedule with ``u_product``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._engines import compute_dtype
from .._hyper import Hyper, Param, non_negative
from ..optimizer import Coefficients
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


class NadamCoefficients(Coefficients):
    """Keras 3 Nadam's step coefficients."""

    u_t: Tensor
    u_t_1: Tensor
    one_minus_beta_1: Tensor
    one_minus_beta_2: Tensor
    one_minus_u_t: Tensor
    one_minus_u_product_t: Tensor
    one_minus_u_product_t_1: Tensor
    one_minus_beta_2_power: Tensor
    epsilon: Tensor


class Nadam(Keras3Base):
    """Nadam, as Keras 3 defines it.

    Update rule (``t = iterations + 1``; ``beta_1``, ``beta_2`` and 0.96 go through float32 in the
    per-variable step, as TensorFlow's ``ops.cast`` does)::

        once per step:  u_product *= beta_1 * (1 - 0.5 * 0.96^t)
        u_t = beta_1 * (1 - 0.5 * 0.96^t);  u_t1 = beta_1 * (1 - 0.5 * 0.96^(t+1))
        m += (g - m) * (1 - beta_1);  v += (g*g - v) * (1 - beta_2)
        m_hat = u_t1 * m / (1 - u_product * u_t1) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - beta_2^t)
        var -= m_hat * lr / (sqrt(v_hat) + epsilon)

    Legacy TF (``kerasopt.optimizers.Nadam``) has ``schedule_decay`` in the exponent and refuses
    learning-rate schedules; Keras 3 has neither. Slots ``momentum`` and ``velocity`` (variable
    by variable), then the scalar ``u_product`` (dtype of the first variable, starting at 1).
    Sparse gradients (Keras 3 on TensorFlow): every row moves; ``g*g`` is the row sum of the
    squares of the entries.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: Defaults to 0.9.
        beta_2: Defaults to 0.999.
        epsilon: Defaults to 1e-7.
        name: defaults to ``"nadam"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(10.0)
        >>> opt = ko.keras3.Nadam(learning_rate=0.2)
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 1), [v.shape for v in opt.variables][-1]
        (9.8, torch.Size([]))
    """

    coefficients: ClassVar[type[Coefficients]] = NadamCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-7)
    slots: ClassVar[tuple[str, ...]] = ("momentum", "velocity")

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def _build_optimizer_weights(self, var_list: Sequence[Tensor]) -> None:
        dtype = compute_dtype(var_list[0].dtype) if var_list else torch.float32
        self.add_weight("u_product", (), dtype=dtype, initializer="ones")

    @property
    def _u_product(self) -> Tensor:
        # Looked up by name: moving the weights to the first variable's device replaces them.
        return dict(self._store.opt_weights)["u_product"]

    def _prepare(self, variables: Sequence[Tensor]) -> dict[Any, Coefficients]:
        # Keras's _backend_update_step: u_product advances once, before the per-variable steps.
        # Here the Python floats meet the variable: 0.96 and beta_1 are exact.
        u = self._u_product
        t = (self.iterations + 1).to(u.dtype).to(u.device)
        decay = torch.pow(torch.tensor(0.96, dtype=u.dtype, device=u.device), t)
        u.copy_(u * self.beta_1 * (1.0 - 0.5 * decay))
        return super()._prepare(variables)

    def prepare(self, c: NadamCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        local_step = self._local_step(dtype, device)
        next_step = self._local_step(dtype, device, offset=2)
        decay = self._cast(0.96, dtype, device)
        beta_1 = self._cast(self.beta_1, dtype, device)
        beta_2 = self._cast(self.beta_2, dtype, device)
        c.u_t = beta_1 * (1.0 - 0.5 * torch.pow(decay, local_step))
        c.u_t_1 = beta_1 * (1.0 - 0.5 * torch.pow(decay, next_step))
        u_product_t = self._u_product.to(dtype).to(device)
        u_product_t_1 = u_product_t * c.u_t_1
        c.one_minus_beta_1 = 1 - beta_1
        c.one_minus_beta_2 = 1 - beta_2
        c.one_minus_u_t = 1 - c.u_t
        c.one_minus_u_product_t = 1 - u_product_t
        c.one_minus_u_product_t_1 = 1 - u_product_t_1
        c.one_minus_beta_2_power = 1 - torch.pow(beta_2, local_step)
        c.epsilon = self._py(self.epsilon, dtype, device)

    def update(
        self, var: Any, grad: Any, momentum: Any, velocity: Any, *, c: NadamCoefficients
    ) -> None:
        m, v = momentum, velocity
        c.add_product(m, grad - m, c.one_minus_beta_1)
        c.add_product(v, c.square(grad) - v, c.one_minus_beta_2)
        m_hat = (c.u_t_1 * m) / c.one_minus_u_product_t_1 + (
            c.one_minus_u_t * grad
        ) / c.one_minus_u_product_t
        v_hat = v / c.one_minus_beta_2_power
        c.sub_quotient(var, m_hat, c.lr_t, v_hat.sqrt().add_(c.epsilon))
