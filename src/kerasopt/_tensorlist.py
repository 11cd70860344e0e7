"""TensorList: a list of same-device, same-dtype tensors whose methods run as ``torch._foreach_*``.

An optimizer's update rule is written once against the ``torch.Tensor`` method API (``a * b``,
``x.sqrt()``, ``m.add_(...)``). Run on plain tensors it is the per-tensor engine; run on
``TensorList`` objects the same code issues one ``_foreach`` call per operation for the whole
group. Operations with no ``_foreach`` overload fall back to a Python loop of the same aten op,
so the two engines stay bit-identical (``a - s`` is computed as ``a + (-s)``, which is exact in
IEEE arithmetic).

``TensorList`` is a ``list`` subclass: ``torch._foreach_*`` takes it as it is and returns a list
that becomes the next ``TensorList`` without a Python-level constructor, so an operation of the
rule costs one Python frame and one ``_foreach`` call. The ``list`` behaviour that would make a
rule silently wrong is switched off: ``+``/``*`` are the tensors' arithmetic (never
concatenation or repetition), ``+=`` and friends compute out of place as before, ``==`` is
identity, and ``sort`` (a ``Tensor`` method too) and item assignment raise.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from typing import Any, Union

import torch
from torch import Tensor

Operand = Union["TensorList", Tensor, float, int]


class TensorList(list[Tensor]):
    """A group of tensors that behaves like one tensor under the rule's arithmetic."""

    __slots__ = ()

    @property
    def tensors(self) -> list[Tensor]:
        """The tensors (this list itself)."""
        return self

    # list's own meanings of these operators would make a rule silently wrong
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __lt__(self, other: Any) -> Any:
        return NotImplemented

    __le__ = __ge__ = __lt__

    def sort(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("TensorList does not support sort()")

    def __setitem__(self, index: Any, value: Any) -> None:
        # (a rule's `x[mask] = y` is tensor indexing, which a TensorList does not support)
        raise TypeError("TensorList does not support item assignment")

    def __delitem__(self, index: Any) -> None:
        raise TypeError("TensorList does not support item deletion")

    # -- helpers -----------------------------------------------------------------------------
    def _new(self, name: str, *args: Any) -> TensorList:
        """The out-of-place ``torch._foreach_<name>`` of this list (``args``: its other operand)."""
        return TensorList(_FOREACH[name](self, *args))

    def _loop(self, fn: Callable[..., Tensor], *others: Operand) -> TensorList:
        cols = [o if isinstance(o, TensorList) else [o] * len(self) for o in others]
        return TensorList([fn(t, *row) for t, *row in zip(self, *cols)])

    # -- arithmetic (out of place) -----------------------------------------------------------
    # A TensorList, a Python number or a 0-d tensor is a `_foreach` operand as it is; anything
    # else (a tensor broadcast against each of the group's) loops over the aten op.
    def __add__(self, other: Operand) -> TensorList:  # type: ignore[override]
        if isinstance(other, (TensorList, int, float)) or (
            isinstance(other, Tensor) and other.dim() == 0
        ):
            return self._new("add", other)
        return self._loop(torch.add, other)

    __radd__ = __add__
    __iadd__ = __add__  # type: ignore[assignment]  # out of place, as before (no list extend)

    def __sub__(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return self._new("sub", other)
        if isinstance(other, Tensor):
            return self._new("add", other.neg())
        return self._new("sub", other)

    __isub__ = __sub__

    def __rsub__(self, other: Operand) -> TensorList:
        # s - x == (-x) + s exactly.
        return -self + other

    def __mul__(self, other: Operand) -> TensorList:  # type: ignore[override]
        if isinstance(other, (TensorList, int, float)) or (
            isinstance(other, Tensor) and other.dim() == 0
        ):
            return self._new("mul", other)
        return self._loop(torch.mul, other)

    __rmul__ = __mul__  # type: ignore[assignment]
    __imul__ = __mul__  # type: ignore[assignment]

    def __truediv__(self, other: Operand) -> TensorList:
        if isinstance(other, (TensorList, int, float)) or (
            isinstance(other, Tensor) and other.dim() == 0
        ):
            return self._new("div", other)
        return self._loop(torch.div, other)

    __itruediv__ = __truediv__

    def __rtruediv__(self, other: Operand) -> TensorList:
        return self._loop(lambda t, o: torch.div(o, t), other)

    def __neg__(self) -> TensorList:
        return self._new("neg")

    def __pow__(self, other: Operand) -> TensorList:
        if isinstance(other, (TensorList, int, float)):
            return self._new("pow", other)
        return self._loop(torch.pow, other)

    def __gt__(self, other: Operand) -> TensorList:  # type: ignore[override]
        return self._loop(torch.gt, other)

    def sqrt(self) -> TensorList:
        return self._new("sqrt")

    def rsqrt(self) -> TensorList:
        return self._new("rsqrt")

    def abs(self) -> TensorList:
        return self._new("abs")

    def sign(self) -> TensorList:
        return self._new("sign")

    def square(self) -> TensorList:
        return self._new("mul", self)

    def maximum(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return self._new("maximum", other)
        return self._loop(torch.maximum, other)

    def minimum(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return self._new("minimum", other)
        return self._loop(torch.minimum, other)

    def clamp(self, min: Operand | None = None, max: Operand | None = None) -> TensorList:
        return self._loop(lambda t: torch.clamp(t, min, max))  # type: ignore[arg-type]

    def where(self, condition: TensorList, other: Operand) -> TensorList:
        return self._loop(lambda t, c, o: torch.where(c, t, o), condition, other)

    def pow(self, other: Operand) -> TensorList:
        return self.__pow__(other)

    def zeros_like(self) -> TensorList:
        return TensorList([torch.zeros_like(t) for t in self])

    # -- in place ----------------------------------------------------------------------------
    def add_(self, other: Operand) -> TensorList:
        torch._foreach_add_(self, other)
        return self

    def sub_(self, other: Operand) -> TensorList:
        if isinstance(other, Tensor):
            torch._foreach_add_(self, other.neg())
        else:
            torch._foreach_sub_(self, other)
        return self

    def mul_(self, other: Operand) -> TensorList:
        torch._foreach_mul_(self, other)
        return self

    def addcdiv_(
        self, tensor1: TensorList, tensor2: list[Tensor], value: float = 1.0
    ) -> TensorList:
        torch._foreach_addcdiv_(self, tensor1, tensor2, value)
        return self

    def div_(self, other: Operand) -> TensorList:
        torch._foreach_div_(self, other)
        return self

    def copy_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_copy_(self, other)
        else:
            for t in self:
                t.copy_(other)  # type: ignore[arg-type]
        return self

    def zero_(self) -> TensorList:
        torch._foreach_zero_(self)
        return self


_OPS = (
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "sqrt",
    "rsqrt",
    "abs",
    "sign",
    "maximum",
    "minimum",
)
_FOREACH: dict[str, Callable[..., list[Tensor]]] = {
    n: getattr(torch, f"_foreach_{n}") for n in _OPS
}
_ATEN: dict[str, Callable[..., Tensor]] = {n: getattr(torch, n) for n in _OPS}
_SHAPE = operator.attrgetter("shape")


class Scratch:
    """Buffers for one group's temporaries, kept from step to step (``PooledList``).

    A ``PooledList`` that only the scratch still refers to is free: the rule has dropped the
    temporary it was. A step of the foreach engine then allocates nothing: fresh temporaries of
    100 KB and more cost page faults on every step (glibc maps and unmaps them), which made
    Adam's foreach step 1.6x slower than with these buffers (docs/performance.md).
    """

    __slots__ = ("free",)

    def __init__(self) -> None:
        self.free: dict[tuple[Any, ...], list[PooledList]] = {}

    def take(self, like: PooledList) -> TensorList:
        """A free list of buffers shaped as ``like``'s tensors (new when none is)."""
        key = (like[0].dtype, *map(_SHAPE, like))
        lists = self.free.setdefault(key, [])
        for lst in lists:
            if sys.getrefcount(lst) == _FREE:  # nobody but `lists` holds it
                return lst
        fresh = [torch.empty_like(t) for t in like]
        if len(lists) >= MAX_LISTS:
            # (a rule that keeps its temporaries: they are its own, as on a plain TensorList)
            return TensorList(fresh)
        lst = pooled(fresh, self)
        lists.append(lst)
        return lst


#: the most buffer lists a `Scratch` keeps per shape (a rule holds two or three at once)
MAX_LISTS = 8


def _free_count() -> int:
    """``sys.getrefcount`` of a list that only its container holds, read as ``Scratch.take``
    reads it (the interpreter's own references differ between Python versions)."""
    container: list[list[Any]] = [[]]
    for lst in container:
        return sys.getrefcount(lst)
    raise AssertionError


_FREE = _free_count()


class PooledList(TensorList):
    """A ``TensorList`` whose temporaries are ``Scratch`` buffers: each out-of-place operation
    writes into free buffers with the same aten op (``torch.sub(a, b, out=o)``, the kernel that
    ``torch._foreach_sub`` runs per tensor on CPU), so the numbers are ``TensorList``'s bit for bit.

    Only real floating lists whose other operand is a real number, or a 0-d tensor or a list of
    the same dtype, are pooled (anything else could promote to another dtype than the
    buffer's); the rest run as ``TensorList`` does.
    """

    __slots__ = ("scratch",)
    scratch: Scratch

    def _new(self, name: str, *args: Any) -> TensorList:
        if not self or not self[0].is_floating_point():
            return TensorList(_FOREACH[name](self, *args))
        fn = _ATEN[name]
        if not args:
            out = self.scratch.take(self)
            for t, o in zip(self, out):
                fn(t, out=o)
            return out
        other = args[0]
        if isinstance(other, list):
            if not isinstance(other, TensorList) or other[0].dtype is not self[0].dtype:
                return TensorList(_FOREACH[name](self, *args))
            out = self.scratch.take(self)
            for t, u, o in zip(self, other, out):
                fn(t, u, out=o)
            return out
        if isinstance(other, complex) or (
            isinstance(other, Tensor) and (other.dim() != 0 or other.dtype is not self[0].dtype)
        ):
            # (a 0-d tensor of another dtype promotes a 0-d member of the list)
            return TensorList(_FOREACH[name](self, *args))
        out = self.scratch.take(self)
        for t, o in zip(self, out):
            fn(t, other, out=o)
        return out


def pooled(tensors: Any, scratch: Scratch) -> PooledList:
    """A ``PooledList`` of ``tensors`` whose temporaries ``scratch`` holds."""
    lst = PooledList(tensors)
    lst.scratch = scratch
    return lst
