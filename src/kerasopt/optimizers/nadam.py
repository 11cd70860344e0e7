"""Nadam — TF's ``tf.keras.optimizers.Nadam`` (optimizer_v2 numerics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._engines import compute_dtype
from .._hyper import Hyper, Param, epsilon_or_default, non_negative
from ..optimizer import Coefficients, Optimizer
from .schedules import LearningRateSchedule

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords

    class NadamKeywords(BaseKeywords, total=False):
        schedule_decay: float  # TF's momentum-schedule decay (stored as `decay`)


# Dozat's momentum-schedule base 0.96, as TF has it at step time: rounded to float32 first.
_U_FLOAT32 = float(torch.tensor(0.96, dtype=torch.float32))


class NadamCoefficients(Coefficients):
    """Nadam's step coefficients (``prepare`` sets them, the rule reads them)."""

    neg_lr_t: Tensor
    epsilon: Tensor
    beta_1_t: Tensor
    beta_2_t: Tensor
    m_t: Tensor
    m_t_1: Tensor
    one_minus_beta_1_t: Tensor
    one_minus_beta_2_t: Tensor
    one_minus_m_t: Tensor
    one_minus_m_schedule_new: Tensor
    one_minus_m_schedule_next: Tensor
    v_t_prime_denominator: Tensor


class Nadam(Optimizer):
    """Adam with Nesterov momentum and Dozat's momentum schedule (TF's legacy Nadam).

    Update rule (docs/reference-behaviour.md Part 1 §1.10), ``t = iterations + 1``, ``u = 0.96``, ``d = decay``::

        mu_t = beta_1 * (1 - 0.5 * u^(d*t));  mu_next = beta_1 * (1 - 0.5 * u^(d*(t+1)))
        m_sched = momentum_cache * mu_t     (stored back into momentum_cache)
        m_sched_next = m_sched * mu_next
        g' = g / (1 - m_sched)
        m = beta_1 * m + (1 - beta_1) * g;      m' = m / (1 - m_sched_next)
        v = beta_2 * v + (1 - beta_2) * g*g;    v' = v / (1 - beta_2^t)
        m_bar = (1 - mu_t) * g' + mu_next * m'
        var -= lr * m_bar / (sqrt(v') + epsilon)

    ``decay`` is the momentum-schedule decay (keyword ``schedule_decay``, default 0.004), **not** a
    learning-rate decay: the learning rate is used as given. ``momentum_cache`` is a scalar
    optimizer weight (dtype of the first variable), listed right after ``iterations`` in
    ``weights``; it advances once per step. Sparse gradients: ``m`` and ``v`` decay over all rows,
    the gradient is added at its rows, and only the indexed rows of the variable move.

    Same momentum schedule as ``torch.optim.NAdam`` (whose ``momentum_decay`` is ``schedule_decay``
    here), but epsilon defaults to 1e-7 and the learning rate cannot be a schedule.

    Args:
        learning_rate: float, tensor or callable (not a ``LearningRateSchedule``). Defaults to
            0.001.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: defaults to 1e-7 (``None`` or 0 also mean 1e-7, as in TF).
        name: defaults to ``"Nadam"``.
        **kwargs: ``schedule_decay`` (stored as ``decay``; a ``decay`` keyword is overwritten
            by it, as in TF — ``from_config`` reads a config's ``decay`` as ``schedule_decay``,
            so configs round-trip) and the base-class keywords.

    Raises:
        ValueError: ``learning_rate`` is a ``LearningRateSchedule``.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(10.0)
        >>> opt = ko.optimizers.Nadam(learning_rate=0.2)
        >>> _ = opt.minimize(lambda: (var**2) / 2.0, [var])
        >>> round(float(var), 1)
        9.8
        >>> [w.shape for w in opt.get_weights()]
        [(), (), (), ()]
    """

    coefficients: ClassVar[type[Coefficients]] = NadamCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    beta_1 = Hyper(0.9)
    beta_2 = Hyper(0.999)
    epsilon = Param(1e-7, convert=epsilon_or_default)
    # TF's `schedule_decay` (momentum-schedule decay, not a learning-rate decay), stored as the
    # base's `decay`: a keyword (`schedule_decay=`), 0.004 by default.
    decay = Hyper(0.004, check=non_negative)

    slots: ClassVar[tuple[str, ...]] = ("m", "v")

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: Any = 0.9,
        beta_2: Any = 0.999,
        epsilon: float | None = 1e-7,
        name: str = "Nadam",
        **kwargs: Unpack[NadamKeywords],
    ) -> None:
        # TF: `kwargs["decay"] = kwargs.pop("schedule_decay", 0.004)` — a `decay` keyword is
        # overwritten (it is not a learning-rate decay here).
        kwargs.pop("decay", None)
        decay = kwargs.pop("schedule_decay", 0.004)
        if isinstance(kwargs.get("lr", learning_rate), LearningRateSchedule):
            raise ValueError(
                "The Nadam optimizer does not support tf.keras.optimizers.LearningRateSchedules "
                "as the learning rate."
            )
        super().__init__(name=name, learning_rate=learning_rate, decay=decay, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._m_cache_read: Tensor | None = None

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Any:
        """As the base's, reading ``decay`` as ``schedule_decay`` (TF would reset it to 0.004)."""
        if isinstance(config, dict) and "decay" in config and "schedule_decay" not in config:
            config = dict(config)
            config["schedule_decay"] = config.pop("decay")
        return super().from_config(config, custom_objects=custom_objects)

    def _build_optimizer_weights(self, var_list: Sequence[Tensor]) -> None:
        # the dtype the rule computes in (float32 for half-precision variables: compute_dtype)
        dtype = compute_dtype(var_list[0].dtype) if var_list else torch.float32
        self.add_weight("momentum_cache", (), dtype=dtype, initializer="ones")

    @property
    def _m_cache(self) -> Tensor | None:
        # Looked up by name: moving the weights to the first variable's device replaces them.
        return dict(self._store.opt_weights).get("momentum_cache")

    def _decayed_lr(self, var_dtype: torch.dtype) -> Tensor:
        # `decay` is the momentum-schedule decay: the learning rate is used as given.
        return self._hyper.tensors["learning_rate"].to(var_dtype)

    def _prepare(self, variables: Sequence[Tensor]) -> dict[Any, Coefficients]:
        # Every (device, dtype) group of this step reads the cache as it was before the step.
        cache = self._m_cache
        self._m_cache_read = None if cache is None else cache.clone()
        return super()._prepare(variables)

    def prepare(self, c: NadamCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        cache = self._m_cache
        if cache is None:
            raise RuntimeError("Nadam's `momentum_cache` is created with the first variables.")
        cache_read = self._m_cache_read if self._m_cache_read is not None else cache
        beta_1_t = self._hyper_t("beta_1", dtype, device)
        beta_2_t = self._hyper_t("beta_2", dtype, device)
        local_step = self._local_step(dtype, device)
        next_step = self._local_step(dtype, device, offset=2)
        # fidelity: TF's `tf.cast(0.96, dtype)` makes a float32 tensor first, so in float64 the
        # base is float32(0.96) = 0.9599999785423279 (checked against TF 2.21).
        decay_base = self._const(_U_FLOAT32, dtype, device)
        decay = self._const(self._initial_decay, dtype, device)
        m_t = beta_1_t * (1.0 - 0.5 * torch.pow(decay_base, decay * local_step))
        m_t_1 = beta_1_t * (1.0 - 0.5 * torch.pow(decay_base, decay * next_step))
        m_schedule_new = cache_read.to(dtype).to(device) * m_t
        if dtype == cache.dtype:
            cache.copy_(m_schedule_new)
        m_schedule_next = m_schedule_new * m_t_1
        c.neg_lr_t = -c.lr_t
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.beta_1_t = beta_1_t
        c.beta_2_t = beta_2_t
        c.m_t = m_t
        c.m_t_1 = m_t_1
        c.one_minus_beta_1_t = 1 - beta_1_t
        c.one_minus_beta_2_t = 1 - beta_2_t
        c.one_minus_m_t = 1.0 - m_t
        c.one_minus_m_schedule_new = 1.0 - m_schedule_new
        c.one_minus_m_schedule_next = 1.0 - m_schedule_next
        c.v_t_prime_denominator = 1.0 - torch.pow(beta_2_t, local_step)

    def update(self, var: Any, grad: Any, m: Any, v: Any, *, c: NadamCoefficients) -> None:
        g_prime = grad / c.one_minus_m_schedule_new
        c.average(m, c.beta_1_t, grad, c.one_minus_beta_1_t)
        m_t_prime = m / c.one_minus_m_schedule_next
        c.average(v, c.beta_2_t, grad * grad, c.one_minus_beta_2_t)
        v_t_prime = v / c.v_t_prime_denominator
        m_t_bar = g_prime * c.one_minus_m_t + m_t_prime * c.m_t_1
        c.sub_quotient(var, m_t_bar, c.lr_t, v_t_prime.sqrt().add_(c.epsilon))

    def update_sparse(
        self, var: Any, indices: Any, values: Any, m: Any, v: Any, *, c: NadamCoefficients
    ) -> None:
        g_prime = values / c.one_minus_m_schedule_new
        m.mul_(c.beta_1_t).index_add_(0, indices, values * c.one_minus_beta_1_t)
        m_t_prime = m.index_select(0, indices) / c.one_minus_m_schedule_next
        m_t_bar = g_prime * c.one_minus_m_t + m_t_prime * c.m_t_1
        v.mul_(c.beta_2_t).index_add_(0, indices, (values * values) * c.one_minus_beta_2_t)
        v_t_prime = v.index_select(0, indices) / c.v_t_prime_denominator
        var.index_add_(0, indices, m_t_bar * c.neg_lr_t / (v_t_prime.sqrt() + c.epsilon))
