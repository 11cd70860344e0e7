"""Learning-rate schedules (``kerasopt.optimizers.schedules``), as in Keras.

A schedule maps the optimizer's iteration count to a learning rate. The optimizer calls
``schedule(iterations)`` once per ``apply_gradients`` with the count *before* that call's increment
(the first update sees step 0) and casts the result to each variable's dtype.

Numerics follow TensorFlow/Keras: every number is turned into a float32 tensor (floatx), the step is
cast to float32, and the formula is evaluated in float32 in TensorFlow's order of operations. The
value is therefore float32-rounded before the optimizer casts it, which is visible when variables
are float64.

Every ``__call__`` is written with tensor ops only (no ``.item()``, no Python branch on a tensor
value, no host synchronisation), so a schedule can be traced by ``torch.compile(fullgraph=True)``
or captured in a CUDA graph, and a new step value never causes a recompilation. Python-level
branches depend only on constructor arguments (``staircase``, ``cycle``, ``warmup_target is
None``).

Constructor arguments may be Python numbers or 0-d tensors. They are kept as given (a tensor is
read at every call, so it may be changed in place); ``get_config`` returns plain Python values.
Tensor arguments are best placed on the device of the step, so that no copy is needed per call.

Each schedule is its argument declarations (``name: type = arg(default=..., check=...)``, in
Keras's positional order) and its ``__call__``: the declarations give the constructor, the checks
(with messages that name the argument, also on assignment), ``get_config`` (in TF's key order),
``from_config`` and ``repr``. Serialization (``serialize`` / ``deserialize`` and the registry of
the classes a config may name) is ``kerasopt._serialization``.

This module holds the concrete schedules and their call-time numerics; the base class, ``arg``
and the argument checks are ``kerasopt._schedule_base`` (re-exported here).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ._hyper import _is_number
from ._schedule_base import _S as _S
from ._schedule_base import Arg as Arg
from ._schedule_base import Check as Check
from ._schedule_base import LearningRateSchedule as LearningRateSchedule
from ._schedule_base import _check_bool as _check_bool
from ._schedule_base import _check_name as _check_name
from ._schedule_base import _check_positive as _check_positive
from ._schedule_base import _check_scalar as _check_scalar
from ._schedule_base import _check_scalar_list as _check_scalar_list
from ._schedule_base import _check_scalar_or_none as _check_scalar_or_none
from ._schedule_base import _generated_init as _generated_init
from ._schedule_base import _plain as _plain
from ._schedule_base import arg as arg
from ._schedule_base import declared_args as declared_args

_Scalar = int | float | torch.Tensor
_Step = int | float | torch.Tensor


# ---------------------------------------------------------------------------------------------
# Numerics helpers (call time)
# ---------------------------------------------------------------------------------------------


def _f32(value: _Scalar, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-d float32 tensor on ``device`` (TF: ``cast(convert_to_tensor(x), floatx)``).

    ``torch.full`` rounds the Python number to float32 once, inside a fill kernel: no host-to-device
    copy (which would synchronise) and a constant under ``torch.compile``.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32)
    return torch.full((), float(value), dtype=torch.float32, device=device)


def _step_tensor(step: _Step) -> torch.Tensor:
    """The step as a tensor of its natural dtype (Python int -> int64, Python float -> float32)."""
    if isinstance(step, torch.Tensor):
        return step
    if not _is_number(step):
        raise TypeError(
            f"`step` must be a number or a tensor, received: {step!r} of type "
            f"{type(step).__name__}."
        )
    if isinstance(step, numbers.Integral):
        return torch.full((), int(step), dtype=torch.int64)
    return torch.full((), float(step), dtype=torch.float32)


def _step_f32(step: _Step) -> torch.Tensor:
    """The step cast to float32, on the step's device (CPU for a Python number)."""
    if isinstance(step, torch.Tensor):
        return step.to(torch.float32)
    if not _is_number(step):
        raise TypeError(
            f"`step` must be a number or a tensor, received: {step!r} of type "
            f"{type(step).__name__}."
        )
    return torch.full((), float(step), dtype=torch.float32)


def _one_minus_f32(alpha: _Scalar, device: torch.device) -> torch.Tensor:
    """``1 - alpha`` computed before the float32 conversion, as Keras's CosineDecay does.

    fidelity: Keras writes ``(1 - self.alpha) * cosine_decayed`` with ``self.alpha`` a Python
    float, so ``1 - alpha`` is evaluated in float64 and rounded to float32 once; rounding
    ``alpha`` first can differ by an ulp.
    """
    if isinstance(alpha, torch.Tensor):
        return (1 - alpha).to(device=device, dtype=torch.float32)
    return torch.full((), 1.0 - float(alpha), dtype=torch.float32, device=device)


def _cos32(x: torch.Tensor) -> torch.Tensor:
    """The cosine of a 0-d float32 tensor, correctly rounded to float32.

    fidelity: TensorFlow evaluates a schedule's 0-d cosine with the C library's ``cosf``. Torch's
    float32 kernel is up to an ulp off: it disagreed with TF 2.21 (glibc) at 13 of 549 cosine
    schedule steps, the float64 cosine rounded once at 1 (glibc's ``cosf`` is not always
    correctly rounded either; tests/test_tf_golden.py). MPS has no float64: float32 there.
    """
    if x.device.type == "mps":
        return torch.cos(x)
    return torch.cos(x.double()).float()


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


class ExponentialDecay(LearningRateSchedule):
    """Exponential decay of the learning rate.

    Update rule (s = step, all in float32)::

        p = s / decay_steps            (floor(p) if staircase)
        lr = initial_learning_rate * decay_rate ** p

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: number of steps over which the rate is multiplied by ``decay_rate``; > 0.
        decay_rate: the multiplier applied every ``decay_steps`` steps.
        staircase: if True, decay in discrete intervals (``p`` is floored).
        name: name of the schedule (kept for the config).

    Raises:
        ValueError: if ``decay_steps <= 0``.
        TypeError: if an argument has the wrong type.

    Example:
        >>> s = ExponentialDecay(0.1, 10, 0.5)
        >>> float(s(10))
        0.05000000074505806
        >>> float(ExponentialDecay(0.1, 10, 0.5, staircase=True)(19))
        0.05000000074505806
    """

    initial_learning_rate: _Scalar = arg(check=_check_scalar)
    decay_steps: _Scalar = arg(check=_check_positive)
    decay_rate: _Scalar = arg(check=_check_scalar)
    staircase: bool = arg(default=False, check=_check_bool)
    name: str | None = arg(default="ExponentialDecay", check=_check_name)

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_f32(step)
        lr0 = _f32(self.initial_learning_rate, s.device)
        decay_steps = _f32(self.decay_steps, s.device)
        decay_rate = _f32(self.decay_rate, s.device)
        p = s / decay_steps
        if self.staircase:
            p = torch.floor(p)
        return lr0 * torch.pow(decay_rate, p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """A piecewise constant learning rate.

    Update rule (s = step; b = boundaries, v = values, len(v) == len(b) + 1)::

        lr = v[0]    if s <= b[0]
             v[i]    if b[i-1] < s <= b[i]
             v[-1]   if s > b[-1]

    A step equal to a boundary takes the value before it. As in TensorFlow, each boundary is first
    converted to a tensor (Python int -> integer, Python float -> float32) and then cast to the
    step's dtype (a Python int step is int64, a Python float step float32), and the comparison is
    made in that dtype. Boundaries must be increasing. The result is float32 (values are converted
    to float32, as the optimizer would cast them).

    Args:
        boundaries: increasing step boundaries (a list or tuple of numbers or 0-d tensors, or a
            1-D tensor).
        values: the learning rates, one more than ``boundaries``.
        name: name of the schedule (kept for the config).

    Raises:
        ValueError: if ``len(boundaries) != len(values) - 1``.
        TypeError: if ``boundaries``/``values`` are not sequences of numbers.

    Example:
        >>> s = PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.25])
        >>> [float(s(k)) for k in (0, 10, 11, 20, 21)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    boundaries: Any = arg(check=_check_scalar_list)
    values: Any = arg(check=_check_scalar_list)
    name: str | None = arg(default="PiecewiseConstant", check=_check_name)

    def _check_arguments(self) -> None:
        n_boundaries, n_values = len(self.boundaries), len(self.values)
        if n_boundaries != n_values - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={_plain(self.boundaries)} of length {n_boundaries}, and "
                f"values={_plain(self.values)} of length {n_values}."
            )

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_tensor(step)
        values = [_f32(v, s.device) for v in self.values]
        result = values[0]
        # Branch-free: walking the increasing boundaries, every boundary strictly below the step
        # moves the result one value up; a step equal to a boundary keeps the lower value.
        for b, v in zip(self.boundaries, values[1:]):
            result = torch.where(s > _boundary_like(b, s), v, result)
        return result


def _boundary_like(b: _Scalar, step: torch.Tensor) -> torch.Tensor:
    """Boundary ``b`` cast to the step's dtype and device, the way TensorFlow casts it.

    fidelity: TF converts a Python number to a tensor first (int -> integer, float -> float32) and
    only then casts it to the step's dtype, so a float boundary goes through float32 (e.g.
    16777217.0 becomes 16777216) and a float-to-integer cast truncates towards zero.
    """
    if isinstance(b, torch.Tensor):
        return b.to(device=step.device, dtype=step.dtype)
    if isinstance(b, numbers.Integral):
        src = torch.full((), int(b), dtype=torch.int64, device=step.device)
    else:
        src = torch.full((), float(b), dtype=torch.float32, device=step.device)
    return src.to(step.dtype)


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay from ``initial_learning_rate`` to ``end_learning_rate``.

    Update rule (s = step, D = decay_steps, e = end_learning_rate, P = power; float32)::

        cycle=False:  s' = min(s, D);  lr = (lr0 - e) * (1 - s'/D) ** P + e
        cycle=True:   D' = D * (1 if s == 0 else ceil(s / D))
                      lr = (lr0 - e) * (1 - s/D') ** P + e

    With ``cycle=True`` the decay restarts (from ``lr0`` again) every ``D`` steps, each cycle
    ending exactly at ``e`` on a multiple of ``D``.

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: number of steps of one decay; > 0.
        end_learning_rate: the learning rate reached after ``decay_steps``.
        power: exponent of the polynomial (1.0 is linear).
        cycle: if True, restart the decay past ``decay_steps`` instead of staying at the end.
        name: name of the schedule (kept for the config).

    Raises:
        ValueError: if ``decay_steps <= 0``.
        TypeError: if an argument has the wrong type.

    Example:
        >>> s = PolynomialDecay(0.1, 10, end_learning_rate=0.01, cycle=True)
        >>> [round(float(s(k)), 6) for k in (0, 10, 11, 20, 21)]
        [0.1, 0.01, 0.0505, 0.01, 0.037]
    """

    initial_learning_rate: _Scalar = arg(check=_check_scalar)
    decay_steps: _Scalar = arg(check=_check_positive)
    end_learning_rate: _Scalar = arg(default=0.0001, check=_check_scalar)
    power: _Scalar = arg(default=1.0, check=_check_scalar)
    cycle: bool = arg(default=False, check=_check_bool)
    name: str | None = arg(default="PolynomialDecay", check=_check_name)

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_f32(step)
        lr0 = _f32(self.initial_learning_rate, s.device)
        end = _f32(self.end_learning_rate, s.device)
        power = _f32(self.power, s.device)
        decay_steps = _f32(self.decay_steps, s.device)
        if self.cycle:
            # The first multiple of decay_steps at or above s; 1 at s == 0 so that step 0 is the
            # start of the first cycle rather than a division by zero.
            multiplier = torch.where(s == 0, 1.0, torch.ceil(s / decay_steps))
            decay_steps = decay_steps * multiplier
        else:
            s = torch.minimum(s, decay_steps)
        p = s / decay_steps
        return (lr0 - end) * torch.pow(1 - p, power) + end


class InverseTimeDecay(LearningRateSchedule):
    """Inverse-time decay of the learning rate.

    Update rule (s = step, all in float32)::

        p = s / decay_steps            (floor(p) if staircase)
        lr = initial_learning_rate / (1 + decay_rate * p)

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: how often ``p`` grows by 1; > 0.
        decay_rate: the decay coefficient.
        staircase: if True, decay in discrete intervals (``p`` is floored).
        name: name of the schedule (kept for the config).

    Raises:
        ValueError: if ``decay_steps <= 0``.
        TypeError: if an argument has the wrong type.

    Example:
        >>> s = InverseTimeDecay(1.0, 10, 0.5)
        >>> float(s(20))
        0.5
        >>> float(InverseTimeDecay(1.0, 10, 0.5, staircase=True)(19))
        0.6666666865348816
    """

    initial_learning_rate: _Scalar = arg(check=_check_scalar)
    decay_steps: _Scalar = arg(check=_check_positive)
    decay_rate: _Scalar = arg(check=_check_scalar)
    staircase: bool = arg(default=False, check=_check_bool)
    name: str | None = arg(default="InverseTimeDecay", check=_check_name)

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_f32(step)
        lr0 = _f32(self.initial_learning_rate, s.device)
        decay_steps = _f32(self.decay_steps, s.device)
        decay_rate = _f32(self.decay_rate, s.device)
        p = s / decay_steps
        if self.staircase:
            p = torch.floor(p)
        return lr0 / (1 + decay_rate * p)


class CosineDecay(LearningRateSchedule):
    """Cosine decay, optionally after a linear warmup.

    Update rule (s = step, D = decay_steps, α = alpha, W = warmup_steps, T = warmup_target)::

        decayed(x, D) = (1 - α) * 0.5 * (1 + cos(π x / D)) + α

        T is None:  s' = min(s, D);      lr = lr0 * decayed(s', D)      (warmup_steps ignored)
        T given:    s' = min(s, D + W)
                    lr = lr0 + (T - lr0) * s'/W     if s' < W   (linear from lr0 to T)
                    lr = T * decayed(s' - W, D)     otherwise

    ``alpha`` is a fraction of the rate decayed from (the floor is ``alpha * lr0``, or
    ``alpha * T`` with warmup). With ``W = 0`` and ``T`` given, the decay starts from ``T``.

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: number of steps of the cosine decay; > 0.
        alpha: the minimum learning rate, as a fraction of the rate decayed from.
        name: name of the schedule (kept for the config).
        warmup_target: the learning rate reached at the end of the warmup; None for no warmup.
        warmup_steps: number of warmup steps.

    Raises:
        ValueError: if ``decay_steps <= 0``.
        TypeError: if an argument has the wrong type.

    Example:
        >>> s = CosineDecay(1.0, 10)
        >>> [round(float(s(k)), 6) for k in (0, 5, 10, 20)]
        [1.0, 0.5, 0.0, 0.0]
        >>> float(s(5))  # cos(float32(π)/2) is not exactly 0 in float32
        0.4999999701976776
        >>> w = CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=4)
        >>> [round(float(w(k)), 6) for k in (0, 2, 4, 9)]
        [0.0, 0.5, 1.0, 0.5]
    """

    initial_learning_rate: _Scalar = arg(check=_check_scalar)
    decay_steps: _Scalar = arg(check=_check_positive)
    alpha: _Scalar = arg(default=0.0, check=_check_scalar)
    name: str | None = arg(default="CosineDecay", check=_check_name)
    warmup_target: _Scalar | None = arg(default=None, check=_check_scalar_or_none)
    warmup_steps: _Scalar = arg(default=0, check=_check_scalar)

    def _decay(
        self, s: torch.Tensor, decay_steps: torch.Tensor, decay_from_lr: torch.Tensor
    ) -> torch.Tensor:
        completed_fraction = s / decay_steps
        pi = torch.full((), math.pi, dtype=torch.float32, device=s.device)
        cosine_decayed = 0.5 * (1.0 + _cos32(pi * completed_fraction))
        one_minus_alpha = _one_minus_f32(self.alpha, s.device)
        decayed = one_minus_alpha * cosine_decayed + _f32(self.alpha, s.device)
        return decay_from_lr * decayed

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_f32(step)
        lr0 = _f32(self.initial_learning_rate, s.device)
        decay_steps = _f32(self.decay_steps, s.device)
        if self.warmup_target is None:
            s = torch.minimum(s, decay_steps)
            return self._decay(s, decay_steps, lr0)

        warmup_target = _f32(self.warmup_target, s.device)
        warmup_steps = _f32(self.warmup_steps, s.device)
        s = torch.minimum(s, decay_steps + warmup_steps)
        # Both branches are evaluated (TF uses a cond); with warmup_steps == 0 the warmup branch
        # is 0/0 = NaN, but it is never selected then, since s' < 0 is false.
        warmup = (warmup_target - lr0) * (s / warmup_steps) + lr0
        decay = self._decay(s - warmup_steps, decay_steps, warmup_target)
        return torch.where(s < warmup_steps, warmup, decay)


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR, Loshchilov & Hutter 2017).

    Update rule (s = step, D₁ = first_decay_steps, α = alpha; float32)::

        f = s / D₁
        if t_mul == 1:  i = floor(f);  f = f - i
        else:           i = floor(log(1 - f * (1 - t_mul)) / log(t_mul))
                        f = (f - (1 - t_mul**i) / (1 - t_mul)) / t_mul**i
        lr = lr0 * ((1 - α) * 0.5 * m_mul**i * (1 + cos(π f)) + α)

    Period ``i`` lasts ``D₁ * t_mul**i`` steps and peaks at ``lr0 * ((1 - α) * m_mul**i + α)``:
    ``alpha`` is not multiplied by ``m_mul**i``. The ``t_mul == 1`` test is made on float32
    values with ``torch.where`` (TensorFlow uses a cond on the same tensors), so it needs no host
    synchronisation even when ``t_mul`` is a tensor.

    Args:
        initial_learning_rate: the learning rate at step 0.
        first_decay_steps: length of the first period; > 0.
        t_mul: factor by which each period is longer than the previous one.
        m_mul: factor by which each period's peak is lower than the previous one's.
        alpha: the minimum learning rate, as a fraction of ``initial_learning_rate``.
        name: name of the schedule (kept for the config).

    Raises:
        ValueError: if ``first_decay_steps <= 0``.
        TypeError: if an argument has the wrong type.

    Example:
        >>> s = CosineDecayRestarts(1.0, 10)
        >>> [round(float(s(k)), 4) for k in (0, 9, 10, 29, 30)]
        [1.0, 0.0245, 1.0, 0.0062, 1.0]
    """

    initial_learning_rate: _Scalar = arg(check=_check_scalar)
    first_decay_steps: _Scalar = arg(check=_check_positive)
    t_mul: _Scalar = arg(default=2.0, check=_check_scalar)
    m_mul: _Scalar = arg(default=1.0, check=_check_scalar)
    alpha: _Scalar = arg(default=0.0, check=_check_scalar)
    name: str | None = arg(default="SGDRDecay", check=_check_name)

    def __call__(self, step: _Step) -> torch.Tensor:
        s = _step_f32(step)
        device = s.device
        lr0 = _f32(self.initial_learning_rate, device)
        first_decay_steps = _f32(self.first_decay_steps, device)
        alpha = _f32(self.alpha, device)
        t_mul = _f32(self.t_mul, device)
        m_mul = _f32(self.m_mul, device)

        completed_fraction = s / first_decay_steps

        # Equal periods.
        i_linear = torch.floor(completed_fraction)
        f_linear = completed_fraction - i_linear

        # Geometric periods; NaN when t_mul == 1 (0/0), but then the branch is not selected.
        i_geometric = torch.floor(
            torch.log(1.0 - completed_fraction * (1.0 - t_mul)) / torch.log(t_mul)
        )
        sum_r = (1.0 - torch.pow(t_mul, i_geometric)) / (1.0 - t_mul)
        f_geometric = (completed_fraction - sum_r) / torch.pow(t_mul, i_geometric)

        equal_periods = t_mul == 1.0
        i_restart = torch.where(equal_periods, i_linear, i_geometric)
        completed_fraction = torch.where(equal_periods, f_linear, f_geometric)

        m_fac = torch.pow(m_mul, i_restart)
        pi = torch.full((), math.pi, dtype=torch.float32, device=device)
        cosine_decayed = 0.5 * m_fac * (1.0 + _cos32(pi * completed_fraction))
        # fidelity: here Keras casts alpha to float32 before `1 - alpha` (unlike CosineDecay).
        decayed = (1 - alpha) * cosine_decayed + alpha
        return lr0 * decayed
