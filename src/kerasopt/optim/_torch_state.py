"""Parameter state of ``kerasopt.optim``, in torch's format.

``optimizer.state`` (``_State``: param → ``_ParamState``) holds each parameter's slots, the inner
Keras optimizer's own tensors under their TensorFlow names, plus the group's ``"step"``; values
assigned into it from outside are adopted at the next step. ``_TorchState``, the base of
``KerasOptimizer``, builds that state per parameter, checks and writes state values, and gives
torch's ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .. import step as _step
from .._features import FEATURE_SLOTS
from .._state import expect
from .._sync import locked
from ..optimizer import Optimizer as KerasOptimizerBase
from ._groups import _GroupState, _ParamGroup, _Spec

_WEIGHT_NAMES: dict[type, tuple[str, ...]] = {}


def _weight_names(keras: type[KerasOptimizerBase]) -> tuple[str, ...]:
    """Names of the optimizer-level weights (Nadam's ``momentum_cache``), in ``variables()`` order.

    Read from the Keras state dict of a probe built on one tiny tensor: they follow
    ``iterations`` in ``variables()``, in the same order.
    """
    names = _WEIGHT_NAMES.get(keras)
    if names is None:
        probe = keras()
        probe.build({"probe": torch.zeros(1)})
        names = tuple(k[len("weight/") :] for k in probe.state_dict() if k.startswith("weight/"))
        _WEIGHT_NAMES[keras] = names
    return names


class _ParamState(dict[str, Any]):
    """``state[p]``: reports assignments to its owner, which adopts them at the next step."""

    def __init__(self, owner: _State, param: Tensor) -> None:
        super().__init__()
        self._owner = owner
        self._param = param

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and dict.__getitem__(self, key) is value:
            return  # the same object again (dynamo's `state["step"] = state["step"].to(p.device)`)
        super().__setitem__(key, value)
        self._owner._dirty[id(self._param)] = self._param

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._owner._dirty[id(self._param)] = self._param


class _State(defaultdict[Tensor, Any]):
    """``optimizer.state``: param → its state dict, noting entries replaced from outside.

    ZeroRedundancyOptimizer's ``load_state_dict`` and Lightning's device moves write
    ``state[p] = {...}`` / ``state[p][key] = tensor`` directly; those values are copied into the
    inner optimizer (after the same checks as a load) at the next ``step()``.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(None)
        self._dirty: dict[int, Tensor] = {}

    def __missing__(self, key: Tensor) -> _ParamState:
        value = _ParamState(self, key)
        dict.__setitem__(self, key, value)
        return value

    def __setitem__(self, key: Tensor, value: Any) -> None:
        entry = _ParamState(self, key)
        dict.update(entry, value)
        dict.__setitem__(self, key, entry)
        self._dirty[id(key)] = key

    def _put(self, key: Tensor, entry: _ParamState) -> None:
        dict.__setitem__(self, key, entry)

    def _take_dirty(self) -> dict[int, Tensor]:
        dirty, self._dirty = self._dirty, {}
        return dirty


def _as_step(value: Any, label: str) -> int:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.layout != torch.strided:
            raise ValueError(f"{label}: 'step' must be a scalar; got shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{label}: 'step' must be a number; got {type(value).__name__}.")
    if value != int(value) or value < 0:
        raise ValueError(f"{label}: 'step' must be a non-negative integer; got {value!r}.")
    return int(value)


class _TorchState(torch.optim.Optimizer):
    """The state half of ``KerasOptimizer`` (its base class): ``state[p]`` built lazily as the
    inner optimizers' own tensors, values assigned into ``state[p]`` adopted at the next step,
    and torch's ``state_dict`` / ``load_state_dict`` with Keras's checks.

    The param groups are ``KerasOptimizer``'s: it sets ``_spec`` and ``_groups`` and defines the
    two group methods declared below.
    """

    _spec: ClassVar[_Spec]
    _groups: dict[int, _GroupState]
    state: _State

    if TYPE_CHECKING:

        def _normalize(self, group: dict[str, Any], given: set[str]) -> None: ...

        def _new_group_state(self, group: dict[str, Any], index: int) -> _GroupState: ...

    # ------------------------------------------------------------------------------------------
    # state: built lazily per parameter, exposed as the inner optimizer's own tensors
    def _build(self, state: _GroupState, group: Mapping[str, Any], params: list[Tensor]) -> None:
        """Creates the inner optimizer's state for ``params`` (named as Keras would name them)."""
        var_list = self._var_list(group, params)
        state.inner.build(var_list)
        self._built(state, params, var_list)

    def _build_undoable(self, state: _GroupState, params: list[Tensor]) -> Callable[[], None]:
        """``_build`` and ``_register`` of ``params``; returns what forgets that state again
        (the inner optimizer's records and slots, and this optimizer's entries)."""
        var_list = self._var_list(state.group, params)
        fresh = state.step is None
        with torch.no_grad():
            undo = _step.build(state.inner, var_list)
        self._built(state, params, var_list)
        self._register(state, params)

        def forget() -> None:
            undo.restore()
            state.batches[:] = [b for b in state.batches if b is not var_list]
            for p in params:
                state.built.pop(id(p), None)
                state.layouts.pop(id(p), None)
                dict.pop(self.state, p, None)
            if fresh:
                state.step, state.weights = None, {}

        return forget

    @staticmethod
    def _var_list(group: Mapping[str, Any], params: list[Tensor]) -> Any:
        """``params`` as the inner optimizer's var_list: named by ``param_names`` if given."""
        names = group.get("param_names")
        if names is not None:
            lookup = {id(p): n for p, n in zip(group["params"], names)}
            if all(id(p) in lookup for p in params):
                return {lookup[id(p)]: p for p in params}
        return list(params)

    def _built(self, state: _GroupState, params: list[Tensor], var_list: Any) -> None:
        """Records that the inner optimizer holds state for ``params`` (built as ``var_list``)."""
        state.batches.append(var_list)
        for p in params:
            state.built[id(p)] = p
        self._index(state, params)

    def _index(self, state: _GroupState, params: list[Tensor]) -> None:
        inner = state.inner
        if state.step is None:
            variables = inner.variables()
            names = _weight_names(type(inner))
            state.step = variables[0]
            state.weights = dict(zip(names, variables[1 : 1 + len(names)]))
        slot_names = (*inner.get_slot_names(), *FEATURE_SLOTS)
        for p in params:
            layout: dict[str, Tensor] = {}
            for name in slot_names:
                try:
                    layout[name] = inner.get_slot(p, name)
                except KeyError:
                    continue
            layout.update(state.weights)
            state.layouts[id(p)] = layout

    def _register(self, state: _GroupState, params: Iterable[Tensor]) -> None:
        for p in params:
            entry = _ParamState(self.state, p)
            dict.__setitem__(entry, "step", state.step)
            dict.update(entry, state.layouts[id(p)])
            self.state._put(p, entry)

    def _check_entry(
        self, state: _GroupState, p: Tensor, values: Mapping[str, Any], label: str
    ) -> tuple[int | None, list[tuple[Tensor, Tensor]]]:
        """Checks one parameter's state values against its slots: the step, and what to copy."""
        layout = state.layouts[id(p)]
        step: int | None = None
        copies: list[tuple[Tensor, Tensor]] = []
        for key, value in values.items():
            if key == "step":
                if value is not state.step:
                    step = _as_step(value, label)
                continue
            target = layout.get(key)
            if target is None:
                raise ValueError(
                    f"{label}: unknown state key {key!r}; {self._spec.keras.__name__}'s state keys "
                    f"for this parameter are {['step', *layout]}."
                )
            if value is target:
                continue
            expect(key, value, tuple(target.shape), target.dtype, f"{label}: state {key!r}")
            copies.append((target, value))
        return step, copies

    @staticmethod
    def _merge(
        index: int, checked: list[tuple[int | None, list[tuple[Tensor, Tensor]]]]
    ) -> tuple[int | None, list[tuple[Tensor, Tensor]]]:
        """One step and one value per target for a group; parameters must agree on shared ones."""
        steps = {s for s, _ in checked if s is not None}
        if len(steps) > 1:
            raise ValueError(
                f"param_groups[{index}]: its parameters' states have different 'step' values "
                f"{sorted(steps)}; a Keras optimizer keeps one step per group."
            )
        targets: dict[int, tuple[Tensor, Tensor]] = {}
        for _, copies in checked:
            for target, value in copies:
                seen = targets.get(id(target))
                if seen is not None and not torch.equal(seen[1].cpu(), value.cpu()):
                    raise ValueError(
                        f"param_groups[{index}]: parameters disagree on a shared optimizer weight "
                        f"of shape {tuple(value.shape)}."
                    )
                targets[id(target)] = (target, value)
        return (steps.pop() if steps else None), list(targets.values())

    @staticmethod
    def _write(state: _GroupState, step: int | None, copies: list[tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for target, value in copies:
                target.copy_(value)
        if step is not None:
            state.inner.iterations = step

    def _adopt(self, states: list[_GroupState]) -> None:
        """Copies ``state[p]`` values assigned from outside into the inner optimizers."""
        dirty = self.state._take_dirty()
        owners = {id(p): (i, s) for i, s in enumerate(states) for p in s.group["params"]}
        todo: dict[int, list[tuple[Tensor, dict[str, Any]]]] = {}
        for pid, p in dirty.items():
            if pid in owners and p in self.state:
                values = dict(dict.__getitem__(self.state, p))
                todo.setdefault(owners[pid][0], []).append((p, values))
        try:
            plans = []
            for index, items in todo.items():
                state = states[index]
                new = [p for p, values in items if id(p) not in state.built and values]
                if new:
                    self._build(state, state.group, new)
                position = {id(p): j for j, p in enumerate(state.group["params"])}
                checked = [
                    self._check_entry(
                        state,
                        p,
                        values,
                        f"state[p] of param_groups[{index}] parameter {position[id(p)]}",
                    )
                    for p, values in items
                    if id(p) in state.built
                ]
                plans.append((state, items, *self._merge(index, checked)))
        except Exception:
            self.state._dirty.update(dirty)  # still pending: the next step checks again
            raise
        for state, items, step, copies in plans:
            self._write(state, step, copies)
            self._register(state, [p for p, _ in items if id(p) in state.built])

    # ------------------------------------------------------------------------------------------
    # state dicts: torch's format, Keras's checks
    @locked
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state dict: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Each parameter's state holds its slots by their TensorFlow names (``"m"``, ``"v"``, ...,
        the inner optimizer's own tensors, not copies, as torch.optim returns them), the group's
        ``"step"`` (int64) and any optimizer-level weight (Nadam's ``"momentum_cache"``). It
        saves with ``torch.save`` and loads with ``torch.load(weights_only=True)``.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        mapping: dict[int, int] = {}
        start = 0

        def pack(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        param_groups = [pack(g) for g in self.param_groups]
        # Plain tensors over the slots' storage (no copies): the slots are kerasopt.Variables,
        # and a state dict must load with torch.load(weights_only=True).
        packed_state = {
            (mapping[id(k)] if isinstance(k, Tensor) else k): {
                name: value.detach() if isinstance(value, Tensor) else value
                for name, value in v.items()
            }
            for k, v in self.state.items()
        }
        state_dict: dict[str, Any] = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    @locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads torch's format (``state_dict()`` output, or DCP's FQN-keyed form).

        Everything is checked before anything changes: group and parameter counts, every state
        key against the parameter's slots (names, shapes, dtypes — no silent casts), one
        ``step`` per group, and the groups' hyperparameters (by building their Keras
        optimizers). The groups' values are taken from ``state_dict``, as torch.optim does.

        Raises:
            ValueError: the state dict does not fit (the message names the group, parameter
                and key); the optimizer is then unchanged.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping; got {type(state_dict).__name__}.")
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"Optimizer state dict has no {key!r} entry.")
        groups = self.param_groups
        saved_groups = copy.deepcopy(list(state_dict["param_groups"]))
        if len(groups) != len(saved_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer "
                f"{len(groups)}."
            )
        saved_id: dict[int, Any] = {}
        id_map: dict[Any, Tensor] = {}
        for i, (group, saved) in enumerate(zip(groups, saved_groups)):
            if len(group["params"]) != len(saved.get("params", ())):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has {len(saved.get('params', ()))} "
                    f"parameters, the optimizer's {len(group['params'])}."
                )
            for sid, p in zip(saved["params"], group["params"]):
                id_map[sid] = p
                saved_id[id(p)] = sid
        values_of: dict[int, Mapping[str, Any]] = {}
        for sid, values in state_dict["state"].items():
            if sid not in id_map:
                raise ValueError(
                    f"loaded state dict has state for parameter {sid!r}, which no group lists."
                )
            if not isinstance(values, Mapping):
                raise ValueError(
                    f"state of parameter {sid!r} must be a dict; got {type(values).__name__}."
                )
            if values:
                values_of[id(id_map[sid])] = values

        plans = []
        for i, (group, saved) in enumerate(zip(groups, saved_groups)):
            values = dict(saved)
            values["params"] = group["params"]
            if "param_names" in group and "param_names" not in values:
                values["param_names"] = group["param_names"]
            given = set(values)
            for key in self._spec.defaults:
                values.setdefault(key, group.get(key, self._spec.defaults[key]))
            self._normalize(values, given)
            new_group = _ParamGroup(values, self._spec.betas)
            state = self._new_group_state(new_group, i)
            params = [p for p in group["params"] if id(p) in values_of]
            if params:
                self._build(state, new_group, params)
            checked = []
            for j, p in enumerate(group["params"]):
                values = values_of.get(id(p))
                if values is None:
                    continue
                label = f"state[{saved_id[id(p)]!r}] (param_groups[{i}] parameter {j})"
                if "step" not in values:
                    raise ValueError(f"{label} has no 'step'.")
                checked.append(self._check_entry(state, p, values, label))
            plans.append((new_group, state, params, *self._merge(i, checked)))

        # Everything checked: assign.
        new_state = _State()
        self.state = new_state
        self.param_groups = [g for g, *_ in plans]
        self._groups = {}
        for new_group, state, params, step, copies in plans:
            self._write(state, step, copies)
            self._groups[id(new_group)] = state
            self._register(state, params)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)
