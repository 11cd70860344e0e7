"""``KerasOptimizer``: the torch.optim protocol over one Keras-API optimizer per param group.

The adapter holds no optimizer math. Each param group owns one ``kerasopt.optimizers.<Name>``
instance built from the group's values (so a group behaves exactly as a separate Keras optimizer
would); ``step()`` copies changed group values onto it, collects ``(p.grad, p)`` and calls its
``apply_gradients``. ``state[p]`` holds the inner optimizer's slot tensors themselves (no copies),
keyed by their TensorFlow names, plus ``"step"``.

``KerasOptimizer`` (construction, param groups synced onto their inner optimizers, the step) is
here; the group spec and per-group records are ``_groups``, the parameter state and torch's
``state_dict`` / ``load_state_dict`` are ``_torch_state`` (``KerasOptimizer``'s base class).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import operator
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import _traced
from .._engines import GRAD_VIEWS
from .._sync import StepLock, locked
from ..optimizer import Optimizer as KerasOptimizerBase
from ..step import outside_inference_mode
from ..variables import compact
from ..wrappers._base import Transaction
from ._groups import _FEATURES as _FEATURES
from ._groups import _MISSING as _MISSING
from ._groups import _GroupState as _GroupState
from ._groups import _is_tensor as _is_tensor
from ._groups import _ParamGroup as _ParamGroup
from ._groups import _same as _same
from ._groups import _Spec as _Spec
from ._torch_state import _WEIGHT_NAMES as _WEIGHT_NAMES
from ._torch_state import _as_step as _as_step
from ._torch_state import _ParamState as _ParamState
from ._torch_state import _State as _State
from ._torch_state import _TorchState as _TorchState
from ._torch_state import _weight_names as _weight_names

_GRAD = operator.attrgetter("grad")
_NONES = itertools.repeat(None)

__all__ = ["KerasOptimizer"]

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


class KerasOptimizer(_TorchState):
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
        # state built while dynamo traced a step: (forget, counter, its version then)
        self._traced_builds: list[tuple[Callable[[], None], Tensor, int]] = []
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
        values = tuple(map(state.group.get, self._spec.defaults))
        state.synced_values = values
        # the values' types, when none is a tensor: a step whose values have the same types holds
        # no tensor either, and compares them in C (`_sync`)
        state.synced_types = None if any(map(_is_tensor, values)) else tuple(map(type, values))

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
        if "learning_rate" not in group and tuple(map(type, current)) == state.synced_types:
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
        if torch.compiler.is_compiling() and self._traced_step():
            return loss
        self._apply_grads()
        return loss

    # Under torch.compile the bookkeeping (syncing the groups' values, adopting assigned
    # state, building new parameters' state) runs for real while dynamo traces, once per
    # trace (`_prepare_traced_step`), and the step itself is traced as tensor operations
    # (kerasopt._traced): one graph, no break.
    @locked
    def _prepare_trace(self) -> bool:
        """Syncs the groups' values into their Keras optimizers, adopts state assigned into
        ``state[p]`` and builds the state of parameters seen for the first time, as the eager
        step does; returns whether the step can be traced (``kerasopt._traced``), with no
        tensor in a group's values (a tensor may change in place, which no guard sees)."""
        states = self._sync_all()
        if self.state._dirty:
            self._adopt(states)
        for state in states:
            inner = state.inner
            if (
                state.synced_types is None
                or type(inner).apply_gradients is not KerasOptimizerBase.apply_gradients
            ):
                return False
            pairs = [(p.grad, p) for p in state.group["params"] if p.grad is not None]
            if not pairs:
                continue
            if not _traced.step_traceable(inner, pairs):
                return False
            new = [p for _, p in pairs if id(p) not in state.built]
            if new:
                # (forgotten if the trace fails and the eager step dynamo runs then fails too,
                # before any step used it: `_apply_grads`)
                counter = inner.iterations
                self._traced_builds.append(
                    (self._build_undoable(state, new), counter, counter._version)
                )
            if not _traced.traceable(inner, pairs):
                return False
        return True

    def _traced_step(self) -> bool:
        """The step while dynamo traces; False (nothing done) when it must run eagerly."""
        if not _prepare_traced_step(self):
            return False
        # Every check, then every group's hyperparameter values (user code), then the writes:
        # nothing is written unless the whole step is traced.
        steps = []
        # (`param_groups` read around dynamo's optimizer support, which assumes plain dicts)
        for group in self.__dict__["param_groups"]:
            state = self._groups[id(group)]
            # read here, so that dynamo guards on them: a new value re-traces (and syncs)
            if tuple(map(group.get, self._spec.defaults)) != state.synced_values:
                return False
            pairs = [(p.grad, p) for p in group["params"] if p.grad is not None]
            if pairs:
                steps.append((state.inner, pairs))
        values = [_traced.hyper_values(inner) for inner, _ in steps]
        for (inner, pairs), hyper in zip(steps, values):
            _traced.apply(inner, pairs, values=hyper)
        return True

    # kerasopt's step is Python bookkeeping (checks, grouping, the transaction) around its own
    # engines, which compile themselves (`implementation="compiled"`); under torch.compile it
    # runs as it does eagerly, with the same numbers, instead of being traced.
    @torch.compiler.disable
    @locked
    def _apply_grads(self) -> None:
        # state built while dynamo traced this step (`_prepare_trace`) and not used since: a
        # failed step leaves it unbuilt, as an eager first step that fails does
        unused = self._unused_traced_builds() if self._traced_builds else []
        try:
            # (state it creates, the inner Keras optimizers included, must be normal tensors:
            # inference tensors made under the caller's inference mode could not be updated by
            # a later step, nor give their version counters)
            inference = torch.is_inference_mode_enabled()
            with outside_inference_mode() if inference else contextlib.nullcontext():
                self._apply_grads_locked()
        except BaseException:
            for forget in reversed(unused):
                forget()
            raise

    def _unused_traced_builds(self) -> list[Callable[[], None]]:
        builds, self._traced_builds = self._traced_builds, []
        return [forget for forget, counter, version in builds if counter._version == version]

    def _apply_grads_locked(self) -> None:
        states = self._sync_all()
        if self.state._dirty:
            self._adopt(states)
        # One transaction across the groups: every group's state is built and its gradients
        # planned (checked) before any group writes, so a refused gradient in a later group
        # leaves the earlier ones untouched, and no state is created. A Keras class that
        # overrides `apply_gradients` gets its own method called, after the others committed.
        built: list[tuple[_GroupState, list[Tensor], Any]] = []
        custom: list[tuple[KerasOptimizerBase, list[tuple[Tensor, Tensor]]]] = []
        # GRAD_VIEWS: under implementation="flat", `.grad` becomes a view of the group's
        # gradient buffer, which the next backward accumulates into (docs/performance.md).
        token = GRAD_VIEWS.set(True)
        try:
            with torch.no_grad(), Transaction() as step:
                try:
                    for state in states:
                        params = state.group["params"]
                        grads = list(map(_GRAD, params))
                        pairs = (
                            [(g, p) for g, p in zip(grads, params) if g is not None]
                            if any(map(operator.is_, grads, _NONES))
                            else list(zip(grads, params))  # (C-level: every `.grad` set)
                        )
                        if not pairs:
                            continue
                        new = (
                            []
                            if state.built.keys() >= set(map(id, state.group["params"]))
                            else [p for _, p in pairs if id(p) not in state.built]
                        )
                        if new:
                            var_list = self._var_list(state.group, new)
                            step.build(state.inner, var_list)
                            built.append((state, new, var_list))
                        if (
                            type(state.inner).apply_gradients
                            is not KerasOptimizerBase.apply_gradients
                        ):
                            custom.append((state.inner, pairs))
                        else:
                            step.plan(state.inner, pairs)
                    step.commit()
                except BaseException:
                    step.unbuild()
                    raise
        finally:
            GRAD_VIEWS.reset(token)
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

    # pickling / copy.deepcopy: torch's three fields, the inner optimizers rebuilt from them
    def __getstate__(self) -> dict[str, Any]:
        # State that flat storage made windows of one buffer is pickled as copies of its own
        # elements (`compact`): plain pickle would write the whole buffer once per window. The
        # parameters stay the objects they are, so that a model pickled or copied with its
        # optimizer keeps sharing them (torch pickles them).
        state = {
            p: {k: compact(t) if type(t) is torch.Tensor else t for k, t in values.items()}
            for p, values in self.state.items()
        }
        return {"defaults": self.defaults, "state": state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._step_lock = StepLock()
        self._traced_builds = []
        super().__setstate__(state)
        self.defaults.pop("differentiable", None)  # torch's __setstate__ adds it
        plain = self.state
        self._groups = {}
        self.state = _State()
        states = [self._group_state(g, i) for i, g in enumerate(self.param_groups)]
        for p, values in plain.items():
            self.state[p] = values
        self._adopt(states)


@torch.compiler.assume_constant_result
def _prepare_traced_step(opt: KerasOptimizer) -> bool:
    """``opt._prepare_traced_step()``, run while dynamo traces ``opt.step()`` (eagerly, its
    result a constant of the trace; a method cannot be marked so)."""
    return opt._prepare_trace()
