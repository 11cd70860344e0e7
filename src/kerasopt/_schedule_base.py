"""The schedule base: ``LearningRateSchedule`` and the declarations a schedule is made of.

A schedule class declares its constructor arguments (``name: type = arg(default=..., check=...)``,
in Keras's positional order); ``LearningRateSchedule.__init_subclass__`` collects them
(``declared_args``), and they give the constructor, the checks (with messages that name the
argument, also on assignment), ``get_config`` (in TF's key order), ``from_config`` and ``repr``.
The checks run at construction and assignment only, never in ``__call__``.

The concrete schedules and their call-time numerics are ``kerasopt._schedules``; serialization is
``kerasopt._serialization``.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from ._hyper import _is_number

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # torch depends on typing_extensions
    from typing_extensions import dataclass_transform

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
        >>> from kerasopt.optimizers.schedules import PiecewiseConstantDecay
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
