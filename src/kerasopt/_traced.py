"""The step ``torch.compile`` traces: ``apply_gradients`` (the optimizers', ``MultiOptimizer``'s
and both ``LossScaleOptimizer``s') and ``kerasopt.optim``'s ``step()`` inside a compiled
function, as one graph with no break (docs/performance.md, "Under torch.compile").

Eagerly, a step is Python bookkeeping (checks, caches, the transaction) around engines that
compile themselves. Dynamo cannot trace most of that bookkeeping (pointer and storage checks,
locks, version counters), so while dynamo traces, a step of the common case takes this path
instead (``ready``, then ``apply``):

- ``step_traceable``: the optimizer's configuration (no gradient accumulation, aggregator,
  transformers or TF 2.x hooks) and the pairs (each variable listed once, with a plain dense
  gradient of its dtype, shape and device). It reads tensor metadata and Python state only, so
  it runs while dynamo traces, and dynamo's guards on what it read re-trace the step when any
  of it changes. Anything else runs the eager step (a graph break; its checks name whatever is
  wrong).
- ``prepare``: run for real while dynamo traces (``torch.compiler.assume_constant_result``),
  before the trace reads the state: builds the state of variables seen for the first time, as
  TF creates slots while it traces a ``tf.function``. ``traceable`` then checks the state holds
  every variable, with the shape its slots were made for.
- ``apply``: the eager steady step's stages in the eager order, as tensor operations:
  loss-scale division and clipping, the hyperparameters' values (schedules and callables
  evaluated on the step counter, a tensor), the coefficients, the rule per variable (decoupled
  weight decay first, half precision in float32), the EMA and ``iterations += 1``. (A variable
  with a ``constraint`` runs the eager step: user code that raises while dynamo traces would
  have dynamo run the graph traced so far, the update, before raising.) Hyperparameters are tensors and schedules read the counter tensor, so changing a
  hyperparameter or stepping a schedule never recompiles. ``finite`` (a loss-scale wrapper's
  check) selects every written tensor back where a gradient is not finite: the eager step's
  skip, as a selection.

A traced step is one graph: it either runs whole or, if tracing raises, not at all, which is the
transaction the eager step keeps by undoing (state ``prepare`` built is forgotten if the eager
step dynamo falls back to fails too: ``take_build``). It takes no
step lock (a graph cannot). Its numbers are the compiled engine's: within the ulp bound of
docs/tolerances.md of the eager rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from . import _distributed, _features, _gradients, _legacy, step
from ._apply import RuleOwner
from ._engines import compute_dtype
from ._gradients import _PLAIN, FLOAT_DTYPES, Grad
from ._hyper import tf_cast_value
from ._types import made_for
from .step import StepOwner


class Optimizer(StepOwner, RuleOwner, Protocol):
    """What the traced step reads and writes of an optimizer (``kerasopt.Optimizer`` is one)."""

    _traced_build: tuple[Any, int, int] | None

    @property
    def iterations(self) -> Tensor: ...


__all__ = [
    "apply",
    "hyper_values",
    "prepare",
    "ready",
    "step_traceable",
    "take_build",
    "traceable",
]


def step_traceable(opt: Optimizer, pairs: Sequence[Any], aggregate: bool = True) -> bool:
    """Whether this step of ``opt`` is one the traced path may run, as far as the optimizer's
    configuration and the pairs themselves say (``traceable`` checks them against the state)."""
    if not type(opt).traceable or isinstance(opt._path, _legacy.HookPath):
        return False
    if (
        opt.gradient_accumulation_steps
        or opt.gradient_transformers
        or (
            aggregate
            and (
                opt.gradient_aggregator is not None
                or type(opt)._aggregate_gradients is not _legacy.Hooks._aggregate_gradients
            )
        )
    ):
        return False
    if not pairs:
        return False
    seen: set[int] = set()
    for pair in pairs:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            return False
        grad, var = pair
        if type(grad) not in _PLAIN or not isinstance(var, Tensor) or type(var) not in _PLAIN:
            return False
        if (
            id(var) in seen
            or grad.layout != torch.strided
            or var.dtype not in FLOAT_DTYPES
            or grad.dtype != var.dtype
            or grad.device != var.device
            or grad.shape != var.shape
            or var.numel() == 0
            or not var.is_leaf
            or var.device.type == "meta"
            or _distributed.is_dtensor(var)
            # A constraint is user code that runs after the update: if it raised while dynamo
            # traced, dynamo would run the graph traced so far (the update) before raising.
            or getattr(var, "constraint", None) is not None
        ):
            return False
        seen.add(id(var))
    return True


@torch.compiler.assume_constant_result
def prepare(opt: Optimizer, *variables: Tensor) -> bool:
    """Run (eagerly) while dynamo traces, before the trace reads the optimizer's state: builds
    the state of variables seen for the first time, as the eager step would (TF creates slots
    while tracing a ``tf.function`` too); False when the eager step must run instead (loaded
    state waiting for its variables: the eager step checks and adopts it). Dynamo takes the
    result as a constant; the trace's own reads of the state (``traceable``) are what it
    guards on."""
    store = opt._store
    if store.pending:
        return False
    new = [v for v in variables if store.by_id.get(id(v)) is None]
    if new or not store.built:
        with torch.no_grad():
            undo = step.build(opt, new)
        # If the trace then fails (a constraint raises), dynamo runs the step eagerly, and an
        # eager step that fails forgets this state too (`take_build`): a failed first step
        # leaves the optimizer as it was, compiled or not.
        opt._traced_build = (undo, id(opt._raw_iterations), opt._raw_iterations._version)
    return True


def take_build(opt: Optimizer) -> step.Undo | None:
    """The ``Undo`` of the state ``prepare`` built for a trace that no step has used since (the
    counter has not moved), for the eager step that runs next to forget if it fails; None
    otherwise. Clears it either way."""
    entry = opt._traced_build
    opt._traced_build = None
    counter = opt._raw_iterations
    if entry is None or entry[1:] != (id(counter), counter._version):
        return None
    undo: step.Undo = entry[0]
    return undo


def traceable(opt: Optimizer, pairs: Sequence[Any]) -> bool:
    """Whether the state holds every variable of ``step_traceable`` pairs, with the shape, dtype
    and device its slots were made for (``param.data = ...`` may change them: the eager step
    names that)."""
    store = opt._store
    if not store.built or store.pending:
        return False
    for _, var in pairs:
        record = store.by_id.get(id(var))
        if record is None or not made_for(record, var):
            return False
    return True


def ready(opt: Optimizer, pairs: Sequence[Any], aggregate: bool = True) -> bool:
    """``step_traceable``, then ``prepare`` (new variables' state, built eagerly), then
    ``traceable``: whether ``apply`` runs this step while dynamo traces."""
    return (
        step_traceable(opt, pairs, aggregate)
        and prepare(opt, *[v for _, v in pairs])
        and traceable(opt, pairs)
    )


def hyper_values(opt: Optimizer) -> dict[str, Tensor]:
    """The step's values of ``opt``'s callable and tensor hyperparameters (schedules evaluated
    on the counter): user code, which a step of several optimizers runs for every one of them
    before any writes (``apply``'s ``values``), as the eager ``Transaction`` plans first."""
    return opt._hyper.resolve(opt._raw_iterations)


def apply(
    opt: Optimizer,
    pairs: Sequence[Any],
    finite: Tensor | None = None,
    count_skip: bool = True,
    values: dict[str, Tensor] | None = None,
) -> Tensor:
    """The step of ``traceable`` pairs, as tensor operations; returns ``opt.iterations``.

    ``finite`` (a bool tensor; a ``LossScaleOptimizer``'s check of the gradients): where it is
    False the step changes nothing but ``iterations`` (a skipped step counts, as in TF; with
    ``count_skip=False``, as in Keras 3, not even that), every tensor it writes selected back
    to its value before the step. ``values``: ``hyper_values(opt)``, computed already."""
    if values is None:
        values = hyper_values(opt)
    with torch.no_grad():
        saved = [] if finite is None else [(t, t.clone()) for t in _written(opt, pairs)]
        checked: list[tuple[Grad, Tensor]] = [(g.detach(), v) for g, v in pairs]
        if opt.loss_scale_factor is not None:
            checked = _gradients.divide(checked, opt.loss_scale_factor)
        if opt.clipvalue is not None or opt.clipnorm is not None or opt.global_clipnorm is not None:
            checked = _gradients.clip(checked, opt.clipvalue, opt.clipnorm, opt.global_clipnorm)
        for name, value in values.items():
            opt._hyper.tensors[name].copy_(value)
        variables = [v for _, v in checked]
        apply_state = opt._prepare(variables)
        for grad, var in checked:
            record = opt._store.by_id[id(var)]
            compute = compute_dtype(var.dtype)
            c = apply_state[(var.device, compute)]
            rule = opt.update
            wd = opt._weight_decay_for(record)
            if wd is not None:
                c = c.replace(weight_decay=opt._const(tf_cast_value(wd), compute, var.device))
                rule = opt._update_with_weight_decay
            slots = opt._rule_slots(record)
            grad = cast(Tensor, grad)  # (dense: step_traceable)
            if compute == var.dtype:
                rule(var, grad, c=c, **slots)
                continue
            # (half precision: computed in float32, rounded once on store, as the engines do)
            wide = var.float()
            wide_slots = {name: t.float() for name, t in slots.items()}
            rule(wide, grad.float(), c=c, **wide_slots)
            var.copy_(wide)
            for name, t in slots.items():
                if t is not wide_slots[name]:
                    t.copy_(wide_slots[name])
        if opt.use_ema:
            _features.update_ema(opt, variables, traced=True)
        for tensor, before in saved:
            tensor.copy_(torch.where(finite, tensor, before))  # type: ignore[arg-type]
        if finite is None or count_skip:
            opt._raw_iterations.add_(1)
        else:
            opt._raw_iterations.add_(finite.to(opt._raw_iterations.dtype))
    return opt.iterations


def _written(opt: Optimizer, pairs: Sequence[Any]) -> list[Tensor]:
    """Every tensor a step of ``pairs`` may write but the counter (``step.snapshot``'s list):
    the variables, their slots, the optimizer-level weights, the refreshed hyperparameters."""
    store = opt._store
    tensors = [opt._hyper.tensors[name] for name in opt._hyper.dynamic()]
    tensors += [t for _, t in store.opt_weights]
    for _, var in pairs:
        tensors.append(var)
        tensors.extend(store.by_id[id(var)].slots.values())
    return tensors
