"""The variable registry: which variables an optimizer has seen, their names and their slots.

One ``SlotStore`` per optimizer holds

- a ``Record`` per variable (keyed by ``id``): its unique name, creation index, slots and the
  shape its slots were made for;
- the slot creation order (TF's ``weights`` order) and the rule's slot names;
- the optimizer-level weights (Nadam's ``momentum_cache``);
- name hints (``named_parameters()`` keys, dict keys) for variables not seen yet;
- state loaded for variables not seen yet (adopted when they first appear, see ``_state``);
- the engines' group cache and the steady steps' ``Composition``s, which every change of the
  registry invalidates (``_changed``).

State creation is staged: ``stage`` runs the optimizer's creation (its hooks may raise, and
loaded state is checked against the new slots), records what it added and takes it back, so
plan changes nothing; ``install`` makes the staged state visible in commit with list and dict
updates only. ``mark`` / ``forget`` undo a creation back to a mark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from . import _distributed
from ._features import FEATURE_SLOTS
from ._hyper import number_value
from ._types import Composition, Mark, Record, Staged
from .variables import Variable

V = TypeVar("V")


def var_label(var: Tensor, names: ByIdentity[str] | None = None) -> str:
    """A variable's name for messages: a hint, its ``name``, or its shape and dtype."""
    hint = None if names is None else names.get(var)
    if hint is not None:
        return hint
    name = getattr(var, "name", None)
    if isinstance(name, str):
        return name
    return f"<tensor shape={tuple(var.shape)} dtype={var.dtype}>"


def _hyper_number(value: Any) -> bool:
    return number_value(value) is not None and not isinstance(value, Tensor)


# (a first step under the caller's `torch.inference_mode()` would otherwise make inference
# tensors of its slots, which no later step outside inference mode could update)
@torch.inference_mode(False)
def new_slot(
    var: Tensor,
    var_name: str,
    slot_name: str,
    initializer: Any = "zeros",
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A new slot tensor for ``var`` (see ``Optimizer.add_slot`` for the initializers), in
    ``dtype`` (default: the variable's)."""
    shape = tuple(var.shape) if shape is None else tuple(shape)
    dtype = var.dtype if dtype is None else dtype
    kw: dict[str, Any] = {"dtype": dtype, "device": var.device}
    sharded = _distributed.is_dtensor(var) and shape == tuple(var.shape)
    if sharded and (isinstance(initializer, str) or _hyper_number(initializer)):
        # FSDP2: the slot is sharded like its parameter (each rank holds its shard only)
        if initializer not in ("zeros", "ones") and isinstance(initializer, str):
            raise ValueError(f"Unknown slot initializer {initializer!r} for slot {slot_name!r}")
        fill = {"zeros": 0.0, "ones": 1.0}.get(initializer, initializer)
        slot = _distributed.zeros_like(var, float(fill)).to(dtype)
    elif isinstance(initializer, str):
        if initializer not in ("zeros", "ones"):
            raise ValueError(f"Unknown slot initializer {initializer!r} for slot {slot_name!r}")
        slot = torch.zeros(shape, **kw) if initializer == "zeros" else torch.ones(shape, **kw)
    elif isinstance(initializer, Tensor):
        slot = initializer.detach().to(**kw).expand(shape).clone()
    elif callable(initializer):
        slot = torch.as_tensor(initializer(shape, dtype)).to(**kw).expand(shape).clone()
    else:
        slot = torch.full(shape, float(initializer), **kw)
    if sharded and not _distributed.is_dtensor(slot):
        slot = _distributed.like(slot, var)
    if not _distributed.is_dtensor(slot):
        # Slots are variables, as in TF (`get_slot(v, "m").assign(...)` in seed-era
        # subclasses): a kerasopt.Variable over the same storage, no copy.
        slot = Variable._wrap(slot, False, f"{var_name}/{slot_name}", None)
    return slot


class ByIdentity(Generic[V]):
    """Values keyed by a variable's identity. It keeps the variables as well, so that a copy
    (``copy.deepcopy``, pickle) is keyed by the copied variables, not by stale ids."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[Tensor, V]] = ()) -> None:
        self._items = {id(var): (var, value) for var, value in items}

    def __contains__(self, var: object) -> bool:
        return id(var) in self._items

    def get(self, var: Tensor) -> V | None:
        item = self._items.get(id(var))
        return None if item is None else item[1]

    def __setitem__(self, var: Tensor, value: V) -> None:
        self._items[id(var)] = (var, value)

    def clear(self) -> None:
        self._items.clear()

    def __getstate__(self) -> list[tuple[Tensor, V]]:
        return list(self._items.values())

    def __setstate__(self, items: list[tuple[Tensor, V]]) -> None:
        self._items = {id(var): (var, value) for var, value in items}


class SlotStore:
    """The registry of one optimizer's variables, slots and optimizer-level weights.

    Args:
        adopt: copies state loaded for variables not seen yet into their new slots (``_state``'s
            ``adopt_pending``), called with the store, the new records and the owner's name; None
            for a registry that only names variables.
    """

    def __init__(self, adopt: Callable[[SlotStore, list[Record], str], None] | None = None) -> None:
        self._adopt = adopt
        self.by_id: dict[int, Record] = {}  # id(var) -> Record, in creation order
        self._used_names: set[str] = set()
        self._slot_names: list[str] = []
        self._slot_order: list[tuple[Record, str]] = []
        self.opt_weights: list[tuple[str, Tensor]] = []
        # (by identity: a copy keeps the names `build(model)` gave variables not built yet)
        self.hints: ByIdentity[str] = ByIdentity()
        self.built = False
        self.pending: dict[str, dict[str, Tensor]] = {}  # loaded state of unseen variables
        self.pending_strict = True
        # The engines' groups per composition (kerasopt._engines.groups); any change here
        # invalidates it.
        self.group_cache: dict[tuple[Any, ...], list[Any]] = {}
        # What a steady step over one list of known variables reuses, keyed on
        # (weight_decay, *their ids) (kerasopt._steady.steady); dropped like the group cache.
        self.compositions: dict[tuple[Any, ...], Composition] = {}

    # copy.deepcopy / pickle: the copy's records hold copies of the variables, so the index by
    # id is rebuilt for them, and the caches keyed by the originals' ids are not carried over.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["group_cache"], state["compositions"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.by_id = {id(record.var): record for record in state["by_id"].values()}

    def _changed(self) -> None:
        """The registry changed: what was derived from it is recomputed at the next step."""
        self.group_cache.clear()
        self.compositions.clear()

    # ------------------------------------------------------------------------------------------
    # reading
    def records(self) -> list[Record]:
        """Every variable's record, in creation order."""
        return list(self.by_id.values())

    def record_of(self, var: Tensor) -> Record | None:
        return self.by_id.get(id(var))

    def slots_of(self, var: Tensor) -> dict[str, Tensor]:
        """``var``'s slots by name (KeyError for a variable not seen)."""
        return self.by_id[id(var)].slots

    def slot_names(self) -> list[str]:
        """The rule's slot names, in first-creation order."""
        return list(self._slot_names)

    def weights(self) -> list[Tensor]:
        """Optimizer-level weights, then the rule's slots in creation order, then feature state."""
        rule = [r.slots[s] for r, s in self._slot_order if s not in FEATURE_SLOTS]
        features = [r.slots[s] for kind in FEATURE_SLOTS for r, s in self._slot_order if s == kind]
        return [*(t for _, t in self.opt_weights), *rule, *features]

    def name_of(self, var: Tensor) -> str:
        record = self.by_id.get(id(var))
        return record.name if record else var_label(var, self.hints)

    def new_name(self, var: Tensor, index: int) -> str:
        """The name a variable gets when first seen as the ``index``-th variable."""
        name = self.hints.get(var) or getattr(var, "name", None)
        return name if isinstance(name, str) else f"variable_{index}"

    def pending_slot(self, var: Tensor, index: int, slot_name: str) -> Tensor | None:
        """Loaded state for slot ``slot_name`` of an unseen variable, were it the ``index``-th."""
        return self.pending.get(self.new_name(var, index), {}).get(slot_name)

    # ------------------------------------------------------------------------------------------
    # writing
    def _unique_name(self, name: str) -> str:
        """``name``, or ``name_1``, ``name_2``... if another variable has it (TF's unique
        variable names): two unnamed ``kerasopt.Variable``s get distinct state keys."""
        if name not in self._used_names:
            return name
        k = 1
        while f"{name}_{k}" in self._used_names:
            k += 1
        return f"{name}_{k}"

    def register(self, var: Tensor) -> Record:
        """The record of ``var``, created (with a unique name) when it is first seen."""
        record = self.by_id.get(id(var))
        if record is None:
            index = len(self.by_id)
            record = Record(var, self._unique_name(self.new_name(var, index)), index)
            record.shape = tuple(var.shape)
            record.dtype, record.device = var.dtype, var.device
            self.by_id[id(var)] = record
            self._used_names.add(record.name)
        return record

    def add_slot(self, record: Record, slot_name: str, slot: Tensor) -> None:
        record.slots[slot_name] = slot
        if slot_name not in self._slot_names and slot_name not in FEATURE_SLOTS:
            self._slot_names.append(slot_name)
        self._slot_order.append((record, slot_name))
        self._changed()

    def slot_for(
        self,
        record: Record,
        slot_name: str,
        initializer: Any,
        shape: Sequence[int] | None,
        float32: bool,
    ) -> Tensor:
        """``record``'s slot ``slot_name``, created (once) from ``initializer`` (TF's
        ``add_slot``); ``float32``: a float16/bfloat16 variable gets a float32 slot."""
        if slot_name in record.slots:
            return record.slots[slot_name]
        var = record.var
        half = var.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if float32 and half else var.dtype
        slot = new_slot(var, record.name, slot_name, initializer, shape, dtype)
        self.add_slot(record, slot_name, slot)
        return slot

    def slot(
        self, var: Tensor, slot_name: str, owner: str, aliases: dict[str, str] | None = None
    ) -> Tensor:
        """``var``'s slot ``slot_name`` (or the slot it is an alias of: TF's ``get_slot``); a
        KeyError names the variable and the slot when either is unknown (``owner`` names the
        optimizer)."""
        record = self.by_id.get(id(var))
        if record is None:
            raise KeyError(
                f"Variable {var_label(var)} has no slots in optimizer {owner!r}: it has not "
                "been seen by this optimizer yet."
            )
        name = (aliases or {}).get(slot_name, slot_name)
        if name not in record.slots:
            raise KeyError(
                f"Optimizer {owner!r} has no slot {slot_name!r} for variable {record.name!r}; "
                f"its slots are {sorted(record.slots)}."
            )
        return record.slots[name]

    def add_weight(self, name: str, tensor: Tensor) -> None:
        self.opt_weights.append((name, tensor))

    def move_weights(self, device: torch.device) -> None:
        self.opt_weights[:] = [(n, t.to(device)) for n, t in self.opt_weights]

    def hint(self, var: Tensor, name: str) -> None:
        """Names ``var`` ``name`` when it is first seen (unless it already has a hint)."""
        if var not in self.hints:
            self.hints[var] = name

    def set_pending(self, pending: dict[str, dict[str, Tensor]], strict: bool) -> None:
        self.pending = pending
        self.pending_strict = strict
        self._changed()

    def flatten(self, var_list: Any) -> list[Tensor]:
        """The tensors of ``var_list``, noting the names an ``nn.Module`` or a dict gives them."""
        out: list[Tensor] = []
        if isinstance(var_list, nn.Module):
            for pname, p in var_list.named_parameters():
                if p.requires_grad:
                    self.hint(p, pname)
                    out.append(p)
            return out
        if isinstance(var_list, Tensor):
            return [var_list]
        if isinstance(var_list, dict):
            for key, v in var_list.items():
                if isinstance(v, Tensor):
                    self.hint(v, str(key))
            return self.flatten(list(var_list.values()))
        if callable(var_list):
            return self.flatten(var_list())
        if isinstance(var_list, Iterable):
            for item in var_list:
                out.extend(self.flatten(item))
            return out
        raise TypeError(
            "`var_list` must be a tensor, a list/tuple/generator of tensors, an nn.Module, a dict "
            f"of named tensors or a callable returning one of these; got {type(var_list).__name__}."
        )

    # ------------------------------------------------------------------------------------------
    # creation: all or nothing
    def mark(self) -> Mark:
        return (
            len(self._slot_order),
            list(self._slot_names),
            self.built,
            len(self.opt_weights),
            dict(self.pending),  # creation adopts (and removes) loaded state: forget gives it back
        )

    def forget(self, new_vars: Sequence[Tensor], mark: Mark) -> None:
        """Undoes the creation of ``new_vars``' state back to ``mark``."""
        for var in new_vars:
            record = self.by_id.pop(id(var), None)
            if record is not None:
                self._used_names.discard(record.name)
        del self._slot_order[mark[0] :]
        self._slot_names[:] = mark[1]
        self.built = mark[2]
        del self.opt_weights[mark[3] :]
        self.pending = dict(mark[4])
        self._changed()

    def create(
        self, new_vars: Sequence[Tensor], populate: Callable[[Sequence[Tensor]], None], owner: str
    ) -> None:
        """Runs ``populate(new_vars)`` (the optimizer's slot creation), then adopts loaded state
        into the new slots; undone if either raises."""
        undo = self.mark()
        try:
            populate(new_vars)
            if self.pending and self._adopt is not None:
                self._adopt(self, [self.by_id[id(v)] for v in new_vars], owner)
        except Exception:
            self.forget(new_vars, undo)
            raise

    def stage(
        self, new_vars: Sequence[Tensor], create: Callable[[Sequence[Tensor]], None]
    ) -> Staged | None:
        """Runs ``create(new_vars)`` and takes back what it added, as a ``Staged``: everything
        that can fail in creating state fails here, in plan."""
        if not new_vars and self.built:
            return None
        pending = dict(self.pending)
        undo = self.mark()
        create(new_vars)  # undoes itself if it raises
        staged = Staged(
            [self.by_id[id(v)] for v in new_vars],
            self._slot_order[undo[0] :],
            list(self._slot_names),
            self.built,
            self.opt_weights[undo[3] :],
            dict(self.pending),
        )
        self.forget(new_vars, undo)
        self.pending = pending
        return staged

    def install(self, staged: Staged) -> None:
        """Makes staged state visible: list and dict updates only, nothing that can fail."""
        for record in staged.records:
            self.by_id[id(record.var)] = record
            self._used_names.add(record.name)
        self._slot_order.extend(staged.slot_order)
        self._slot_names[:] = staged.slot_names
        self.built = staged.built
        self.opt_weights.extend(staged.opt_weights)
        self.pending = staged.pending
        self._changed()
