"""The step protocol: plan a step, commit it, undo it — what every wrapper drives an optimizer by.

``Optimizer.apply_gradients`` is ``plan`` then ``commit`` under the optimizer's step lock. A
wrapper that steps one or several optimizers as one (``LossScaleOptimizer``, ``MultiOptimizer``,
``kerasopt.optim``, or your own) uses the same public calls instead of the optimizer's internals:

- ``plan(opt, grads_and_vars)`` checks and prepares a step and changes nothing (it may raise);
- ``commit(opt, plan)`` writes it (variables, slots, counters);
- ``Transaction`` plans several optimizers, then commits them all or none, holding their step
  locks from the first plan to the end of the commit;
- ``build(opt, var_list)`` / ``Undo`` create state and take it back;
- ``pairs(grads_and_vars)``, ``variables(opt, var_list)`` and ``gradients(opt, loss, var_list)``
  read the arguments the way the optimizer does; ``name_variable(opt, var, name)`` names a variable
  before the optimizer sees it; ``skip(opt)`` counts an update that applies nothing.

Example: a wrapper that skips a step whose gradients are all zero::

    >>> import torch, kerasopt as ko
    >>> from kerasopt import step
    >>> def apply_unless_zero(opt, grads_and_vars):
    ...     with step.Transaction() as t:
    ...         plan = t.plan(opt, step.pairs(grads_and_vars))
    ...         if all(not g.any() for g, _ in plan.raw_grads):
    ...             return False  # nothing written, locks released
    ...         t.commit()
    ...         return True
    >>> w = ko.Variable([1.0, 2.0], name="w")
    >>> opt = ko.optimizers.SGD(0.5)
    >>> apply_unless_zero(opt, [(torch.zeros(2), w)]), int(opt.iterations)
    (False, 0)
    >>> apply_unless_zero(opt, [(torch.ones(2), w)]), w.tolist()
    (True, [0.5, 1.5])

The stages a step runs, and the modules that own them, are in docs/architecture.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol

import torch
from torch import Tensor

from . import _features, _gradients, _legacy, _steady
from ._gradients import Grad
from ._hyper import HyperStore
from ._slots import SlotStore
from ._sync import StepLock, hold, lock_of
from ._types import Coefficients, Composition, Mark, Plan

__all__ = [
    "Plan",
    "StepLock",
    "Transaction",
    "Undo",
    "build",
    "claim_for_loss_scaling",
    "commit",
    "gradients",
    "hold",
    "lock_of",
    "loss_scaled",
    "may_raise",
    "name_variable",
    "pairs",
    "plan",
    "skip",
    "variables",
]


class Path(Protocol):
    """How an optimizer applies a plan (``kerasopt._apply.RulePath`` or the TF 2.x hook path)."""

    def accepts_complex(self, opt: Any) -> bool: ...
    def route(self, opt: Any, pairs: list[tuple[Any, Tensor]]) -> tuple[Any, Any]: ...
    def apply(self, opt: Any, plan: Plan, apply_state: dict[Any, Coefficients]) -> None: ...


class StepOwner(Protocol):
    """What the pipeline reads and writes of an optimizer (``kerasopt.Optimizer`` is one): its
    registry, hyperparameters, counter, features and the hooks a subclass may override."""

    _store: SlotStore
    _hyper: HyperStore
    _raw_iterations: Tensor
    _step: int
    _step_version: int
    _step_lock: StepLock
    _in_step: bool
    _name: str
    gradient_aggregator: Any
    gradient_transformers: list[Callable[..., Any]]
    loss_scale_factor: float | None
    gradient_accumulation_steps: int | None
    clipnorm: float | None
    clipvalue: float | None
    weight_decay: float | None
    global_clipnorm: float | None
    use_ema: bool
    ema_momentum: float
    ema_overwrite_frequency: int | None

    @property
    def _path(self) -> Path: ...
    def _sync_step(self) -> None: ...
    def _aggregate_gradients(self, grads_and_vars: list[tuple[Grad, Tensor]]) -> Any: ...
    def _create_state(self, new_vars: Sequence[Tensor]) -> None: ...
    def _flatten_var_list(self, var_list: Any) -> list[Tensor]: ...
    def _compute_gradients(
        self, loss: Any, var_list: Any, grad_loss: Tensor | None = None, tape: Any = None
    ) -> list[tuple[Grad | None, Tensor]]: ...
    def _prepare(self, variables: Sequence[Tensor]) -> dict[Any, Coefficients]: ...
    def _const(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor: ...
    def _label(self, var: Tensor) -> str: ...
    def build(self, var_list: Any) -> None: ...


# ---------------------------------------------------------------------------------------------
# arguments, read as the optimizer reads them
def pairs(grads_and_vars: Iterable[tuple[Any, Tensor]]) -> list[Any]:
    """``grads_and_vars`` as a list (a TypeError naming the argument if it is not iterable)."""
    return _gradients.materialize(grads_and_vars)


def variables(opt: StepOwner, var_list: Any) -> list[Tensor]:
    """The tensors of ``var_list`` (tensors, an ``nn.Module``, a dict of named tensors, or a
    callable returning one of those), named as ``opt`` names them."""
    return opt._flatten_var_list(var_list)


def name_variable(opt: StepOwner, var: Tensor, name: str) -> None:
    """Names ``var`` for ``opt`` before it first sees it (as a module's ``named_parameters()`` or
    a dict ``var_list`` would): its slots and state keys use the name."""
    opt._store.hint(var, name)


def loss_scaled(opt: Any) -> bool:
    """Whether a loss-scale wrapper already drives ``opt`` (TF's flag,
    ``_is_wrapped_by_loss_scale_optimizer``)."""
    return bool(getattr(opt, "_is_wrapped_by_loss_scale_optimizer", False))


def claim_for_loss_scaling(opt: Any) -> None:
    """Marks ``opt`` as the inner optimizer of a loss-scale wrapper (TF's flag); a ValueError
    if one already wraps it."""
    if loss_scaled(opt):
        raise ValueError(
            '"inner_optimizer" is already wrapped by a LossScaleOptimizer. An optimizer can '
            "only be wrapped by a single LossScaleOptimizer"
        )
    opt._is_wrapped_by_loss_scale_optimizer = True


def skip(opt: StepOwner) -> None:
    """Counts one update of ``opt`` that applies nothing (TF's ``LossScaleOptimizer`` skipping a
    step with non-finite gradients): with gradient accumulation, the K raw calls of an update,
    so the accumulation cycle stays aligned and the accumulators are left as they are."""
    k = opt.gradient_accumulation_steps or 1
    opt._sync_step()  # (a traced step counts on the tensor alone)
    opt._raw_iterations.add_(k)
    opt._step += k
    opt._step_version = opt._raw_iterations._version


def gradients(
    opt: StepOwner, loss: Any, var_list: Any, grad_loss: Tensor | None = None, tape: Any = None
) -> list[tuple[Grad | None, Tensor]]:
    """The (gradient, variable) pairs ``opt.minimize(loss, var_list)`` would apply."""
    return opt._compute_gradients(loss, var_list, grad_loss, tape)


@contextlib.contextmanager
def outside_inference_mode() -> Iterator[None]:
    """Leaves inference mode, keeping the grad mode (leaving it would restore the grad mode
    from before it was entered)."""
    grad = torch.is_grad_enabled()
    with torch.inference_mode(False), torch.set_grad_enabled(grad):
        yield


# ---------------------------------------------------------------------------------------------
# plan: checks and prepares everything, changes nothing
def plan(
    opt: StepOwner, grads_and_vars: Iterable[tuple[Any, Tensor]], aggregate: bool = True
) -> Plan:
    """Checks a step of ``opt`` and prepares it; changes nothing, may raise.

    The stages, in order: pair checks and unaliasing, ``_aggregate_gradients``, loss-scale
    division, reading the gradient accumulators (on an update call), clipping,
    ``gradient_transformers``, routing (dense / sparse), resolving the hyperparameters, and
    staging the state of variables seen for the first time.
    """
    if torch.is_inference_mode_enabled():
        # A step runs outside the caller's inference mode (`commit` too), in the grad mode it
        # was given: what it makes outlives that mode (slots, buffers, cached constants), and
        # inference tensors could neither be updated by later steps nor share compiled graphs.
        with outside_inference_mode():
            return plan(opt, grads_and_vars, aggregate)
    if opt._raw_iterations._version != opt._step_version:
        opt._sync_step()
    store = opt._store
    # a TF 2.x subclass may override `_aggregate_gradients` (read per step: it may be patched)
    aggregates = aggregate and (
        opt.gradient_aggregator is not None
        or type(opt)._aggregate_gradients is not _legacy.Hooks._aggregate_gradients
    )
    found = None
    if (
        type(grads_and_vars) is list
        and not aggregates
        and not opt.gradient_accumulation_steps
        and not opt.gradient_transformers
        and not isinstance(opt._path, _legacy.HookPath)
    ):
        # the same known variables as a step before: one pass of checks, nothing rebuilt
        found = _steady.steady(grads_and_vars, store, opt.weight_decay)
    dense: list[tuple[Tensor, Tensor]] | None = None
    composition: Composition | None = None
    constrained: list[Tensor] | None = None
    checks: _gradients.PairChecks | None = None
    if found is not None:
        composition, checked, dense, constrained = found
    else:
        checks = _gradients.PairChecks(store, type(opt).__name__, opt._path.accepts_complex(opt))
        checked = _gradients.unaliased(checks.pairs(grads_and_vars), store, opt._name)
        if aggregates:
            checked = checks.pairs(opt._aggregate_gradients(checked), transformed=True)
    if opt.loss_scale_factor is not None:
        checked = _gradients.divide(checked, opt.loss_scale_factor)
        dense = None
    raw = checked
    update = True
    k = opt.gradient_accumulation_steps
    if k:
        update = (opt._step + 1) % k == 0
        if update:
            unseen = [v for _, v in checked if store.record_of(v) is None]
            index = {id(v): len(store.by_id) + i for i, v in enumerate(unseen)}
            checked = [
                (_gradients.accumulated(g, v, k, index.get(id(v), 0), store), v) for g, v in checked
            ]
    if update:
        if opt.clipvalue is not None or opt.clipnorm is not None or opt.global_clipnorm is not None:
            checked = _gradients.clip(checked, opt.clipvalue, opt.clipnorm, opt.global_clipnorm)
            dense = None
        for transform in opt.gradient_transformers:
            assert checks is not None  # (a steady step has no transformers)
            checked = checks.pairs(list(transform(checked)), transformed=True)
    if composition is not None:
        # known, non-empty variables with dense gradients: nothing to route or create
        if dense is None:  # (the gradients were divided or clipped: dense still)
            dense = [(v, g) for g, v in checked]  # type: ignore[misc]
        hyper_values = opt._hyper.resolve(opt._raw_iterations)
        return Plan(dense, [], [], hyper_values, update, raw, None, False, composition, constrained)
    assert checks is not None
    routed, sparse = opt._path.route(opt, checked)
    new_vars = [v for _, v in raw if store.record_of(v) is None]
    hyper_values = opt._hyper.resolve(opt._raw_iterations)
    # last: slot creation and loaded-state checks can raise
    staged = store.stage(new_vars, opt._create_state)
    return Plan(routed, sparse, new_vars, hyper_values, update, raw, staged, checks.foreign)


# ---------------------------------------------------------------------------------------------
# commit: writes a plan
def may_raise(opt: StepOwner, plan: Plan) -> bool:
    """Whether committing ``plan`` runs code other than kerasopt's and torch's — a variable
    ``constraint``, a TF 2.x subclass's hooks, a tensor subclass's overrides: then a commit can
    fail half-way, and is guarded by an ``Undo``."""
    if plan.constrained is not None:  # a steady step (checked and collected in plan)
        return bool(plan.constrained)
    return (
        plan.foreign
        or isinstance(opt._path, _legacy.HookPath)
        or any(getattr(v, "constraint", None) is not None for _, v in plan.raw_grads)
    )


def commit(opt: StepOwner, plan: Plan, guarded: bool = True) -> None:
    """Writes ``plan`` (made by ``plan(opt, ...)`` and nothing committed since).

    The stages, in order: install the staged state, write the hyperparameter tensors, then
    either add to the gradient accumulators (an accumulation-only call) or compute the
    coefficients and apply the rule (zeroing the accumulators after), then the EMA, the
    constraints and ``iterations += 1``. With ``guarded`` (the default) a commit that
    ``may_raise`` is undone if it raises; a ``Transaction`` guards its commits itself.
    """
    if torch.is_inference_mode_enabled():  # (as `plan`)
        with outside_inference_mode():
            return commit(opt, plan, guarded)
    if not (guarded and may_raise(opt, plan)):
        # nothing to undo: a commit that runs only kerasopt's and torch's code does not fail
        if plan.staged is not None:
            opt._store.install(plan.staged)
        _write(opt, plan)
        return
    undo = Undo(opt, plan)
    if plan.staged is not None:
        opt._store.install(plan.staged)
    try:
        _write(opt, plan)
    except BaseException:
        undo.restore()
        raise


def _write(opt: StepOwner, plan: Plan) -> None:
    for name, value in plan.hyper_values.items():
        opt._hyper.tensors[name].copy_(value)
    composition = plan.composition
    if composition is not None:
        variables = composition.variables  # (read only)
        applied = composition.keyed  # one per (device, dtype): each has a dense gradient
    else:
        variables = [v for _, v in plan.raw_grads]
        applied = [v for v, _ in plan.dense] + [v for v, _ in plan.sparse]
    opt._in_step = True
    try:
        if plan.update:
            apply_state = opt._prepare(applied)
            opt._path.apply(opt, plan, apply_state)
            if opt.gradient_accumulation_steps:
                _features.zero_accumulators(opt._store, variables)
        else:
            _features.accumulate(opt._store, plan.raw_grads)
        if opt.use_ema:
            _features.update_ema(opt, variables)
        constrained = variables if plan.constrained is None else plan.constrained
        if constrained:
            _features.apply_constraints(constrained, opt._label)
    finally:
        opt._in_step = False
    opt._raw_iterations.add_(1)
    opt._step += 1
    opt._step_version = opt._raw_iterations._version


def snapshot(opt: StepOwner, plan: Plan) -> list[tuple[Tensor, Tensor]]:
    """Copies of every tensor a commit of ``plan`` may write (variables, their slots,
    optimizer-level weights, the hyperparameter tensors it refreshes, the counter). A number
    hyperparameter's tensor is not written by a commit, and is left alone: restoring it would
    look like a user's in-place assign (``HyperStore.source``)."""
    hyper = [opt._hyper.tensors[name] for name in plan.hyper_values]
    tensors: list[Tensor] = [opt._raw_iterations, *hyper]
    tensors += [t for _, t in opt._store.opt_weights]
    for _, var in plan.raw_grads:
        tensors.append(var)
        record = opt._store.record_of(var)
        if record is not None:
            tensors.extend(record.slots.values())
    return [(t, t.detach().clone()) for t in tensors]


class Undo:
    """What undoes a commit of ``plan`` or a state creation of ``opt``: a mark of its registry
    and, with ``copy``, copies of every tensor the commit may write (``snapshot``)."""

    def __init__(self, opt: StepOwner, plan: Plan | None = None, copy: bool = True) -> None:
        self.opt = opt
        self.new_vars: list[Tensor] = list(plan.new_vars) if plan is not None else []
        self.mark: Mark = opt._store.mark()
        self.copies = snapshot(opt, plan) if copy and plan is not None else []

    def restore(self) -> None:
        """Puts back every copied tensor and forgets the state created since the mark."""
        with torch.no_grad():
            for tensor, saved in self.copies:
                tensor.copy_(saved)
        self.opt._store.forget(self.new_vars, self.mark)


def build(opt: StepOwner, var_list: Any) -> Undo:
    """``opt.build(var_list)``; returns the ``Undo`` that forgets what it created."""
    undo = Undo(opt)
    undo.new_vars = variables(opt, var_list)
    try:
        opt.build(var_list)
    except BaseException:
        undo.restore()
        raise
    return undo


# ---------------------------------------------------------------------------------------------
# several optimizers as one step
class Transaction:
    """One all-or-nothing change of several optimizers.

    ``plan`` each optimizer's share of the step first: planning changes nothing and may raise,
    so an invalid gradient anywhere leaves every optimizer as it was. ``commit`` then commits
    every plan. A commit fails only in user code (a variable ``constraint``) or on loaded state
    that does not fit a new variable; when the step can fail so, every tensor it may write is
    copied first, and a failure restores every optimizer of the step (variables, slots,
    counters) and forgets the state created for new variables. ``build`` / ``unbuild`` do the
    same for slot creation.

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
        self._plans: list[tuple[StepOwner, Plan]] = []
        self._builds: list[Undo] = []
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
        if self._locked:  # (`commit` has released them already)
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

    def build(self, opt: StepOwner, var_list: Any) -> None:
        """``opt.build(var_list)``; if it raises, every build of this transaction is undone."""
        try:
            self._builds.append(build(opt, var_list))
        except BaseException:
            self.unbuild()
            raise

    def unbuild(self) -> None:
        """Forgets the state every ``build`` of this transaction created."""
        for undo in reversed(self._builds):
            undo.restore()
        self._builds.clear()

    def plan(self, opt: StepOwner, grads_and_vars: Sequence[tuple[Any, Tensor]]) -> Plan:
        """``opt``'s plan for its (gradient, variable) pairs (checks them; changes nothing);
        ``opt``'s step lock is held from here to the end of ``commit``."""
        self._hold(opt)
        planned = plan(opt, grads_and_vars)
        self._plans.append((opt, planned))
        return planned

    def raw_grads(self) -> list[tuple[Grad, Tensor]]:
        """Every plan's checked gradients (unscaled, before clipping), in planning order."""
        return [pair for _, planned in self._plans for pair in planned.raw_grads]

    def commit(self) -> None:
        """Commits every plan, in planning order; if one raises, undoes them all. Releases the
        step locks either way."""
        try:
            # (loaded state still pending is adopted by these steps: guarded too)
            guarded = False
            for opt, planned in self._plans:
                if opt._store.pending or may_raise(opt, planned):
                    guarded = True
                    break
            # Copies only when a commit can raise: on a plain step they would copy every
            # variable and slot (several times the model's memory) for nothing.
            undos = [Undo(opt, planned) for opt, planned in self._plans] if guarded else []
            with torch.no_grad():
                try:
                    for opt, planned in self._plans:
                        commit(opt, planned, guarded=False)
                except BaseException:
                    for undo in undos:
                        undo.restore()
                    raise
        finally:
            self.close()
