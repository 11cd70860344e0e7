"""Hyperparameter declarations: one line gives validation, config, and step-time 0-d tensors.

``Hyper`` is TF's ``_set_hyper`` hyperparameter: a number, tensor, zero-argument callable or
``LearningRateSchedule``; numbers are stored in float32 (TF keeps them in float32 variables), so
their value at step time is float32-rounded and then cast to the variable's dtype.

``Param`` is a plain constructor argument (``epsilon``, ``amsgrad``, ...): converted exactly to the
variable's dtype when used, never float32-rounded.

Both are descriptors, so ``opt.beta_1 = 0.8`` validates and takes effect at the next step, and
``get_config`` is derived from the declarations instead of being written by hand.

``HyperStore`` holds an optimizer's hyperparameters at run time (sources, public variables and
the tensors the engines read).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any, Protocol

import torch

from .variables import Variable

Check = Callable[[str, Any], None]

_UNSET: Any = object()


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number_value(value: object) -> float | None:
    """The value of a number or 0-d tensor as a Python float, else None (callables, schedules)."""
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value.detach().cpu())
    return None


# -- checks: each names the argument in its message ------------------------------------------
def non_negative(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and (math.isnan(v) or v < 0):
        raise ValueError(f"Expected {name} >= 0, received: {value}")


def unit_interval(name: str, value: Any) -> None:
    v = number_value(value)
    if v is not None and not 0 <= v <= 1:
        raise ValueError(f"`{name}` must be between [0, 1]. Received: {name}={value}")


def positive_int_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1 or None. Received: {name}={value!r}")


def is_number_or_none(name: str, value: Any) -> None:
    if value is not None and number_value(value) is None:
        raise TypeError(f"`{name}` must be a number or None. Received: {name}={value!r}")


def takes_step(fn: Callable[..., Any]) -> bool:
    """Whether a hyperparameter callable takes the step (a schedule: ``schedule(step)``) or
    nothing (TF's zero-argument callables)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def require_init(opt: Any, name: str, doing: str = "setting") -> None:
    """Refuses ``name`` (set or called) on an optimizer whose base constructor has not run."""
    if "_hyper" not in vars(opt):
        raise RuntimeError(
            f"It looks like you are subclassing `Optimizer` and forgot to call "
            f"`super().__init__()` as the first statement in `__init__()` ({doing} {name!r})."
        )


def check_hyper_value(name: str, value: Any) -> None:
    """A hyperparameter must be a number, a 0-d tensor, or a callable (incl. schedules)."""
    if callable(value) or number_value(value) is not None:
        return
    raise ValueError(
        f"Argument `{name}` should be float, or an instance of LearningRateSchedule, or a "
        f"callable (that takes no arguments and returns a float). Received: {name}={value!r}"
    )


class HyperOwner(Protocol):
    """What the descriptors need of an optimizer (kerasopt.optimizer.Optimizer is one)."""

    _params: dict[str, Any]

    def _hyper_read(self, name: str) -> Any: ...
    def _set_hyper(self, name: str, value: Any) -> None: ...
    def _on_param_change(self, name: str) -> None: ...


class Hyper:
    """A TF-style hyperparameter (float32-stored number, tensor, callable or schedule).

    Args:
        default: the default value (documentation; constructors pass the value explicitly).
        check: validation applied to numbers when the value is set.
    """

    #: False for ``_set_hyper`` names made attributes (kerasopt._legacy), not declared by a class
    is_declaration = True

    def __init__(self, default: Any = None, *, check: Check | None = None) -> None:
        self.default = default
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, opt: HyperOwner | None, owner: type | None = None) -> Any:
        if opt is None:
            return self
        return opt._hyper_read(self.name)

    def __set__(self, opt: HyperOwner, value: Any) -> None:
        require_init(opt, self.name)
        check_hyper_value(self.name, value)
        if self.check is not None:
            self.check(self.name, value)
        opt._set_hyper(self.name, value)


class Param:
    """A plain constructor argument: stored as given (after ``convert``), exact at step time.

    Args:
        default: default value.
        check: validation, called with (name, value).
        convert: normalisation applied before storing (e.g. TF's ``epsilon or 1e-7``).
        config: whether the value belongs in ``get_config()``.
    """

    def __init__(
        self,
        default: Any = None,
        *,
        check: Check | None = None,
        convert: Callable[[Any], Any] | None = None,
        config: bool = True,
    ) -> None:
        self.default = default
        self.check = check
        self.convert = convert
        self.config = config
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, opt: HyperOwner | None, owner: type | None = None) -> Any:
        if opt is None:
            return self
        return opt._params.get(self.name, self.default)

    def __set__(self, opt: HyperOwner, value: Any) -> None:
        require_init(opt, self.name)
        if self.check is not None:
            self.check(self.name, value)
        if self.convert is not None:
            value = self.convert(value)
        opt._params[self.name] = value
        opt._on_param_change(self.name)


def epsilon_or_default(value: Any) -> float:
    """TF's ``epsilon or backend.epsilon()``: None and 0 become 1e-7 (a quirk kept on purpose)."""
    number = None if value is None else float(value)
    # Converted first: a string "0" (from a hand-written config) is 0 too, so get_config /
    # from_config round-trip.
    return number or 1e-7


def tf_cast_value(value: float) -> float:
    """The value TF's ``tf.cast(python_float, dtype)`` produces, for any float ``dtype``.

    ``tf.cast`` (and Keras 3's ``ops.cast`` on the TensorFlow backend) first turns a Python float
    into a float32 tensor, so the number is float32-rounded before it reaches a float64 (or half)
    variable's dtype. Rounding to float32 and then to a narrower type gives what TF gives.
    """
    if torch.compiler.is_compiling():
        return _float32_rounded_traced(float(value))
    return _float32_rounded(float(value))


def _rounded(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


_float32_rounded = functools.lru_cache(maxsize=256)(_rounded)
# (while dynamo traces: run, its result a constant of the graph; dynamo would trace through the
# cache, with a warning)
_float32_rounded_traced = torch.compiler.assume_constant_result(_rounded)


def _evaluated(source: Any) -> bool:
    """Whether a step evaluates ``source`` (a callable or a tensor) rather than reading the
    tensor a number was written into."""
    return callable(source) or isinstance(source, torch.Tensor)


def declared(cls: type) -> list[Hyper | Param]:
    """Hyper/Param declarations of a class and its bases, base-first, each name once."""
    seen: dict[str, Hyper | Param] = {}
    for klass in reversed(cls.__mro__):
        for key, value in vars(klass).items():
            if isinstance(value, Param) or (isinstance(value, Hyper) and value.is_declaration):
                seen[key] = value  # a redeclaration keeps the base's position (TF's key order)
    return list(seen.values())


class HyperStore:
    """An optimizer's hyperparameters at run time, by name.

    Each has a *source* (the number, tensor, callable or schedule that was set), a public float32
    ``Variable`` (what ``opt.<name>`` returns for a number: assigning to it changes the value,
    as in TF) and the engines' *tensor*, a plain alias of that variable (same storage and version
    counter), which a step refreshes from callables and tensors before the rule reads it.
    """

    def __init__(self, home: torch.device) -> None:
        self.home = home
        self.sources: dict[str, Any] = {}
        # the sources a step evaluates (callables, tensors): what `resolve` reads, so that a
        # traced step reads no number source (dynamo would guard on the number, and re-trace
        # when it changes; the rule reads the number's tensor instead)
        self._dynamic: dict[str, Any] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.variables: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
        self._takes_step: dict[str, bool] = {}
        # `active`'s answers: name -> (the source it was decided for, its version, the answer)
        self._active: dict[str, tuple[Any, int, bool]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.sources

    def set(self, name: str, value: Any, takes_step: bool = False) -> None:
        """Stores ``value`` (checked by the caller); ``takes_step``: a callable of the step."""
        if isinstance(value, Variable) and value is self.variables.get(name):
            return  # `opt.lr = opt.lr` (e.g. `opt.lr += 0` after an in-place op)
        tensor = self.tensors.get(name)
        if tensor is None:
            public = Variable._wrap(
                torch.zeros((), dtype=torch.float32, device=self.home), False, name, None
            )
            self.variables[name] = public
            tensor = public.detach()
            self.tensors[name] = tensor
        self.sources[name] = value
        if _evaluated(value):
            self._dynamic[name] = value
        else:
            self._dynamic.pop(name, None)
        if callable(value):
            self._takes_step[name] = takes_step
        else:
            self._takes_step.pop(name, None)
        v = number_value(value)
        if v is not None:
            # float32 rounding, as TF's float32 hyperparameter variables (overflow gives inf)
            tensor.copy_(torch.tensor(v, dtype=torch.float64))
        self._versions[name] = tensor._version

    def source(self, name: str) -> Any:
        """The current source. A number written straight into the public variable
        (``opt.lr.assign(x)``, Keras's ``backend.set_value(opt.lr, x)``) is picked up here, by
        the variable's version counter."""
        value = self.sources[name]
        tensor = self.tensors[name]
        if (
            not callable(value)
            and not isinstance(value, torch.Tensor)
            and tensor._version != self._versions[name]
        ):
            value = float(tensor)
            self.sources[name] = value
            self._versions[name] = tensor._version
        return value

    def active(self, name: str) -> bool:
        """Whether ``name`` is set and not a number <= 0 (a tensor, callable or schedule is
        active): legacy ``decay``. Decided again only when the source is replaced or a number
        is assigned into its variable (its version counter moves); a tensor source, which may
        change in place, is read every time."""
        source = self.sources.get(name)
        if source is None:
            return False
        known = self._active.get(name)
        if known is not None and known[0] is source and known[1] == self.tensors[name]._version:
            return known[2]
        source = self.source(name)
        value = number_value(source)
        answer = value is None or value > 0
        if not isinstance(source, torch.Tensor):
            self._active[name] = (source, self.tensors[name]._version, answer)
        return answer

    def numbers(self) -> dict[str, float]:
        """Every hyperparameter whose source is a number, by name, with the numbers assigned
        straight into the public variables folded in: what state and config record."""
        out = {}
        for name in self.sources:
            value = self.source(name)
            number = None if callable(value) else number_value(value)
            if number is not None:
                out[name] = number
        return out

    def read(self, name: str) -> Any:
        """What ``opt.<name>`` returns: the variable holding a number, else the source."""
        value = self.sources[name]
        if callable(value) or isinstance(value, torch.Tensor):
            return value
        return self.variables[name]

    def evaluate(self, name: str, step: torch.Tensor) -> torch.Tensor:
        """A callable source's value now, as a new float32 0-d tensor on the home device."""
        fn = self.sources[name]
        result = fn(step) if self._takes_step.get(name) else fn()
        v = result if isinstance(result, torch.Tensor) else number_value(result)
        if v is None or (isinstance(v, torch.Tensor) and v.numel() != 1):
            raise ValueError(
                f"Hyperparameter `{name}` is a callable that returned {result!r}; it must return a "
                "number or a scalar tensor."
            )
        out = torch.empty((), dtype=torch.float32, device=self.home)
        return out.copy_(v.reshape(())) if isinstance(v, torch.Tensor) else out.fill_(v)

    def dynamic(self) -> list[str]:
        """The names whose sources a step evaluates (callables, tensors): what it refreshes."""
        return list(self._dynamic)

    def resolve(self, step: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's values of callable and tensor sources (the plan computes, commit copies)."""
        values = {}
        for name, source in self._dynamic.items():
            if callable(source):
                values[name] = self.evaluate(name, step)
            elif isinstance(source, torch.Tensor):
                values[name] = source.to(torch.float32)
        return values

    def move(self, device: torch.device) -> None:
        """New variables on ``device`` (torch cannot move a tensor across device types in
        place); done once, when the first variable is seen, before any step."""
        self.home = device
        for name, public in list(self.variables.items()):
            moved = Variable._wrap(public.detach().to(device), False, name, None)
            self.variables[name] = moved
            self.tensors[name] = moved.detach()
            self._versions[name] = moved._version

    def __getstate__(self) -> dict[str, Any]:
        # A number assigned straight into a public variable (`opt.lr.assign(x)`) and not read
        # back yet is folded into the sources first: a copy's version counters start afresh.
        for name in self.sources:
            self.source(name)
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy / pickle copy the public variables and the engines' aliases separately:
        # make the aliases views of the (new) public variables again.
        self.__dict__.update(state)
        self._active = {}
        self._dynamic = {n: v for n, v in self.sources.items() if _evaluated(v)}
        for name, public in self.variables.items():
            self.tensors[name] = public.detach()
            self._versions[name] = public._version
