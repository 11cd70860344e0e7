"""``KerasOptimizer``: the torch.optim protocol over one Keras-API optimizer per param group.

The adapter holds no optimizer math. Each param group owns one ``kerasopt.optimizers.<Name>``
instance built from the group's values (so a group behaves exactly as a separate Keras optimizer
would); ``step()`` copies changed group values onto it, collects ``(p.grad, p)`` and calls its
``apply_gradients``. ``state[p]`` holds the inner optimizer's slot tensors themselves (no copies),
keyed by their TensorFlow names, plus ``"step"``.
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._features import FEATURE_SLOTS, FEATURES
from .._hyper import Hyper, Param
from .._state import expect
from .._sync import StepLock, locked
from ..optimizer import Optimizer as KerasOptimizerBase
from ..wrappers._base import Transaction

__all__ = ["KerasOptimizer"]

_MISSING: Any = object()

# The base-class features as group keys, with their group defaults (kerasopt._features: one
# table). `implementation=None` means Keras's own choice ("auto", or "compiled" with
# `jit_compile=True`).
_FEATURES: dict[str, Any] = {f.name: f.group_default for f in FEATURES}

# torch.optim argument names kerasopt does not take: refused with a hint rather than ignored,
# so a torch-style call never silently computes something else. Flags are accepted when falsy.
_TORCH_NAMES: dict[str, str] = {
    "eps": "Keras calls it `epsilon` (in Adam-type rules TF's epsilon-hat, added after the bias "
    "correction; default 1e-7)",
    "alpha": "RMSprop's decay is Keras's `rho` (default 0.9)",
    "lr_decay": "Keras's legacy `decay` gives lr / (1 + decay * iterations)",
    "momentum_decay": "Nadam's momentum-schedule decay is Keras's `decay` (default 0.004)",
    "dampening": "TensorFlow's SGD has no dampening",
    "maximize": "negate the loss instead",
    "foreach": "choose an engine with implementation='foreach' (or 'per_tensor', 'compiled')",
    "fused": "choose an engine with implementation='compiled'",
    "capturable": "not supported",
    "differentiable": "not supported",
}
_TORCH_FLAGS = frozenset({"maximize", "foreach", "fused", "capturable", "differentiable"})


def _is_tensor(value: Any) -> bool:
    return isinstance(value, Tensor)


def _same(a: Any, b: Any, live: bool) -> bool:
    """Whether a group value is unchanged since it was applied.

    A tensor value of a live key may have been updated in place (torch's schedulers ``fill_``
    tensor learning rates), so it always counts as changed; it is cheap to set again.
    """
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b and not live
    if a is b:
        return True
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y, live) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # values without a plain truth value: treat as changed
        return False


@dataclass(frozen=True)
class _Spec:
    """What the adapter knows about one Keras class, derived from its signature and declarations."""

    keras: type[KerasOptimizerBase]
    defaults: dict[str, Any]  # group key -> Keras default (`lr` for `learning_rate`)
    live: frozenset[str]  # keys set on the inner optimizer in place (hyperparameters, Params)
    betas: bool  # has beta_1 and beta_2: `betas` is kept as their torch-style alias

    @classmethod
    def of(
        cls, keras: type[KerasOptimizerBase], keywords: Mapping[str, Any] | None = None
    ) -> _Spec:
        """``keywords``: arguments the Keras class takes through ``**kwargs`` (with defaults);
        by default the legacy ``decay`` where the class reports one in its config."""
        args: dict[str, Any] = {}
        for name, p in inspect.signature(keras.__init__).parameters.items():
            if name in ("self", "name") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            args[name] = p.default
        defaults: dict[str, Any] = {"lr": args.pop("learning_rate")}
        betas = "beta_1" in args and "beta_2" in args
        for name, value in args.items():
            defaults[name] = value
            if name == "beta_2" and betas:
                defaults["betas"] = (args["beta_1"], args["beta_2"])
        for name, value in _FEATURES.items():
            defaults.setdefault(name, value)
        if keywords is None:
            config = keras().get_config()
            keywords = {"decay": config["decay"]} if "decay" in config else {}
        for name, value in keywords.items():
            defaults.setdefault(name, value)
        live = {"lr"}
        for name in defaults:
            # Keyword-only arguments may be read at construction only (Nadam's schedule_decay):
            # a change rebuilds the inner optimizer.
            if name not in keywords and isinstance(getattr(keras, name, None), (Hyper, Param)):
                live.add(name)
        return cls(keras, defaults, frozenset(live), betas)

    def keras_kwargs(self, group: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, default in self.defaults.items():
            value = group.get(key, default)
            if key == "betas" or (key == "implementation" and value is None):
                continue
            out["learning_rate" if key == "lr" else key] = value
        return out

    def describe(self) -> str:
        keys = ", ".join(f"``{k}={v!r}``" for k, v in self.defaults.items())
        return f"Param-group keys and their defaults (Keras's): {keys}."


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


class _ParamGroup(dict[str, Any]):
    """A param group that keeps ``betas`` and ``beta_1`` / ``beta_2`` equal when either is written
    (``OneCycleLR`` / ``CyclicLR`` write ``betas``; Keras code writes ``beta_1``)."""

    def __init__(self, data: Mapping[str, Any], betas: bool) -> None:
        super().__init__(data)
        self._betas = betas

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if not getattr(self, "_betas", False):  # unpickling sets items before attributes
            return
        if key == "betas" and isinstance(value, (tuple, list)) and len(value) == 2:
            super().__setitem__("beta_1", value[0])
            super().__setitem__("beta_2", value[1])
        elif key in ("beta_1", "beta_2") and "betas" in self:
            super().__setitem__("betas", (self.get("beta_1"), self.get("beta_2")))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


@dataclass(eq=False)
class _GroupState:
    """The inner Keras optimizer of one param group, and what the adapter knows of its state."""

    group: dict[str, Any]
    inner: KerasOptimizerBase
    synced: dict[str, Any]  # the group values the inner optimizer was last given
    synced_values: tuple[Any, ...] = ()  # the same, as the group's values in key order
    lr_alias: Any = _MISSING  # last `learning_rate` seen in the group (an alias of `lr`)
    built: dict[int, Tensor] = field(default_factory=dict)  # id -> param, in build order
    batches: list[Any] = field(default_factory=list)  # the `build` calls, to replay on rebuild
    step: Tensor | None = None  # the inner optimizer's (raw) iteration counter
    weights: dict[str, Tensor] = field(default_factory=dict)  # optimizer-level weights
    layouts: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # id -> name -> tensor


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


class KerasOptimizer(torch.optim.Optimizer):
    """Base of ``kerasopt.optim``: a Keras optimizer behind the ``torch.optim.Optimizer`` protocol.

    Subclasses only name their Keras class (``class Adam(KerasOptimizer,
    keras=kerasopt.optimizers.Adam)``); everything else is derived from it. Construct one the
    torch way, with Keras's argument names and defaults::

        opt = kerasopt.optim.Adam(model.parameters(), lr=1e-3, beta_1=0.9, weight_decay=0.01)
        opt = kerasopt.optim.Adam([{"params": enc, "lr": 1e-4}, {"params": dec}], lr=1e-3)

    ``lr`` is the group key schedulers write (``learning_rate=`` is accepted for it);
    optimizers with ``beta_1`` and ``beta_2`` also keep ``betas = (beta_1, beta_2)`` in their
    groups, which ``OneCycleLR`` / ``CyclicLR`` cycle. Any group value may be changed between
    steps and takes effect at the next one: hyperparameters are set on the group's Keras
    optimizer, other keys (``weight_decay``, ``clipnorm``, ...) rebuild it with its state kept.

    Each param group owns one ``kerasopt.optimizers.<Name>`` instance (``keras_optimizers``):
    ``step()`` applies ``(p.grad, p)`` through its ``apply_gradients``, so the weights and slots
    are bit-identical to the Keras API on the same gradients, sparse ones included. The group
    shares one step counter, as a Keras optimizer does (``state[p]["step"]`` is that counter).

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = ko.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     opt.zero_grad()
        ...     loss = (w * w).sum()
        ...     loss.backward()
        ...     opt.step()
        >>> [round(x, 4) for x in w.tolist()]
        [0.46, -0.92]
        >>> sorted(opt.state[w]), int(opt.state[w]["step"])
        (['momentum', 'step'], 2)
        >>> opt.state[w]["momentum"] is opt.keras_optimizers[0].get_slot(w, "momentum")
        True
    """

    _spec: ClassVar[_Spec]

    def __init_subclass__(
        cls,
        keras: type[KerasOptimizerBase] | None = None,
        keywords: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if keras is None:
            return
        spec = _Spec.of(keras, keywords)
        cls._spec = spec
        cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n    " + spec.describe() + "\n"
        kind = inspect.Parameter
        parameters = [
            kind("params", kind.POSITIONAL_OR_KEYWORD),
            kind("lr", kind.POSITIONAL_OR_KEYWORD, default=spec.defaults["lr"]),
            *(kind(k, kind.KEYWORD_ONLY, default=v) for k, v in spec.defaults.items() if k != "lr"),
        ]
        setattr(cls, "__signature__", inspect.Signature(parameters))  # noqa: B010 (help(), IDEs)

    def __init__(self, params: Any, lr: Any = _MISSING, **kwargs: Any) -> None:
        spec = self._spec_or_raise()
        given: dict[str, Any] = {}
        if lr is not _MISSING:
            given["lr"] = lr
        if "learning_rate" in kwargs:
            if "lr" in given:
                raise TypeError("Pass the learning rate as `lr` or `learning_rate`, not both.")
            given["lr"] = kwargs.pop("learning_rate")
        for key, value in kwargs.items():
            if key in _TORCH_NAMES:
                if key in _TORCH_FLAGS and not value:
                    continue
                raise TypeError(
                    f"{type(self).__name__}() got torch.optim's argument {key!r}: {_TORCH_NAMES[key]}."
                )
            if key not in spec.defaults:
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {key!r}; it takes "
                    f"{sorted(spec.defaults)}."
                )
            given[key] = value
        defaults = {**spec.defaults, **given}
        self._normalize(defaults, set(given))
        self._groups: dict[int, _GroupState] = {}
        self._step_lock = StepLock()  # kerasopt._sync: steps, state reads and loads
        super().__init__(params, defaults)
        self.state: _State = _State()

    @classmethod
    def _spec_or_raise(cls) -> _Spec:
        spec = cls.__dict__.get("_spec") or getattr(cls, "_spec", None)
        if spec is None:
            raise TypeError(
                "KerasOptimizer is abstract: use one of kerasopt.optim's optimizers (e.g. "
                "kerasopt.optim.Adam), or subclass it with `keras=<kerasopt.optimizers class>`."
            )
        return spec

    # ------------------------------------------------------------------------------------------
    # param groups and their inner optimizers
    def _normalize(self, group: dict[str, Any], given: set[str]) -> None:
        """Resolves the aliases in a group whose defaults are filled: ``learning_rate`` → ``lr``,
        ``betas`` ↔ ``(beta_1, beta_2)``; ``given`` are the keys the caller set explicitly."""
        if "learning_rate" in group:
            value = group.pop("learning_rate")
            if "lr" in given and not _same(group["lr"], value, live=False):
                raise ValueError("A param group sets both `lr` and `learning_rate`.")
            group["lr"] = value
        if not self._spec.betas:
            return
        if "betas" in given:
            betas = group["betas"]
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ValueError(f"`betas` must be a pair (beta_1, beta_2); got {betas!r}.")
            for key, value in zip(("beta_1", "beta_2"), betas):
                if key in given and not _same(group[key], value, live=False):
                    raise ValueError(f"A param group sets both `betas` and `{key}`, differently.")
            group["beta_1"], group["beta_2"] = betas
        group["betas"] = (group["beta_1"], group["beta_2"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group (torch's ``add_param_group``), with its own Keras optimizer.

        Raises:
            TypeError: a torch.optim key kerasopt does not take (``eps``, ``alpha``, ...).
            ValueError: an invalid value (the message names the key); nothing is added then.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        for key, value in param_group.items():
            if key in _TORCH_NAMES and not (key in _TORCH_FLAGS and not value):
                raise TypeError(
                    f"param group key {key!r} is torch.optim's, not kerasopt's: {_TORCH_NAMES[key]}."
                )
        given = set(param_group)
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            self._normalize(group, given)
            group = self.param_groups[-1] = _ParamGroup(group, self._spec.betas)
            state = self._new_group_state(group, len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise
        if "learning_rate" in given:
            state.lr_alias = group["lr"]
        self._groups[id(group)] = state

    def _make_inner(self, group: Mapping[str, Any], index: int) -> KerasOptimizerBase:
        try:
            return self._spec.keras(**self._spec.keras_kwargs(group))
        except (TypeError, ValueError) as e:
            raise type(e)(f"param_groups[{index}]: {e}") from e

    def _new_group_state(self, group: dict[str, Any], index: int) -> _GroupState:
        state = _GroupState(group, self._make_inner(group, index), {})
        self._resnapshot(state)
        return state

    def _snapshot(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {k: group.get(k, d) for k, d in self._spec.defaults.items()}

    def _resnapshot(self, state: _GroupState) -> None:
        state.synced = self._snapshot(state.group)
        state.synced_values = tuple(map(state.group.get, self._spec.defaults))

    def _group_state(self, group: dict[str, Any], index: int) -> _GroupState:
        state = self._groups.get(id(group))
        if state is None or state.group is not group:
            # A group put into `param_groups` without add_param_group (or a replaced dict).
            given = set(group)
            for key, value in self._spec.defaults.items():
                group.setdefault(key, value)
            self._normalize(group, given)
            if not isinstance(group, _ParamGroup):
                group = self.param_groups[index] = _ParamGroup(group, self._spec.betas)
            state = self._new_group_state(group, index)
            self._groups[id(group)] = state
        return state

    def _sync_all(self) -> list[_GroupState]:
        states = [self._group_state(g, i) for i, g in enumerate(self.param_groups)]
        if len(self._groups) > len(states):
            self._groups = {id(s.group): s for s in states}
        for i, state in enumerate(states):
            self._sync(state, i)
        return states

    def _sync(self, state: _GroupState, index: int) -> None:
        """Applies the group values changed since the last step to its inner optimizer."""
        group, synced, spec = state.group, state.synced, self._spec
        # Fast path, every step: the values are the snapshot's (compared in C) and none is a
        # tensor (which may have changed in place) or an alias written since.
        current = tuple(map(group.get, spec.defaults))
        if not any(map(_is_tensor, current)) and "learning_rate" not in group:
            try:
                if current == state.synced_values:
                    return
            except Exception:  # a value without a plain truth value: take the slow path
                pass
        if "learning_rate" in group:
            # Written into the group after construction (ZeroRedundancyOptimizer copies its own
            # groups' keys into ours every step): only a new value counts, as a new `lr`.
            value = group.pop("learning_rate")
            if not _same(value, state.lr_alias, live=False):
                state.lr_alias = value
                group["lr"] = value
        if spec.betas:
            betas, b1, b2 = group.get("betas"), group.get("beta_1"), group.get("beta_2")
            betas_changed = not _same(betas, synced["betas"], live=True)
            beta_changed = not (
                _same(b1, synced["beta_1"], "beta_1" in spec.live)
                and _same(b2, synced["beta_2"], "beta_2" in spec.live)
            )
            if betas_changed:
                if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                    raise ValueError(
                        f"param_groups[{index}]['betas'] must be a pair (beta_1, beta_2); got {betas!r}."
                    )
                if beta_changed and not (
                    _same(betas[0], b1, live=False) and _same(betas[1], b2, live=False)
                ):
                    raise ValueError(
                        f"param_groups[{index}]: 'betas' and 'beta_1'/'beta_2' were changed to "
                        "different values."
                    )
                group["beta_1"], group["beta_2"] = betas
            elif beta_changed:
                group["betas"] = (b1, b2)
        changed = [
            key
            for key, default in spec.defaults.items()
            if key != "betas" and not _same(group.get(key, default), synced[key], key in spec.live)
        ]
        if not changed:
            self._resnapshot(state)
            return
        if not state.built:
            # No state yet: a new inner optimizer, so that what Keras decides at construction
            # (SGD's and RMSprop's momentum path) follows the values in force at the first step.
            state.inner = self._make_inner(group, index)
        elif all(key in spec.live for key in changed):
            for key in changed:
                self._set_live(state, index, key)
                synced[key] = group.get(key, spec.defaults[key])
        else:
            self._rebuild(state, index, changed)
        self._resnapshot(state)

    def _set_live(self, state: _GroupState, index: int, key: str) -> None:
        inner = state.inner
        name = "learning_rate" if key == "lr" else key
        value = state.group.get(key, self._spec.defaults[key])
        before = inner.slot_names() if state.built else None
        try:
            setattr(inner, name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"param_groups[{index}]['{key}']: {e}") from e
        if before is not None and inner.slot_names() != before:
            after = inner.slot_names()
            setattr(inner, name, state.synced[key])
            raise ValueError(
                f"param_groups[{index}]['{key}'] = {value!r} changes the slots ({list(before)} -> "
                f"{list(after)}) after they were created; create a new optimizer instead."
            )

    def _rebuild(self, state: _GroupState, index: int, changed: list[str]) -> None:
        """A new inner optimizer from the group's values, carrying the old one's state over."""
        new = self._make_inner(state.group, index)
        if state.built:
            for var_list in state.batches:
                new.build(var_list)
            try:
                new.set_weights(state.inner.variables())
            except ValueError as e:
                raise ValueError(
                    f"param_groups[{index}]: changing {changed} changes the optimizer's state "
                    f"layout after it was created; create a new optimizer instead ({e})"
                ) from e
        state.inner = new
        if state.built:
            params = list(state.built.values())
            state.step = None
            self._index(state, params)
            self._register(state, params)

    # ------------------------------------------------------------------------------------------
    # state: built lazily per parameter, exposed as the inner optimizer's own tensors
    def _build(self, state: _GroupState, group: Mapping[str, Any], params: list[Tensor]) -> None:
        """Creates the inner optimizer's state for ``params`` (named as Keras would name them)."""
        var_list = self._var_list(group, params)
        state.inner.build(var_list)
        self._built(state, params, var_list)

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
    # the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Applies each parameter's ``.grad`` through its group's Keras optimizer.

        Args:
            closure: re-evaluates the model and returns the loss (called with grad enabled,
                before the update).

        Returns:
            The closure's loss, or None.

        Raises:
            ValueError: a group value the Keras optimizer refuses (the message names the key),
                or state assigned into ``state[p]`` that does not fit; nothing is updated then.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._apply_grads()
        return loss

    # kerasopt's step is Python bookkeeping (checks, grouping, the transaction) around its own
    # engines, which compile themselves (`implementation="compiled"`); under torch.compile it
    # runs as it does eagerly, with the same numbers, instead of being traced.
    @torch.compiler.disable
    @locked
    def _apply_grads(self) -> None:
        states = self._sync_all()
        if self.state._dirty:
            self._adopt(states)
        # One transaction across the groups: every group's state is built and its gradients
        # planned (checked) before any group writes, so a refused gradient in a later group
        # leaves the earlier ones untouched, and no state is created. A Keras class that
        # overrides `apply_gradients` gets its own method called, after the others committed.
        built: list[tuple[_GroupState, list[Tensor], Any]] = []
        custom: list[tuple[KerasOptimizerBase, list[tuple[Tensor, Tensor]]]] = []
        with torch.no_grad(), Transaction() as step:
            try:
                for state in states:
                    pairs = [(p.grad, p) for p in state.group["params"] if p.grad is not None]
                    if not pairs:
                        continue
                    new = [p for _, p in pairs if id(p) not in state.built]
                    if new:
                        var_list = self._var_list(state.group, new)
                        step.build(state.inner, var_list)
                        built.append((state, new, var_list))
                    if type(state.inner).apply_gradients is not KerasOptimizerBase.apply_gradients:
                        custom.append((state.inner, pairs))
                    else:
                        step.plan(state.inner, pairs)
                step.commit()
            except BaseException:
                step.unbuild()
                raise
        for inner, pairs in custom:
            inner.apply_gradients(pairs)
        for state, new, var_list in built:
            self._built(state, new, var_list)
            self._register(state, new)

    @property
    def keras_optimizers(self) -> list[KerasOptimizerBase]:
        """The Keras-API optimizer of each param group (current with the groups' values).

        Useful for Keras-only calls such as ``ScheduleFreeAdamW.swap_eval_params()`` or
        ``finalize_variable_values``; change hyperparameters through ``param_groups``.
        """
        return [s.inner for s in self._sync_all()]

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

    # pickling / copy.deepcopy: torch's three fields, the inner optimizers rebuilt from them
    def __getstate__(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults,
            "state": {p: dict(v) for p, v in self.state.items()},
            "param_groups": self.param_groups,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._step_lock = StepLock()
        super().__setstate__(state)
        self.defaults.pop("differentiable", None)  # torch's __setstate__ adds it
        plain = self.state
        self._groups = {}
        self.state = _State()
        states = [self._group_state(g, i) for i, g in enumerate(self.param_groups)]
        for p, values in plain.items():
            self.state[p] = values
        self._adopt(states)
