"""TensorList: a list of same-device, same-dtype tensors whose methods run as ``torch._foreach_*``.

An optimizer's update rule is written once against the ``torch.Tensor`` method API (``a * b``,
``x.sqrt()``, ``m.add_(...)``). Run on plain tensors it is the per-tensor engine; run on
``TensorList`` objects the same code issues one ``_foreach`` call per operation for the whole
group. Operations with no ``_foreach`` overload fall back to a Python loop of the same aten op,
so the two engines stay bit-identical (``a - s`` is computed as ``a + (-s)``, which is exact in
IEEE arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import torch
from torch import Tensor

Operand = Union["TensorList", Tensor, float, int]


def _is_scalar_tensor(x: object) -> bool:
    return isinstance(x, Tensor) and x.dim() == 0


class TensorList:
    """A group of tensors that behaves like one tensor under the rule's arithmetic."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.tensors: list[Tensor] = list(tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    def __getitem__(self, i: int) -> Tensor:
        return self.tensors[i]

    # -- helpers -----------------------------------------------------------------------------
    def _loop(self, fn: Callable[..., Tensor], *others: Operand) -> TensorList:
        cols = [o.tensors if isinstance(o, TensorList) else [o] * len(self) for o in others]
        return TensorList([fn(t, *row) for t, *row in zip(self.tensors, *cols)])

    def _binary(
        self, other: Operand, foreach: Callable[..., Any], op: Callable[..., Tensor]
    ) -> Any:
        if isinstance(other, TensorList):
            return foreach(self.tensors, other.tensors)
        if isinstance(other, (int, float)) or _is_scalar_tensor(other):
            return foreach(self.tensors, other)
        return self._loop(op, other).tensors

    # -- arithmetic (out of place) -----------------------------------------------------------
    def __add__(self, other: Operand) -> TensorList:
        return TensorList(self._binary(other, torch._foreach_add, torch.add))

    __radd__ = __add__

    def __sub__(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_sub(self.tensors, other.tensors))
        if isinstance(other, Tensor):
            return TensorList(torch._foreach_add(self.tensors, other.neg()))
        return TensorList(torch._foreach_sub(self.tensors, other))

    def __rsub__(self, other: Operand) -> TensorList:
        # s - x == (-x) + s exactly.
        return TensorList(torch._foreach_neg(self.tensors)) + other

    def __mul__(self, other: Operand) -> TensorList:
        return TensorList(self._binary(other, torch._foreach_mul, torch.mul))

    __rmul__ = __mul__

    def __truediv__(self, other: Operand) -> TensorList:
        return TensorList(self._binary(other, torch._foreach_div, torch.div))

    def __rtruediv__(self, other: Operand) -> TensorList:
        return self._loop(lambda t, o: torch.div(o, t), other)

    def __neg__(self) -> TensorList:
        return TensorList(torch._foreach_neg(self.tensors))

    def __pow__(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_pow(self.tensors, other.tensors))
        if isinstance(other, (int, float)):
            return TensorList(torch._foreach_pow(self.tensors, other))
        return self._loop(torch.pow, other)

    def __gt__(self, other: Operand) -> TensorList:
        return self._loop(torch.gt, other)

    def sqrt(self) -> TensorList:
        return TensorList(torch._foreach_sqrt(self.tensors))

    def rsqrt(self) -> TensorList:
        return TensorList(torch._foreach_rsqrt(self.tensors))

    def abs(self) -> TensorList:
        return TensorList(torch._foreach_abs(self.tensors))

    def sign(self) -> TensorList:
        return TensorList(torch._foreach_sign(self.tensors))

    def square(self) -> TensorList:
        return TensorList(torch._foreach_mul(self.tensors, self.tensors))

    def maximum(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_maximum(self.tensors, other.tensors))
        return self._loop(torch.maximum, other)

    def minimum(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_minimum(self.tensors, other.tensors))
        return self._loop(torch.minimum, other)

    def clamp(self, min: Operand | None = None, max: Operand | None = None) -> TensorList:
        return self._loop(lambda t: torch.clamp(t, min, max))  # type: ignore[arg-type]

    def where(self, condition: TensorList, other: Operand) -> TensorList:
        return self._loop(lambda t, c, o: torch.where(c, t, o), condition, other)

    def pow(self, other: Operand) -> TensorList:
        return self.__pow__(other)

    def zeros_like(self) -> TensorList:
        return TensorList([torch.zeros_like(t) for t in self.tensors])

    # -- in place ----------------------------------------------------------------------------
    def add_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_add_(self.tensors, other.tensors)
        else:
            torch._foreach_add_(self.tensors, other)
        return self

    def sub_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_sub_(self.tensors, other.tensors)
        elif isinstance(other, Tensor):
            torch._foreach_add_(self.tensors, other.neg())
        else:
            torch._foreach_sub_(self.tensors, other)
        return self

    def mul_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_mul_(self.tensors, other.tensors)
        else:
            torch._foreach_mul_(self.tensors, other)
        return self

    def div_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_div_(self.tensors, other.tensors)
        else:
            torch._foreach_div_(self.tensors, other)
        return self

    def copy_(self, other: Operand) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_copy_(self.tensors, other.tensors)
        else:
            for t in self.tensors:
                t.copy_(other)  # type: ignore[arg-type]
        return self

    def zero_(self) -> TensorList:
        torch._foreach_zero_(self.tensors)
        return self
