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
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from ._hyper import _is_number

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # torch depends on typing_extensions
    from typing_extensions import dataclass_transform

_Scalar = int | float | torch.Tensor
_Step = int | float | torch.Tensor
_S = TypeVar("_S", bound="LearningRateSchedule")
Check = Callable[[str, Any], None]


# ---------------------------------------------------------------------------------------------
# Argument checks (construction and assignment only; never in __call__): each names the argument.
# ---------------------------------------------------------------------------------------------


def _check_scalar(name: str, value: object) -> None:
    """Raises unless ``value`` is a real number or a 0-d real tensor."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(
                f"Argument `{name}` must be a number or a 0-d tensor, received a tensor of "
                f"shape {tuple(value.shape)}."
            )
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(
                f"Argument `{name}` must be a real number, received a tensor of dtype "
                f"{value.dtype}."
            )
        return
    # bool is an int subclass, but a boolean learning rate or step count is always a mistake.
    if not _is_number(value):
        raise TypeError(
            f"Argument `{name}` must be a number or a 0-d tensor, received: {value!r} of type "
            f"{type(value).__name__}."
        )


def _check_scalar_or_none(name: str, value: object) -> None:
    if value is not None:
        _check_scalar(name, value)


def _check_positive(name: str, value: object) -> None:
    """Raises unless ``value`` is a number (or 0-d tensor) > 0, with Keras's message."""
    _check_scalar(name, value)
    # Construction time: reading a tensor's value here is fine (never done in __call__).
    if float(value) <= 0:  # type: ignore[arg-type]
        raise ValueError(f"Argument `{name}` must be > 0, received: {name}={_plain(value)}")


def _check_bool(name: str, value: object) -> None:
    # `if self.staircase:` in __call__ must not read a tensor's value (a host sync), and a string
    # such as "false" would silently be truthy.
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be a bool, received: {value!r} of type {type(value).__name__}."
        )


def _check_name(name: str, value: object) -> None:
    # tf_keras's default name is None, so configs written by it carry `"name": None`.
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"Argument `{name}` must be a string or None, received: {value!r} of type "
            f"{type(value).__name__}."
        )


def _check_scalar_list(name: str, seq: object) -> None:
    """Raises unless ``seq`` is a list/tuple of scalars (or a 1-D tensor)."""
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1:
            raise ValueError(
                f"Argument `{name}` must be a list or a 1-D tensor, received a tensor of shape "
                f"{tuple(seq.shape)}."
            )
        items = list(seq)
    elif isinstance(seq, (list, tuple)) or (hasattr(seq, "tolist") and hasattr(seq, "ndim")):
        items = list(seq)  # type: ignore[call-overload]
    else:
        raise TypeError(
            f"Argument `{name}` must be a list of numbers, received: {seq!r} of type "
            f"{type(seq).__name__}."
        )
    for i, item in enumerate(items):
        _check_scalar(f"{name}[{i}]", item)


def _plain(value: Any) -> Any:
    """``value`` as plain Python numbers/lists, so that ``json.dumps`` accepts a config."""
    if isinstance(value, torch.Tensor):
        return value.tolist()  # a Python number for a 0-d tensor
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    return value


# ---------------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------------


class Arg:
    """A schedule's constructor argument: its default, its check, its config entry, its repr.

    A data descriptor without ``__get__``: an assignment is checked (``s.decay_steps = 0`` raises
    as the constructor does) and stored in the instance ``__dict__``, so that a read is a plain
    attribute lookup: nothing for ``__call__`` to pay or for ``torch.compile`` to trace. On the
    class, the attribute is the declaration itself.
    """

    def __init__(self, default: Any, check: Check) -> None:
        self.default = default  # inspect.Parameter.empty: required
        self.check = check
        self.name = ""
        self.annotation: Any = inspect.Parameter.empty

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.annotation = vars(owner).get("__annotations__", {}).get(name, self.annotation)

    def __repr__(self) -> str:
        return f"<Arg {self.name} default={self.default!r}>"

    def __set__(self, schedule: LearningRateSchedule, value: Any) -> None:
        self.check(self.name, value)
        schedule.__dict__[self.name] = value


def arg(*, default: Any = inspect.Parameter.empty, check: Check) -> Any:
    """Declares a constructor argument, e.g. ``decay_steps: _Scalar = arg(check=_check_positive)``.

    A dataclass field specifier: type checkers read the generated ``__init__`` from the
    declarations, and the annotation as the attribute's type (hence the ``Any`` return).
    """
    return Arg(default, check)


def declared_args(cls: type[LearningRateSchedule]) -> tuple[Arg, ...]:
    """The argument declarations of a schedule class and its bases, in constructor order."""
    return cls._args


def _generated_init(cls: type[LearningRateSchedule]) -> Callable[..., None]:
    """``__init__`` from the declarations: Keras's positional order, each argument checked."""
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [
        inspect.Parameter(a.name, keyword, default=a.default, annotation=a.annotation)
        for a in cls._args
    ]
    signature = inspect.Signature(parameters)

    def __init__(self: LearningRateSchedule, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:  # "missing a required argument: 'decay_steps'"
            raise TypeError(f"{type(self).__name__}() {e}") from None
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            setattr(self, name, value)
        self._check_arguments()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", keyword), *parameters]
    )
    return __init__


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
# Base class
# ---------------------------------------------------------------------------------------------


@dataclass_transform(field_specifiers=(arg,), eq_default=False)
class LearningRateSchedule:
    """Base class of learning-rate schedules: a serializable function of the step.

    Subclasses override ``__call__(step)`` (the learning rate at ``step``) and either declare
    their constructor arguments as the built-in schedules do (``x: type = arg(check=...)``, which
    gives ``__init__``, ``get_config`` and ``repr``), or write ``__init__`` and ``get_config()``
    (the constructor arguments, for serialization) by hand. ``from_config(config)`` is
    ``cls(**config)``.

    Example:
        >>> import torch
        >>> class Halving(LearningRateSchedule):
        ...     def __init__(self, initial_learning_rate):
        ...         self.initial_learning_rate = initial_learning_rate
        ...     def __call__(self, step):
        ...         step = torch.as_tensor(step).to(torch.float32)
        ...         return self.initial_learning_rate * torch.pow(0.5, step)
        ...     def get_config(self):
        ...         return {"initial_learning_rate": self.initial_learning_rate}
        >>> float(Halving(1.0)(3))
        0.125
        >>> float(Halving.from_config({"initial_learning_rate": 2.0})(1))
        1.0
        >>> PiecewiseConstantDecay([10], [1.0, 0.5])
        PiecewiseConstantDecay(boundaries=[10], values=[1.0, 0.5], name='PiecewiseConstant')
    """

    #: the declared arguments (of the class and its bases), in constructor and config order
    _args: ClassVar[tuple[Arg, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        args: dict[str, Arg] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Arg):
                    args[value.name] = value  # a redeclaration keeps the base's position
        cls._args = tuple(args.values())
        if cls._args and "__init__" not in vars(cls):
            cls.__init__ = _generated_init(cls)  # type: ignore[method-assign]

    def _check_arguments(self) -> None:
        """Checks across arguments, run by the generated constructor once all are set."""

    def __call__(self, step: _Step) -> torch.Tensor:
        """Returns the learning rate at ``step`` as a 0-d float32 tensor.

        Args:
            step: the optimizer's iteration count before this update (a Python number or a 0-d
                tensor of any dtype, on any device).

        Raises:
            NotImplementedError: always; subclasses must override it.
        """
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must override `__call__(self, step)`."
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-serializable dict.

        Raises:
            NotImplementedError: for a subclass that neither declares its arguments nor overrides
                ``get_config``.
        """
        if not self._args:
            raise NotImplementedError(
                f"Learning rate schedule '{type(self).__name__}' must override `get_config()` "
                "in order to be serializable."
            )
        return {a.name: _plain(getattr(self, a.name)) for a in self._args}

    @classmethod
    def from_config(cls: type[_S], config: dict[str, Any]) -> _S:
        """Builds a schedule from the dict returned by ``get_config()``.

        Args:
            config: the constructor arguments.

        Returns:
            ``cls(**config)``.
        """
        return cls(**config)

    def __repr__(self) -> str:
        if not self._args:
            return super().__repr__()
        values = ", ".join(f"{a.name}={getattr(self, a.name)!r}" for a in self._args)
        return f"{type(self).__name__}({values})"


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
