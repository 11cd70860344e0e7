"""Optimizer state as a flat ``dict[str, Tensor]`` keyed by names, never by position.

Keys:

- ``iterations``: the (raw) step counter, int64;
- ``hyper/<name>``: the value of each hyperparameter set as a number (float64, so the exact
  Python value round-trips); callables and schedules are code, not state: their position is
  ``iterations``;
- ``weight/<name>``: optimizer-level weights (Nadam's ``momentum_cache``);
- ``slot/<variable name>/<slot name>``: every slot, including the EMA ``average`` and the
  ``gradient_accumulator``.

Wrappers add their own prefixes (``loss_scale/...``, ``inner/...``). Everything is a tensor, so the
dict saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``, and
``torch.distributed.checkpoint`` handles it natively. Loading checks every key, shape and dtype
before it assigns anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from . import _distributed
from ._hyper import Hyper, declared
from ._types import Record, StateError

if TYPE_CHECKING:
    from ._hyper import HyperStore
    from ._slots import SlotStore


class StateOwner(Protocol):
    """What the state functions need of an optimizer (kerasopt.optimizer.Optimizer is one)."""

    _raw_iterations: Tensor
    _hyper: HyperStore

    @property
    def name(self) -> str: ...
    @property
    def built(self) -> bool: ...
    @property
    def iterations(self) -> Tensor: ...
    @iterations.setter
    def iterations(self, value: int | Tensor) -> None: ...
    def _set_hyper(self, name: str, value: Any) -> None: ...


def adoptable_counter(value: Tensor, built: bool) -> Tensor:
    """``value`` if ``opt.iterations = value`` may adopt it (TF adopts a variable, e.g. a global
    step, which the optimizer then increments), else the TypeError / RuntimeError TF raises."""
    if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex:
        raise TypeError(
            "`iterations` must be set to a 0-d integer tensor (e.g. "
            "kerasopt.Variable(0, dtype=torch.int64, trainable=False)) or an int; got a "
            f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}."
        )
    if built:
        raise RuntimeError(
            "Cannot set `iterations` to a new Variable after the Optimizer weights have "
            f"been created. Here it is attempting to set `iterations` to {value!r}."
        )
    return value


def variable_names(store: SlotStore, owner: str) -> dict[str, Record]:
    """name → record; two variables with one name make state ambiguous, so that is an error."""
    out: dict[str, Record] = {}
    for record in store.records():
        if record.name in out:
            raise StateError(
                f"Two variables of optimizer {owner!r} are both named {record.name!r}: state is "
                "keyed by variable name. Give them distinct names (kerasopt.Variable(name=...), or "
                "pass the nn.Module / a dict of named tensors as var_list)."
            )
        out[record.name] = record
    return out


def state_dict(opt: StateOwner, store: SlotStore) -> dict[str, Tensor]:
    """``opt``'s state; ``store`` is its variable registry."""
    state: dict[str, Tensor] = {"iterations": opt._raw_iterations.detach().clone()}
    for name, value in opt._hyper.numbers().items():
        state[f"hyper/{name}"] = torch.tensor(value, dtype=torch.float64)
    for name, tensor in store.opt_weights:
        state[f"weight/{name}"] = tensor.detach().clone()
    for var_name, record in variable_names(store, opt.name).items():
        for slot_name, slot in record.slots.items():
            state[f"slot/{var_name}/{slot_name}"] = slot.detach().clone()
    for var_name, slots in store.pending.items():
        for slot_name, slot in slots.items():
            key = f"slot/{var_name}/{slot_name}" if var_name else f"weight/{slot_name}"
            state.setdefault(key, slot.clone())
    return state


def expect(
    key: str,
    value: Any,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    subject: str | None = None,
    layout: torch.layout = torch.strided,
) -> None:
    """Raises a StateError naming ``key`` unless ``value`` is a tensor of ``shape``, ``dtype`` and
    ``layout`` (dense). ``subject`` says what the key is (default: ``State key '<key>'``); every
    state check (optimizer, torch-format and checkpoint model state) goes through here."""
    what = f"State key {key!r}" if subject is None else subject
    if not isinstance(value, Tensor):
        raise StateError(f"{what} must hold a tensor; got {type(value).__name__}.")
    if value.layout != layout:
        kind = "a dense tensor" if layout == torch.strided else f"a {layout} tensor"
        raise StateError(f"{what} must hold {kind}; got layout {value.layout}.")
    if tuple(value.shape) != tuple(shape):
        raise StateError(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}.")
    if value.dtype != dtype:
        raise StateError(f"{what} has dtype {value.dtype}, expected {dtype}.")


def load_state_dict(
    opt: StateOwner, store: SlotStore, state: Mapping[str, Any], strict: bool = True
) -> None:
    """Validates all of ``state`` against ``opt`` (``store``: its registry), then assigns it (all
    or nothing).

    With ``strict`` (the default) every slot of every variable the optimizer has seen must be in
    ``state``, and state loaded for variables not seen yet must match the names of the next new
    variables; ``strict=False`` loads what there is and keeps the other slots as they are."""
    if not isinstance(state, Mapping):
        raise StateError(
            f"A state dict must be a mapping of str to tensors; got {type(state).__name__}."
        )
    for key in state:
        if not isinstance(key, str):
            raise StateError(f"State dict keys must be strings; got {key!r}.")
    if "iterations" not in state:
        raise StateError("State dict has no 'iterations' key: it is not an optimizer state dict.")
    expect("iterations", state["iterations"], (), torch.int64)
    if int(state["iterations"]) < 0:
        raise StateError("State key 'iterations' is negative.")

    hypers: dict[str, float] = {}
    weights: dict[str, Tensor] = {}
    slots: dict[str, dict[str, Tensor]] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    own_weights = dict(store.opt_weights)
    records = variable_names(store, opt.name)
    checks = {d.name: d.check for d in declared(type(opt)) if isinstance(d, Hyper) and d.check}
    for key, value in state.items():
        if key == "iterations":
            continue
        kind, _, rest = key.partition("/")
        if kind == "hyper":
            if rest not in opt._hyper.sources:
                raise StateError(
                    f"State key {key!r}: optimizer {opt.name!r} has no hyperparameter {rest!r}."
                )
            expect(key, value, (), value.dtype if isinstance(value, Tensor) else torch.float64)
            if not value.is_floating_point():
                raise StateError(f"State key {key!r} must be a floating tensor.")
            if value.device.type == "meta":
                raise StateError(f"State key {key!r} is a meta tensor: it holds no value.")
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise StateError(f"State key {key!r} is not finite.")
            check = checks.get(rest)
            if check is not None:
                try:
                    check(rest, number)  # the constructor's validation
                except (TypeError, ValueError) as e:
                    raise StateError(f"State key {key!r}: {e}") from None
            hypers[rest] = number
        elif kind == "weight":
            if rest not in own_weights and not opt.built:
                expect(
                    key,
                    value,
                    tuple(value.shape) if isinstance(value, Tensor) else (),
                    _dtype_of(key, value),
                )
                pending.setdefault("", {})[rest] = value  # adopted when the optimizer builds
                continue
            if rest not in own_weights:
                raise StateError(
                    f"State key {key!r}: optimizer {opt.name!r} has no weight {rest!r}."
                )
            ref = own_weights[rest]
            expect(key, value, tuple(ref.shape), ref.dtype)
            weights[rest] = value
        elif kind == "slot" and "/" in rest:
            var_name, _, slot_name = rest.rpartition("/")
            record = records.get(var_name)
            if record is None:
                # Not seen yet: kept and checked against the variable when it first appears.
                expect(
                    key,
                    value,
                    tuple(value.shape) if isinstance(value, Tensor) else (),
                    _dtype_of(key, value),
                )
                if not value.is_floating_point():
                    raise StateError(f"State key {key!r} must be a floating tensor.")
                pending.setdefault(var_name, {})[slot_name] = value
                continue
            existing = record.slots.get(slot_name)
            if existing is None:
                raise StateError(
                    f"State key {key!r}: variable {var_name!r} has no slot {slot_name!r} in "
                    f"optimizer {opt.name!r} (its slots are {sorted(record.slots)})."
                )
            expect(key, value, tuple(existing.shape), existing.dtype)
            slots.setdefault(var_name, {})[slot_name] = value
        else:
            raise StateError(f"Unknown state key {key!r} for optimizer {opt.name!r}.")

    if strict:
        missing = [
            f"slot/{var_name}/{slot_name}"
            for var_name, record in records.items()
            for slot_name in record.slots
            if slot_name not in slots.get(var_name, {})
        ]
        if missing:
            raise StateError(
                f"State dict for optimizer {opt.name!r} lacks {len(missing)} slot key(s): "
                f"{missing[:8]}{' ...' if len(missing) > 8 else ''}. Pass strict=False to load "
                "a partial state (the missing slots keep their values)."
            )
    # Every copy source is made first (on the target's device: a meta tensor or a failing
    # transfer raises here), so assigning below cannot fail half-way.
    todo: list[tuple[Tensor, Tensor]] = []
    for name, value in weights.items():
        todo.append((own_weights[name], _staged(f"weight/{name}", value, own_weights[name])))
    for var_name, values in slots.items():
        record = records[var_name]
        for slot_name, value in values.items():
            target = record.slots[slot_name]
            todo.append((target, _staged(f"slot/{var_name}/{slot_name}", value, target)))
    new_pending = {
        name: {k: _staged(f"slot/{name}/{k}", v, v) for k, v in d.items()}
        for name, d in pending.items()
    }
    # Everything checked: assign.
    with torch.no_grad():
        opt.iterations = int(state["iterations"])
        for name, number in hypers.items():
            if not callable(opt._hyper.source(name)):
                opt._set_hyper(name, number)
        for target, value in todo:
            target.copy_(value)
        store.set_pending(new_pending, strict)


def checked_weights(owner: str, params: Sequence[Tensor], weights: Sequence[Any]) -> list[Tensor]:
    """``weights`` as tensors after checking their count and shapes against ``params`` (TF's
    ``set_weights`` messages; ``owner`` names the optimizer)."""
    if len(params) != len(weights):
        raise ValueError(
            f"You called `set_weights(weights)` on optimizer {owner} with a weight list of "
            f"length {len(weights)}, but the optimizer was expecting {len(params)} weights."
        )
    values = []
    for i, (param, w) in enumerate(zip(params, weights)):
        value = torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w)
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(
                f"Optimizer weight {i} shape {tuple(param.shape)} not compatible with provided "
                f"weight shape {tuple(value.shape)}"
            )
        values.append(value)
    return values


def assign_weights(owner: str, params: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    """Copies ``values`` into ``params``; every copy source is made first, so a failing one (a
    meta tensor) writes nothing."""
    staged = []
    for i, (param, value) in enumerate(zip(params, values)):
        try:
            staged.append(value.detach().to(device=param.device, dtype=param.dtype, copy=True))
        except (RuntimeError, NotImplementedError) as e:
            raise ValueError(
                f"Optimizer weight {i} of optimizer {owner} cannot be read: {e}"
            ) from None
    with torch.no_grad():
        for param, value in zip(params, staged):
            param.copy_(value)


def set_weights(opt: Any, params: Sequence[Tensor], weights: list[Any]) -> None:
    """TF's ``set_weights`` of ``opt`` (whose ``variables()`` are ``params``), with the Keras V1
    layouts its class reads (``keras_v1_weights``)."""
    if len(params) == 1 and not opt.built:
        if len(weights) == 0:
            return  # TF: a fresh optimizer has no weights, so an empty list fits
        raise ValueError(
            f"You called `set_weights(weights)` on optimizer {opt.name} before it created its "
            "weights: call `build(var_list)` or apply gradients first."
        )
    if opt.keras_v1_weights == "without_iterations" and len(params) == len(weights) + 1:
        # TF: Keras V1 optimizers' weights lack the counter; it restarts at 0.
        weights = [np.array(0), *weights]
    elif opt.keras_v1_weights == "with_vhats" and len(weights) == 3 * ((len(params) - 1) // 2) + 1:
        # TF: Keras V1 Adam stores `vhat` slots even without amsgrad; they are dropped.
        weights = weights[: len(params)]
    assign_weights(opt.name, params, checked_weights(opt.name, params, weights))


def _staged(key: str, value: Tensor, like: Tensor) -> Tensor:
    """A private copy of ``value`` on ``like``'s device, made before anything is assigned."""
    if value.device.type == "meta":
        raise StateError(f"State key {key!r} is a meta tensor: it holds no value.")
    device = like.device if like.device.type != "meta" else torch.device("cpu")
    # A full tensor into a sharded (FSDP2) slot takes this rank's shard; a DTensor into a
    # plain slot is gathered: checkpoints load across world sizes.
    return _distributed.like(value.detach().to(device, copy=True), like)


def _dtype_of(key: str, value: Any) -> torch.dtype:
    if not isinstance(value, Tensor):
        raise StateError(f"State key {key!r} must hold a tensor; got {type(value).__name__}.")
    return value.dtype


def adopt_pending(store: SlotStore, records: list[Record], owner: str) -> None:
    """Copies loaded state into the slots of variables seen for the first time (all or nothing).

    Pending optimizer-level weights are kept under the empty variable name ``""``. ``owner`` is
    the optimizer's name, for messages.
    """
    todo = []
    own_weights = dict(store.opt_weights)
    for name, value in store.pending.get("", {}).items():
        if name not in own_weights:
            raise StateError(
                f"Loaded state key 'weight/{name}': optimizer {owner!r} has no such weight."
            )
        expect(f"weight/{name}", value, tuple(own_weights[name].shape), own_weights[name].dtype)
        todo.append((own_weights[name], value))
    names = {r.name for r in records}
    unmatched = [n for n in store.pending if n and n not in names]
    strict = store.pending_strict and bool(store.pending)
    for record in records:
        values = store.pending.get(record.name) or {}
        if not values and unmatched and strict:
            raise StateError(
                f"Loaded state holds slots for variables {sorted(unmatched)[:8]} that "
                f"optimizer {owner!r} has not seen, but its new variable {record.name!r} "
                "has none: the variables are named differently than when the state was "
                "saved (e.g. saved after minimize(loss, model), which names them by "
                "`named_parameters()`). Pass them the same way (the nn.Module, or a dict of "
                "named tensors), or load with strict=False to start these slots afresh."
            )
        missing = [s for s in record.slots if s not in values]
        if missing and strict:
            # the check load_state_dict makes for a variable seen before the load
            keys = [f"slot/{record.name}/{s}" for s in missing]
            raise StateError(
                f"Loaded state for optimizer {owner!r} lacks {len(keys)} slot key(s) of its "
                f"new variable {record.name!r}: {keys}. Load with strict=False to start these "
                "slots afresh."
            )
        for slot_name, value in values.items():
            key = f"slot/{record.name}/{slot_name}"
            slot = record.slots.get(slot_name)
            if slot is None:
                raise StateError(
                    f"Loaded state key {key!r}: variable {record.name!r} has no slot {slot_name!r} "
                    f"in optimizer {owner!r} (its slots are {sorted(record.slots)})."
                )
            expect(key, value, tuple(slot.shape), slot.dtype)
            todo.append((slot, value))
    for slot, value in todo:
        slot.copy_(value.to(slot.device))
    for record in records:
        store.pending.pop(record.name, None)
    store.pending.pop("", None)
