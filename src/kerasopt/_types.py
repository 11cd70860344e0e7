"""The data types the machinery modules share, at the bottom of the import graph.

``Coefficients`` (what ``prepare`` computes and a rule reads), ``Plan`` (what plan hands to
commit), ``Record`` / ``Staged`` / ``Mark`` (the variable registry's entries and staged state) and
``StateError``. This module imports only torch and ``kerasopt.sparse``, so every other module can
import it and a reader can read the package bottom-up (docs/architecture.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .sparse import IndexedSlices

__all__ = ["Coefficients", "Composition", "Mark", "Plan", "Record", "Staged", "StateError"]

_ONES: dict[torch.dtype, Tensor] = {}


# ``addcdiv_`` computes a half or bfloat16 tensor in float32 and rounds once, where the separate
# operations (and TF's Eigen kernels) round after each: only these dtypes take the one pass.
_ONE_PASS_DTYPES = frozenset({torch.float32, torch.float64})


def _one_pass(var: Any, scale: Tensor) -> bool:
    """Whether ``Coefficients.add_product`` / ``sub_product`` / ``sub_quotient`` run as one
    ``addcdiv_``: eagerly (not while dynamo traces), coefficients on the CPU, a float32 or
    float64 tensor or list."""
    first = var[0] if isinstance(var, list) else var
    return (
        scale.device.type == "cpu"
        and first.dtype in _ONE_PASS_DTYPES
        and not torch.compiler.is_compiling()
    )


def _one(dtype: torch.dtype) -> Tensor:
    """A 0-d CPU one of ``dtype`` (made once, as a normal tensor under inference mode too)."""
    one = _ONES.get(dtype)
    if one is None:
        with torch.inference_mode(False):
            one = _ONES.setdefault(dtype, torch.ones((), dtype=dtype))
    return one


class Coefficients:
    """One (device, dtype)'s step coefficients: 0-d tensors ``prepare`` computes once per step and
    the rule reads (TF's ``apply_state`` entry).

    Each optimizer declares its own subclass with annotated fields, so the type checker sees a
    rule's reads: a misspelt coefficient fails ``mypy``, not a training step. Seed-era (TF 2.x)
    subclasses use it as TF's dict: ``apply_state[key]["lr_t"]``, ``apply_state[key].update(...)``.

    Example:
        >>> import torch
        >>> c = Coefficients(lr_t=torch.tensor(0.1))
        >>> c.momentum = torch.tensor(0.9)
        >>> sorted(c.keys()), float(c["lr_t"])
        (['lr_t', 'momentum'], 0.10000000149011612)
    """

    lr_t: Tensor  # the step's learning rate (schedule and legacy decay applied)
    weight_decay: Tensor  # set for the groups decoupled weight decay applies to
    # Keras 3's sparse steps (kerasopt.keras3): the rule gets the row sums of the gradient's
    # entries and, here, the row sums of their squares and absolute values (Keras squares each
    # entry before duplicate rows meet). None on every other step.
    grad_sq: Tensor | None = None
    grad_abs: Tensor | None = None

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def square(self, grad: Any) -> Any:
        """``grad * grad``, or the squares Keras 3 sums per row on a sparse step (a temporary
        the rule may modify in place)."""
        return grad * grad if self.grad_sq is None else self.grad_sq

    def absolute(self, grad: Any) -> Any:
        """``|grad|``, or the absolute values Keras 3 sums per row on a sparse step."""
        return grad.abs() if self.grad_abs is None else self.grad_abs

    def add_product(self, var: Any, x: Any, scale: Tensor) -> None:
        """``var += x * scale`` (TF's order), in place: TF's moment updates,
        ``m += (g - m) * (1 - beta_1)``.

        Eagerly on the CPU it is one ``addcdiv_`` by a 0-d one, ``var + (scale * x) / 1``: the
        same rounding (the product's operand order and a division by one are exact, and the
        division leaves no fused multiply-add to form), one pass over memory and no temporary.
        Elsewhere (see ``sub_quotient``) the two operations.
        """
        self._product(var, x, scale, 1.0)

    def average(self, var: Any, decay: Tensor, x: Any, scale: Tensor) -> None:
        """``var = var * decay + x * scale`` (TF's order), in place: TF's moving averages,
        ``v = v * beta_2 + g * g * (1 - beta_2)``. ``var.mul_(decay)`` then ``add_product``:
        each product and the sum round as in the four operations, in two passes over memory."""
        var.mul_(decay)
        self._product(var, x, scale, 1.0)

    def sub_product(self, var: Any, x: Any, scale: Tensor) -> None:
        """``var -= x * scale`` (TF's order), in place; as ``add_product``, with the scale's
        sign flipped (exact) in the one pass."""
        self._product(var, x, scale, -1.0)

    def _product(self, var: Any, x: Any, scale: Tensor, sign: float) -> None:
        # _one_pass and _one, inlined: the hot path (tests/test_hot_path.py) counts calls.
        many = isinstance(var, list)
        dtype = (var[0] if many else var).dtype
        if (
            dtype in _ONE_PASS_DTYPES
            and scale.device.type == "cpu"
            and not torch.compiler.is_compiling()
        ):
            one = _ONES.get(dtype)
            one = _one(dtype) if one is None else one
            var.addcdiv_(x, [one] * len(var) if many else one, value=sign * scale.item())
        elif sign > 0:
            var.add_(x * scale)
        else:
            var.sub_(x * scale)

    def sub_quotient(self, var: Any, numerator: Any, scale: Tensor, denominator: Any) -> None:
        """``var -= numerator * scale / denominator``, in that order (TF's dense kernels).

        Eagerly on the CPU it is one ``addcdiv_``, ``var + ((-scale) * numerator) /
        denominator``, which rounds exactly as the three operations do (negation and the
        product's operand order are exact, and a division sits between the product and the sum,
        so no fused multiply-add can form) in two passes over memory less. Compiled (inductor
        fuses the three anyway), on other devices (``.item()`` would wait for the device) and
        for half, bfloat16 and complex tensors (``addcdiv_`` rounds half and bfloat16 once, in
        float32), the three operations.
        """
        if _one_pass(var, scale):
            var.addcdiv_(numerator, denominator, value=-scale.item())
        else:
            var.sub_((numerator * scale).div_(denominator))

    def replace(self, **values: Any) -> Coefficients:
        """A copy with ``values`` set (the originals are left as they are)."""
        new = copy.copy(self)
        new.__dict__.update(values)
        return new

    # TF's dict protocol, for seed-era subclasses
    def __getitem__(self, key: str) -> Any:
        try:
            return self.__dict__[key]
        except KeyError:
            raise KeyError(f"no coefficient {key!r}; have {sorted(self.__dict__)}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.__dict__[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dict__)

    def __len__(self) -> int:
        return len(self.__dict__)

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def keys(self) -> Any:
        return self.__dict__.keys()

    def items(self) -> Any:
        return self.__dict__.items()

    def values(self) -> Any:
        return self.__dict__.values()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self.__dict__.setdefault(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        return self.__dict__.pop(key, *default)

    def copy(self) -> Coefficients:
        return self.replace()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(sorted(self.__dict__))})"


@dataclass(eq=False)
class Plan:
    """What plan hands to commit: the checked pairs, new variables' staged state, resolved
    hyperparameters."""

    dense: list[tuple[Tensor, Tensor]]
    sparse: list[tuple[Tensor, IndexedSlices]]
    new_vars: list[Tensor]
    hyper_values: dict[str, Tensor]
    update: bool  # False on a gradient-accumulation-only call
    raw_grads: list[
        tuple[Tensor | IndexedSlices, Tensor]
    ]  # after loss-scale division, before clipping
    staged: Staged | None = None  # state of the new variables, built and checked in plan
    foreign: bool = False  # a gradient or variable is a tensor subclass with its own overrides
    # a steady step (every variable known, dense, plain): what it reuses, and the variables
    # with a `constraint` now (None: not a steady step, read them from `raw_grads`)
    composition: Composition | None = None
    constrained: list[Tensor] | None = None


@dataclass(eq=False)
class Composition:
    """What a steady step over one list of known variables reuses from the last one.

    Built the first time a list of known, plain (no tensor subclass, no DTensor), non-empty
    variables is stepped with every gradient dense; kept in the optimizer's ``SlotStore``
    (keyed on the variables' identities and ``weight_decay``) and dropped whenever the registry
    changes (a new variable, a slot, loaded state, an undone creation). What a variable can
    change behind our back (``param.data = ...``: its dtype, device, shape, storage) is in
    ``signature`` and compared on every step (``_steady.steady``), which otherwise falls
    back to the full checks.
    """

    variables: list[Tensor]
    records: list[Record]
    #: per variable: (dtype, device, shape) when its slots were made
    signature: list[tuple[Any, Any, tuple[int, ...]]]
    #: one variable per (device, dtype), in order of appearance: what ``_prepare`` needs
    keyed: list[Tensor]
    #: the engines' groups of the step's dense pairs (``_engines.groups``), made on first use
    groups: list[Any] | None = None
    #: ``signature`` by column, compared a column at a time
    dtypes: list[Any] = field(default_factory=list)
    devices: list[Any] = field(default_factory=list)
    shapes: list[Any] = field(default_factory=list)
    #: (data pointers, strides, storages) of the variables when they were last found free of
    #: overlaps: unchanged, they still are (``_steady.steady``)
    verified: tuple[list[int], list[Any], frozenset[int]] | None = None


@dataclass(eq=False)
class Record:
    """What the optimizer keeps for one variable: its name, creation index and slots."""

    var: Tensor
    name: str
    index: int
    slots: dict[str, Tensor] = field(default_factory=dict)
    shape: tuple[int, ...] = ()  # the variable's shape when its slots were made
    # ... and its dtype and device (None: a record unpickled from before they were kept)
    dtype: torch.dtype | None = None
    device: torch.device | None = None


def made_for(record: Record, var: Tensor) -> bool:
    """Whether ``var`` still has the shape, dtype and device its slots were made for
    (``param.data = ...``, ``model.double()`` or ``model.to(device)`` after the slots were made
    change them)."""
    return (
        tuple(var.shape) == record.shape
        and (record.dtype is None or var.dtype == record.dtype)
        and (record.device is None or var.device == record.device)
    )


@dataclass(eq=False)
class Staged:
    """What creating the new variables' state adds (records, slots — loaded state already
    adopted into them — optimizer-level weights): built in plan, installed by commit."""

    records: list[Record]
    slot_order: list[tuple[Record, str]]
    slot_names: list[str]
    built: bool
    opt_weights: list[tuple[str, Tensor]]
    pending: dict[str, dict[str, Tensor]]


# (slot count, rule slot names, built, optimizer-level weight count)
Mark = tuple[int, list[str], bool, int, dict[str, dict[str, Tensor]]]


class StateError(ValueError):
    """A state dict does not fit this optimizer (the message names the key)."""
