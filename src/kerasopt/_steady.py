"""The steady step's one pass: a step over the same known variables as a step before, with plain
dense gradients, is checked against the ``Composition`` cached for those variables instead of by
``PairChecks`` and ``unaliased`` (docs/architecture.md, "Steady steps"). Anything unusual
returns None, and the full checks in ``kerasopt._gradients`` run and name the problem.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._gradients import _PLAIN, FLOAT_DTYPES, Pairs
from ._types import Composition, Record

if TYPE_CHECKING:
    from ._slots import SlotStore

__all__ = ["compose", "steady"]

_SECOND = operator.itemgetter(1)
_PAIR_TYPES = (tuple, list)
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
    checked: list[tuple[Tensor, Tensor]] = []
    dense: list[tuple[Tensor, Tensor]] = []
    constrained: list[Tensor] = []
    storages: set[int] = set()
    for item, var, (dtype, device, shape) in zip(
        pairs, composition.variables, composition.signature
    ):
        if type(item) not in _PAIR_TYPES or len(item) != 2:
            return None
        grad = item[0]
        if (
            type(grad) not in _PLAIN
            or grad.layout is not torch.strided
            or grad.dtype is not dtype
            or var.dtype is not dtype
            or grad.shape != shape
            or var.shape != shape
            or grad.device != device
            or var.device != device
            or var.is_inference()
            or 0 in var.stride()  # an expanded view (`param.data = t.expand(...)`)
            or (grad.requires_grad and grad.is_leaf and not var.requires_grad)
        ):
            return None
        storages.add(var.untyped_storage().data_ptr())
        if getattr(var, "constraint", None) is not None:
            constrained.append(var)
        grad = grad.detach()
        checked.append((grad, var))
        dense.append((var, grad))
    if len(storages) < len(checked):
        return None  # views of one storage: `unaliased` tells them apart
    for i, (grad, var) in enumerate(checked):
        if grad.untyped_storage().data_ptr() in storages:
            grad = grad.clone()
            checked[i] = (grad, var)
            dense[i] = (var, grad)
    return composition, list(checked), dense, constrained


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
            or tuple(var.shape) != record.shape
        ):
            return None
        records.append(record)
        signature.append((var.dtype, var.device, var.shape))
        keyed.setdefault((var.device, var.dtype), var)
    return Composition(variables, records, signature, list(keyed.values()))
