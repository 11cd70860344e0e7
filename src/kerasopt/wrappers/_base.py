"""What the wrappers share: ``Wrapper``, the delegating base, and ``Transaction``, one step across
inner optimizers.

A wrapper owns no hyperparameters, slots or update rule: it composes ``kerasopt`` optimizers and
drives their pipeline (``_plan`` changes nothing and may raise, ``_commit`` writes). So
``Wrapper`` is not an ``Optimizer`` subclass; it is registered as a virtual one
(``Optimizer.register``), so ``isinstance(wrapper, Optimizer)`` holds, as TF's
``LossScaleOptimizer`` is an ``Optimizer``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from .._gradients import Grad
from .._serialization import build_from_config
from .._slots import Mark
from .._sync import StepLock, lock_of, locked
from ..optimizer import Optimizer, Plan

__all__ = ["Transaction", "Wrapper"]

_W = TypeVar("_W", bound="Wrapper")


class Transaction:
    """One all-or-nothing change of several inner optimizers.

    ``plan`` each inner optimizer's share of the step first: planning changes nothing and may
    raise, so an invalid gradient anywhere leaves every inner optimizer as it was. ``commit``
    then commits every plan. A commit fails only in user code (a variable ``constraint``) or on
    loaded state that does not fit a new variable; when the step can fail so, every tensor it may
    write is copied first, and a failure restores every inner optimizer of the step (variables,
    slots, counters) and forgets the state created for new variables. ``build`` / ``unbuild`` do
    the same for slot creation.

    A transaction holds the step lock of every optimizer it plans, from its ``plan`` until the
    end of ``commit`` (or ``close()`` / the end of a ``with`` block, for a step that stops
    early), so no other thread steps, saves or loads them in between. Use it as a context
    manager so that a failing plan releases them.

    Example:
        >>> import torch, kerasopt as ko
        >>> def refuse(v):
        ...     raise RuntimeError("constraint failed")
        >>> a, b = ko.Variable(1.0), ko.Variable(1.0, constraint=refuse)
        >>> fast, slow = ko.optimizers.SGD(1.0), ko.optimizers.SGD(0.5)
        >>> with Transaction() as step:
        ...     _ = step.plan(fast, [(torch.tensor(1.0), a)])
        ...     _ = step.plan(slow, [(torch.tensor(1.0), b)])
        ...     step.commit()  # b's constraint raises: fast's committed update is undone too
        Traceback (most recent call last):
        RuntimeError: constraint failed
        >>> float(a), float(b), int(fast.iterations), fast.built
        (1.0, 1.0, 0, False)
    """

    def __init__(self) -> None:
        self._plans: list[tuple[Optimizer, Plan]] = []
        self._builds: list[tuple[Optimizer, list[Tensor], Mark]] = []
        self._held = contextlib.ExitStack()
        self._locked: set[int] = set()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Releases the step locks this transaction holds."""
        self._locked.clear()
        self._held.close()

    def _hold(self, opt: Any) -> None:
        lock = lock_of(opt)
        if lock is not None and id(lock) not in self._locked:
            self._held.enter_context(lock)
            self._locked.add(id(lock))

    def build(self, opt: Optimizer, var_list: Any) -> None:
        """``opt.build(var_list)``; if it raises, every build of this transaction is undone."""
        self._builds.append((opt, opt._flatten_var_list(var_list), opt._creation_mark()))
        try:
            opt.build(var_list)
        except BaseException:
            self.unbuild()
            raise

    def unbuild(self) -> None:
        """Forgets the state every ``build`` of this transaction created."""
        for opt, variables, mark in reversed(self._builds):
            opt._forget_created(variables, mark)
        self._builds.clear()

    def plan(self, opt: Optimizer, grads_and_vars: Sequence[tuple[Any, Tensor]]) -> Plan:
        """``opt``'s plan for its (gradient, variable) pairs (checks them; changes nothing);
        ``opt``'s step lock is held from here to the end of ``commit``."""
        self._hold(opt)
        plan = opt._plan(grads_and_vars)
        self._plans.append((opt, plan))
        return plan

    def raw_grads(self) -> list[tuple[Grad, Tensor]]:
        """Every plan's checked gradients (unscaled, before clipping), in planning order."""
        return [pair for _, plan in self._plans for pair in plan.raw_grads]

    def commit(self) -> None:
        """Commits every plan, in planning order; if one raises, undoes them all. Releases the
        step locks either way."""
        try:
            self._commit()
        finally:
            self.close()

    def _commit(self) -> None:
        plans = self._plans
        guarded = any(opt._commit_may_raise(plan) or opt._store.pending for opt, plan in plans)
        # Copies only when a commit can raise: on a plain step they would copy every variable
        # and slot (several times the model's memory) for nothing.
        saved = (
            [(opt, plan, opt._snapshot(plan), opt._creation_mark()) for opt, plan in plans]
            if guarded
            else []
        )
        with torch.no_grad():
            try:
                for opt, plan in plans:
                    opt._commit(plan, transactional=not guarded)
            except BaseException:
                for opt, plan, snapshot, mark in saved:
                    opt._restore(snapshot)
                    opt._forget_created(plan.new_vars, mark)
                raise


class Wrapper:
    """Base of the optimizers that drive other optimizers (``LossScaleOptimizer``,
    ``MultiOptimizer``).

    It forwards the Keras surface a wrapper shares to its inner optimizers: ``variables()``
    (the wrapper's own, then each inner optimizer's), ``weights``, ``get_weights``,
    ``get_slot`` / ``get_slot_names``, ``finalize_variable_values``, the prefixed state dict and
    the config. A subclass says which inner optimizers it has (``_inners``), which one owns a
    variable (``_owner_of``), how it reads variable lists (``_flatten_var_list``), its state-dict
    prefixes (``_state_prefix``) and its config.
    """

    #: the constructor arguments holding serialized optimizers, rebuilt by ``from_config``
    _optimizer_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str) -> None:
        self._name = name
        # the wrapper's own step boundary (its own state: a loss scale, a step counter); a step
        # also holds its inner optimizers' locks, through Transaction
        self._step_lock = StepLock()

    @property
    def name(self) -> str:
        return self._name

    # ------------------------------------------------------------------------------------------
    # what a wrapper defines
    def _inners(self) -> list[Optimizer]:
        """The inner optimizers, in ``variables()`` and state-dict order."""
        raise NotImplementedError

    def _owner_of(self, var: Tensor) -> Optimizer:
        """The inner optimizer that updates ``var``."""
        raise NotImplementedError

    def _flatten_var_list(self, var_list: Any) -> list[Tensor]:
        """The tensors of ``var_list`` (a module, a named dict, a callable...)."""
        raise NotImplementedError

    def _state_prefix(self, index: int) -> str:
        """The state-dict prefix of the ``index``-th inner optimizer's keys."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, optimizers serialized."""
        raise NotImplementedError

    def _own_variables(self) -> list[Tensor]:
        """The wrapper's own weights, listed before the inner optimizers' in ``variables()``."""
        return []

    # ------------------------------------------------------------------------------------------
    # weights and slots
    def variables(self) -> list[Tensor]:
        """The wrapper's own weights (if any), then each inner optimizer's ``variables()``."""
        out = self._own_variables()
        for opt in self._inners():
            out.extend(opt.variables())
        return out

    @property
    def weights(self) -> list[Tensor]:
        return self.variables()

    @locked
    def get_weights(self) -> list[np.ndarray]:
        """The values of ``weights`` as NumPy arrays."""
        return [w.detach().cpu().numpy().copy() for w in self.variables()]

    def get_slot(self, var: Tensor, slot_name: str) -> Tensor:
        """The slot ``slot_name`` of ``var``, from the inner optimizer that owns ``var``."""
        return self._owner_of(var).get_slot(var, slot_name)

    def get_slot_names(self) -> list[str]:
        """The inner optimizers' slot names, each once, in first-creation order."""
        names: list[str] = []
        for opt in self._inners():
            names.extend(n for n in opt.get_slot_names() if n not in names)
        return names

    def finalize_variable_values(self, var_list: Any) -> None:
        """Lets each inner optimizer finalize its own variables (EMA overwrite, if enabled)."""
        groups: dict[int, tuple[Optimizer, list[Tensor]]] = {}
        for var in self._flatten_var_list(var_list):
            owner = self._owner_of(var)
            groups.setdefault(id(owner), (owner, []))[1].append(var)
        for owner, group in groups.values():
            owner.finalize_variable_values(group)

    # ------------------------------------------------------------------------------------------
    # state-dict plumbing
    def _inner_state(self) -> dict[str, Tensor]:
        """Every inner optimizer's ``state_dict()``, each key under its ``_state_prefix``."""
        state: dict[str, Tensor] = {}
        for index, opt in enumerate(self._inners()):
            prefix = self._state_prefix(index)
            state.update({f"{prefix}{k}": v for k, v in opt.state_dict().items()})
        return state

    def _split_state(
        self, state_dict: dict[Any, Any]
    ) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
        """``state_dict`` as each inner optimizer's part (prefixes removed), and the other
        entries (the wrapper's own, or unknown keys)."""
        prefixes = [self._state_prefix(i) for i in range(len(self._inners()))]
        parts: list[dict[str, Any]] = [{} for _ in prefixes]
        own: dict[Any, Any] = {}
        for key, value in state_dict.items():
            index = next(
                (i for i, p in enumerate(prefixes) if isinstance(key, str) and key.startswith(p)),
                None,
            )
            if index is None:
                own[key] = value
            else:
                parts[index][key[len(prefixes[index]) :]] = value
        return parts, own

    def _load_inner_state(self, parts: Iterable[dict[str, Any]], strict: bool) -> None:
        """Loads each part into its inner optimizer, all or nothing (each inner load checks
        everything before it assigns; the ones already loaded are restored if a later fails)."""
        inners = self._inners()
        before = [opt.state_dict() for opt in inners[:-1]]
        done = 0
        try:
            for opt, part in zip(inners, parts):
                opt.load_state_dict(part, strict=strict)
                done += 1
        except Exception:
            for opt, old in zip(inners[:done], before):
                opt.load_state_dict(old)
            raise

    # ------------------------------------------------------------------------------------------
    # config
    @classmethod
    def from_config(
        cls: type[_W], config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> _W:
        """Deserializes the optimizers in ``config``, then calls the constructor."""
        return build_from_config(cls, config, custom_objects, optimizers=cls._optimizer_arguments)

    def _describe(self) -> str:
        return f"name={self._name!r}"

    def __repr__(self) -> str:
        return f"<kerasopt.optimizers.{type(self).__name__} {self._describe()}>"


# TF's LossScaleOptimizer is an Optimizer: isinstance checks (`optimizers.get`, what a wrapper or
# an OptimizerMap accepts) see every wrapper as one.
Optimizer.register(Wrapper)
