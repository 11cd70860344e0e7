"""The steady step's one pass: a step over the same known variables as a step before, with plain
dense gradients, is checked against the ``Composition`` cached for those variables instead of by
``PairChecks`` and ``unaliased`` (docs/architecture.md, "Steady steps"). Anything unusual
returns None, and the full checks in ``kerasopt._gradients`` run and name the problem.
"""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._gradients import _PLAIN, FLOAT_DTYPES, Pairs
from ._types import Composition, Record, made_for

if TYPE_CHECKING:
    from ._slots import SlotStore

__all__ = ["compose", "steady"]

_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_PAIR_SET = frozenset({tuple, list})
_TUPLE = {tuple}
_CONSTRAINT = itertools.repeat("constraint")
_NONE = itertools.repeat(None)
_LAYOUT = operator.attrgetter("layout")
_STRIDED = {torch.strided}
_DTYPE = operator.attrgetter("dtype")
_SHAPE = operator.attrgetter("shape")
_DEVICE = operator.attrgetter("device")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


_STORAGE_OF = Tensor.untyped_storage
_ADDRESS = torch.UntypedStorage.data_ptr


_MAX_COMPOSITIONS = 16


def steady(
    pairs: list[Any], store: SlotStore, weight_decay: Any
) -> tuple[Composition, Pairs, list[tuple[Tensor, Tensor]], list[Tensor]] | None:
    """A steady step's ``Composition``, checked pairs, the same as (variable, gradient) pairs
    (the plan's ``dense``), and its constrained variables; None when the step is not one (then ``PairChecks.pairs`` and ``unaliased`` run, and name
    whatever is wrong).

    A steady step lists known variables that the ``Composition`` (looked up by their
    identities, built on first sight) holds, each with a plain dense gradient of the variable's
    dtype, shape and device. One pass over the pairs makes the checks ``PairChecks.grad`` and
    ``unaliased`` make for that case: the variable still has the dtype, device and shape its
    slots were made for (``param.data = ...`` may change them), the pair is not swapped, no two
    variables share a storage, and a gradient sharing a variable's storage is copied.
    """
    try:
        variables = list(map(_SECOND, pairs))
        key = (weight_decay, *map(id, variables))
    except (TypeError, IndexError, KeyError):
        return None
    composition = store.compositions.get(key)
    if composition is None:
        composition = compose(store, variables)
        if composition is None:
            return None
        if len(store.compositions) >= _MAX_COMPOSITIONS:
            store.compositions.clear()
        store.compositions[key] = composition
    n = len(variables)
    if len(pairs) != n or not set(map(type, pairs)) <= _PAIR_SET or set(map(len, pairs)) != {2}:
        return None
    grads: list[Tensor] = list(map(_FIRST, pairs))
    # One C-level pass per property (the same checks as a per-pair loop, at ~0.1 us a tensor,
    # allocating no lists of tuples, whose garbage collections would cost more than the checks):
    # the gradient is a plain dense tensor of the variable's dtype, shape and device, and the
    # variable still has the dtype, device and shape its slots were made for.
    shapes = composition.shapes
    if (
        not set(map(type, grads)) <= _PLAIN
        or set(map(_LAYOUT, grads)) != _STRIDED
        or list(map(_DTYPE, grads)) != composition.dtypes
        or list(map(_DTYPE, variables)) != composition.dtypes
        or not all(map(operator.eq, map(_SHAPE, grads), shapes))
        or not all(map(operator.eq, map(_SHAPE, variables), shapes))
        or list(map(_DEVICE, grads)) != composition.devices
        or list(map(_DEVICE, variables)) != composition.devices
        or any(map(Tensor.is_inference, variables))
    ):
        return None
    pointers = list(map(Tensor.data_ptr, variables))
    verified = composition.verified
    if (
        verified is not None
        and verified[0] == pointers
        and all(map(operator.eq, map(Tensor.stride, variables), verified[1]))
    ):
        storages = verified[2]
    else:
        strides = list(map(Tensor.stride, variables))
        if any(0 in stride for stride in strides):
            return None  # an expanded view (`param.data = t.expand(...)`)
        storages = frozenset(map(_ADDRESS, map(_STORAGE_OF, variables)))
        if len(storages) < n and not _disjoint_windows(variables):
            return None  # overlapping views of one storage: `unaliased` names them
        composition.verified = (pointers, strides, storages)
    same = True
    if any(map(_REQUIRES_GRAD, grads)):
        for grad, var in zip(grads, variables):
            if grad.requires_grad and grad.is_leaf and not var.requires_grad:
                return None
        grads = list(map(Tensor.detach, grads))
        same = False
    constrained = list(itertools.compress(variables, map(getattr, variables, _CONSTRAINT, _NONE)))
    # a gradient sharing a variable's storage is copied (the rule writes the variable first);
    # one C-level set test first, the per-gradient loop only when some gradient does
    grad_storages = list(map(_ADDRESS, map(_STORAGE_OF, grads)))
    if not storages.isdisjoint(grad_storages):
        for i, storage in enumerate(grad_storages):
            if storage in storages:
                grads[i] = grads[i].clone()
                same = False
    # the caller's (gradient, variable) tuples where nothing was replaced
    checked = (
        list(pairs) if same and set(map(type, pairs)) == _TUPLE else list(zip(grads, variables))
    )
    dense = list(zip(variables, grads))
    return composition, checked, dense, constrained


def _disjoint_windows(variables: list[Tensor]) -> bool:
    """Whether variables that share storages are contiguous windows of them that do not overlap
    (the flat engine's layout, or parameters packed by hand): what ``unaliased`` accepts of
    them. Anything else goes to ``unaliased``, which names the overlap."""
    spans = []
    for var in variables:
        if not var.is_contiguous():
            return False
        start = var.data_ptr()
        spans.append((start, start + var.numel() * var.element_size()))
    spans.sort()
    return all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def compose(store: SlotStore, variables: list[Tensor]) -> Composition | None:
    """The ``Composition`` of steps over ``variables``: None unless each is known, listed once,
    a plain (no subclass of its own, no DTensor) floating leaf tensor with elements (not an
    inference tensor, not on the meta device), of the shape its slots were made for: what
    ``PairChecks.grad`` checks of a variable, once. (Variables built but refused by the
    checks, e.g. by ``kerasopt.optim``, which builds before it plans, stay refused.)"""
    if not store.built or len(set(map(id, variables))) != len(variables):
        return None
    records: list[Record] = []
    signature: list[tuple[Any, Any, tuple[int, ...]]] = []
    keyed: dict[tuple[Any, Any], Tensor] = {}
    for var in variables:
        record = store.by_id.get(id(var))
        if (
            record is None
            or type(var) not in _PLAIN
            or var.dtype not in FLOAT_DTYPES  # (complex variables: the full checks)
            or not var.is_leaf
            or var.is_inference()
            or var.numel() == 0
            or var.device.type == "meta"
            or not made_for(record, var)
        ):
            return None
        records.append(record)
        signature.append((var.dtype, var.device, var.shape))
        keyed.setdefault((var.device, var.dtype), var)
    return Composition(
        variables,
        records,
        signature,
        list(keyed.values()),
        dtypes=[d for d, _, _ in signature],
        devices=[d for _, d, _ in signature],
        shapes=[torch.Size(s) for _, _, s in signature],
    )
