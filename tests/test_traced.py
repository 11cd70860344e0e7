"""torch.compile traces a step (kerasopt._traced): a compiled function that calls
``apply_gradients`` or ``kerasopt.optim.<Name>.step()`` is one graph under ``fullgraph=True``,
from the first call (the state is built while dynamo traces), with the eager step's numbers
within the compiled engine's ulp bound; hyperparameter changes and schedules do not recompile.
Anything the traced path does not run (wrappers, sparse gradients, a wrong gradient) runs the
eager step, which checks it and names what is wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch._dynamo.utils as dynamo_utils

import kerasopt as ko
from tests.helpers import make_grads, make_vars
from tests.keras3_specs import KERAS3
from tests.specs import OPTIMIZERS
from tests.test_compiled import _assert_within_steps_ulps

SHAPES = [(), (5,), (3, 4)]
STEPS = 3
# the richest configuration of each optimizer in the table (its last)
RICHEST = [(spec, spec.configs[-1]) for spec in OPTIMIZERS]
RICHEST3 = [(spec, spec.configs[-1]) for spec in KERAS3]
OPTIM_NAMES = sorted(n for n in dir(ko.optim) if n[0].isupper() and n != "KerasOptimizer")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return int(dynamo_utils.counters["stats"]["unique_graphs"])


def _breaks() -> int:
    return sum(dynamo_utils.counters["graph_break"].values())


def _keras_run(make: Any, compiled: bool, dtype=torch.float32, steps=STEPS, change=None):
    """``steps`` steps of a fresh optimizer on fresh variables, eagerly or under
    ``torch.compile(fullgraph=True)``; ``change(opt, i)`` runs before step ``i``."""
    variables = make_vars(SHAPES, dtype, seed=3)
    opt = make()

    def step(grads):
        return opt.apply_gradients(zip(grads, variables))

    run = torch.compile(step, fullgraph=True) if compiled else step
    for i, grads in enumerate(make_grads(SHAPES, steps, dtype, seed=4)):
        if change is not None:
            change(opt, i)
        run(grads)
    return opt, variables


def _assert_same_runs(eager, traced, steps=STEPS):
    (eager_opt, eager_vars), (traced_opt, traced_vars) = eager, traced
    assert int(traced_opt.iterations) == int(eager_opt.iterations) == steps
    for i, (a, b) in enumerate(zip(eager_vars, traced_vars)):
        _assert_within_steps_ulps(b, a, steps, f"variable {i}")
        for name in eager_opt._store.by_id[id(a)].slots:
            got, ref = traced_opt.get_slot(b, name), eager_opt.get_slot(a, name)
            _assert_within_steps_ulps(got, ref, steps, f"slot {name!r} of variable {i}")


@pytest.mark.parametrize(
    ("module", "name", "config"),
    [(ko.optimizers, s.name, c) for s, c in RICHEST]
    + [(ko.keras3, s.name, c) for s, c in RICHEST3],
    ids=[s.name for s, _ in RICHEST] + [f"keras3-{s.name}" for s, _ in RICHEST3],
)
def test_every_optimizer_traces_as_one_graph_from_the_first_step(module, name, config):
    """Every optimizer of both tables (``kerasopt.optimizers`` and ``kerasopt.keras3``)."""
    make = lambda: getattr(module, name)(**config)  # noqa: E731
    eager = _keras_run(make, compiled=False)
    traced = _keras_run(make, compiled=True)
    assert (_graphs(), _breaks()) == (1, 0)
    _assert_same_runs(eager, traced)


@pytest.mark.parametrize(
    "config",
    [
        {"weight_decay": 0.1, "clipnorm": 0.5},
        {"global_clipnorm": 0.3, "use_ema": True, "ema_overwrite_frequency": 2},
        {"clipvalue": 0.05, "loss_scale_factor": 4.0, "use_ema": True},
        {"decay": 0.1, "amsgrad": True},
    ],
    ids=["decay+clipnorm", "global_clipnorm+ema", "clipvalue+loss_scale", "legacy_decay"],
)
def test_the_base_features_trace_with_the_eager_numbers(config):
    make = lambda: ko.optimizers.Adam(0.05, **config)  # noqa: E731
    eager = _keras_run(make, compiled=False, steps=4)
    traced = _keras_run(make, compiled=True, steps=4)
    assert (_graphs(), _breaks()) == (1, 0)
    _assert_same_runs(eager, traced, steps=4)


@pytest.mark.parametrize("constraint", [False, True], ids=["excluded", "constraint"])
def test_excluded_variables_trace_and_a_constraint_runs_the_eager_step(constraint):
    """``exclude_from_weight_decay`` by name traces; a variable with a ``constraint`` (user
    code run after the update) runs the eager step at a graph break, with its numbers."""

    def make():
        opt = ko.optimizers.AdamW(0.05, weight_decay=0.2)
        opt.exclude_from_weight_decay(var_names=["bias"])
        return opt

    clamp = (lambda t: t.clamp(-0.9, 0.9)) if constraint else None
    runs = []
    for compiled in (False, True):
        w = ko.Variable(torch.ones(3, 2), name="kernel", constraint=clamp)
        b = ko.Variable(torch.ones(2), name="bias")
        opt = make()
        step = lambda g, opt=opt, w=w, b=b: opt.apply_gradients([(g[0], w), (g[1], b)])  # noqa: E731
        run = torch.compile(step, fullgraph=not constraint) if compiled else step
        for i in range(3):
            run([torch.full((3, 2), 0.1 * (i + 1)), torch.full((2,), -0.2)])
        runs.append((w, b))
    (w0, b0), (w1, b1) = runs
    torch.testing.assert_close(w1.detach(), w0.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(b1.detach(), b0.detach(), rtol=1e-6, atol=0)
    if constraint:
        assert float(w1.detach().max()) <= 0.9 and _breaks() >= 1
    else:
        assert _breaks() == 0


def test_half_precision_variables_are_computed_in_float32_when_traced():
    make = lambda: ko.optimizers.Adam(0.05)  # noqa: E731
    eager = _keras_run(make, compiled=False, dtype=torch.bfloat16)
    traced = _keras_run(make, compiled=True, dtype=torch.bfloat16)
    for a, b in zip(eager[1], traced[1]):
        assert b.dtype == torch.bfloat16
        _assert_within_steps_ulps(b, a, STEPS, "bfloat16 variable")
    assert _breaks() == 0


def test_hyperparameter_changes_and_schedules_do_not_recompile():
    schedule = ko.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)

    def change(opt, i):
        opt.beta_1 = 0.9 - 0.1 * i  # a Hyper: a tensor the graph reads
        if i == 2:
            opt.learning_rate = schedule  # a number becomes a schedule: one re-trace

    make = lambda: ko.optimizers.Adam(0.05)  # noqa: E731
    eager = _keras_run(make, compiled=False, steps=5, change=change)
    traced = _keras_run(make, compiled=True, steps=5, change=change)
    _assert_same_runs(eager, traced, steps=5)
    assert _graphs() == 2 and _breaks() == 0  # the number's graph and the schedule's

    opt, variables = traced
    counted = _graphs()
    step = torch.compile(lambda g: opt.apply_gradients(zip(g, variables)), fullgraph=True)
    for grads in make_grads(SHAPES, 3, torch.float32, seed=9):
        opt.learning_rate = schedule  # the same schedule again: nothing to re-trace
        step(grads)
    assert int(opt.iterations) == 8 and _graphs() == counted + 1  # (the new function's graph)


def test_a_number_assigned_into_the_learning_rate_variable_is_read_by_the_graph():
    opt, variables = _keras_run(lambda: ko.optimizers.SGD(0.1), compiled=True, steps=1)
    step = torch.compile(lambda g: opt.apply_gradients(zip(g, variables)), fullgraph=True)
    before = [v.detach().clone() for v in variables]
    opt.learning_rate.assign(0.5)  # TF's `backend.set_value(opt.lr, 0.5)`
    grads = [torch.ones_like(v) for v in variables]
    step(grads)
    for a, b in zip(before, variables):
        assert torch.allclose(b, a - 0.5)


def test_an_unsupported_step_runs_eagerly_inside_the_compiled_function():
    """A sparse gradient (or a LossScaleOptimizer that must warn) is not traced: it runs the
    eager step (a graph break), with its numbers; ``fullgraph=True`` then refuses, as for any
    break."""
    var = ko.Variable(torch.ones(4, 2))
    opt = ko.optimizers.Adam(0.1)
    sparse = ko.IndexedSlices(torch.ones(1, 2), torch.tensor([2]), torch.Size([4, 2]))
    step = torch.compile(lambda: opt.apply_gradients([(sparse, var)]))
    step()
    ref_var = ko.Variable(torch.ones(4, 2))
    ko.optimizers.Adam(0.1).apply_gradients([(sparse, ref_var)])
    assert torch.equal(var, ref_var) and _breaks() >= 1
    whole = torch.compile(lambda: opt.apply_gradients([(sparse, var)]), fullgraph=True)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        whole()


def _scaled_steps(make, compiled, legacy):
    """Six steps of a dynamic LossScaleOptimizer, two with a non-finite gradient (skipped)."""
    shapes = [(4, 3), (3,)]
    grads = make_grads(shapes, 6, torch.float32, seed=8)
    grads[2][1][0] = float("inf")
    grads[4][0][1, 1] = float("nan")
    params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
    opt = make()

    def step(g):
        g = [x * 32768.0 for x in g]
        if legacy:  # TF 2.x's manual loop: scale the loss, unscale the gradients
            opt.get_scaled_loss(torch.tensor(1.0))
            g = opt.get_unscaled_gradients(g)
        return opt.apply_gradients(zip(g, params))

    run = torch.compile(step, fullgraph=True) if compiled else step
    for g in grads:
        run(g)
    scale = opt.loss_scale if legacy else opt.scale_loss(torch.tensor(1.0))
    slots = [opt.get_slot(p, "m").detach().clone() for p in params]
    return params, slots, float(scale), int(opt.dynamic_counter), int(opt.iterations)


@pytest.mark.parametrize("legacy", [True, False], ids=["tf2", "keras3"])
def test_a_loss_scale_optimizer_traces_its_skipped_steps(legacy):
    """The dynamic scale's branches are selections in the graph: a step with a non-finite
    gradient changes nothing (TF counts it in ``iterations``, Keras 3 does not), the scale
    halves, and grows after ``dynamic_growth_steps`` good steps, as eagerly."""
    if legacy:
        make = lambda: ko.optimizers.LossScaleOptimizer(  # noqa: E731
            ko.optimizers.Adam(0.1, use_ema=True), dynamic_growth_steps=2
        )
    else:
        make = lambda: ko.keras3.LossScaleOptimizer(  # noqa: E731
            ko.keras3.Adam(learning_rate=0.1), dynamic_growth_steps=2
        )
    eager = _scaled_steps(make, False, legacy)
    traced = _scaled_steps(make, True, legacy)
    assert _breaks() == 0
    assert eager[2:] == traced[2:] == (16384.0, 1, 6 if legacy else 4)
    for a, b in zip(eager[0] + eager[1], traced[0] + traced[1]):
        _assert_within_steps_ulps(b, a, 6, "variable or slot")


def test_a_multi_optimizer_traces_each_inner_step_from_the_first_call():
    runs = []
    for compiled in (False, True):
        a, b = ko.Variable(torch.ones(3), name="a"), ko.Variable(torch.ones(2), name="b")
        routes = ko.optimizers.OptimizerMap(
            ko.optimizers.SGD(0.1, momentum=0.9), {"b": ko.optimizers.Adam(0.1)}
        )
        opt = ko.optimizers.MultiOptimizer(routes)
        step = lambda g, opt=opt, a=a, b=b: opt.apply_gradients([(g[0], a), (g[1], b)])  # noqa: E731
        run = torch.compile(step, fullgraph=True) if compiled else step
        for i in range(3):
            run([torch.full((3,), 0.1 * (i + 1)), torch.full((2,), -0.3)])
        runs.append((a.detach().clone(), b.detach().clone(), int(opt.iterations)))
    (a0, b0, n0), (a1, b1, n1) = runs
    assert n0 == n1 == 3 and _breaks() == 0
    torch.testing.assert_close(a1, a0, rtol=1e-6, atol=0)
    torch.testing.assert_close(b1, b0, rtol=1e-6, atol=0)


def test_a_wrong_gradient_under_compile_raises_the_eager_error_and_changes_nothing():
    var = ko.Variable(torch.ones(3), name="w")
    opt = ko.optimizers.Adam(0.1)
    opt.apply_gradients([(torch.ones(3), var)])
    before = var.detach().clone()
    step = torch.compile(lambda g: opt.apply_gradients([(g, var)]))
    with pytest.raises(ValueError, match="'w'"):
        step(torch.ones(4))
    assert torch.equal(var, before) and int(opt.iterations) == 1
    assert opt.get_slot(var, "m").shape == (3,)


def test_a_failed_first_compiled_step_leaves_the_optimizer_unbuilt():
    """A compiled first step that fails (here a constraint raises: its step runs eagerly)
    leaves the optimizer unbuilt and every variable as it was, as an eager one does; a later
    step builds afresh."""

    def refuse(t):
        raise RuntimeError("constraint refused")

    var = ko.Variable(torch.ones(3), name="w", constraint=refuse)
    opt = ko.optimizers.Adam(0.1)
    step = torch.compile(lambda g: opt.apply_gradients([(g, var)]))
    with pytest.raises(RuntimeError, match="constraint refused"):
        step(torch.ones(3))
    assert not opt._store.built and not opt._store.by_id
    assert len(opt.variables()) == len(ko.optimizers.Adam(0.1).variables())
    assert int(opt.iterations) == 0 and torch.equal(var, torch.ones(3))
    var.constraint = None
    opt.apply_gradients([(torch.ones(3), var)])
    assert int(opt.iterations) == 1 and opt.get_slot(var, "m").shape == (3,)


def test_a_failed_first_compiled_multi_optimizer_step_leaves_it_unbuilt():
    def refuse(t):
        raise RuntimeError("constraint refused")

    a = ko.Variable(torch.ones(3), name="a", constraint=refuse)
    b = ko.Variable(torch.ones(2), name="b")
    routes = ko.optimizers.OptimizerMap(ko.optimizers.SGD(0.1), {"b": ko.optimizers.Adam(0.1)})
    opt = ko.optimizers.MultiOptimizer(routes)
    step = torch.compile(lambda g: opt.apply_gradients([(g[0], a), (g[1], b)]))
    with pytest.raises(RuntimeError, match="constraint refused"):
        step([torch.ones(3), torch.ones(2)])
    assert not opt.built and int(opt.iterations) == 0
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(2))
    a.constraint = None
    step([torch.ones(3), torch.ones(2)])
    assert opt.built and int(opt.iterations) == 1
    torch.testing.assert_close(a.detach(), torch.full((3,), 0.9))


# ---------------------------------------------------------------------------------------------
# kerasopt.optim: torch.optim's protocol under torch.compile
def _optim_run(name: str, compiled: bool, steps: int = STEPS, change=None, **config: Any):
    params = make_vars(SHAPES, torch.float32, seed=5)
    opt = getattr(ko.optim, name)(params, **config)
    run = torch.compile(opt.step, fullgraph=True) if compiled else opt.step
    for i, grads in enumerate(make_grads(SHAPES, steps, torch.float32, seed=6)):
        if change is not None:
            change(opt, i)
        for p, g in zip(params, grads):
            p.grad = g
        run()
    return opt, params


@pytest.mark.parametrize("name", OPTIM_NAMES)
def test_every_optim_step_traces_fullgraph_from_the_first_call(name):
    eager_opt, eager_params = _optim_run(name, compiled=False, lr=0.01)
    traced_opt, traced_params = _optim_run(name, compiled=True, lr=0.01)
    assert (_graphs(), _breaks()) == (1, 0)
    for i, (a, b) in enumerate(zip(eager_params, traced_params)):
        _assert_within_steps_ulps(b, a, STEPS, f"{name} parameter {i}")
        for key, ref in eager_opt.state[a].items():
            got = traced_opt.state[b][key]
            if key == "step":
                assert int(got) == int(ref) == STEPS
            else:
                _assert_within_steps_ulps(got, ref, STEPS, f"{name} state {key!r} of {i}")


def test_optim_group_changes_take_effect_under_compile():
    """A new ``lr`` in a param group (a torch scheduler's write) is a new Python value, as for
    torch.optim: the step re-traces with it and gives the eager numbers."""

    def change(opt, i):
        opt.param_groups[0]["lr"] = 0.01 * (i + 1)
        opt.param_groups[0]["betas"] = (0.9 - 0.1 * i, 0.999)

    eager = _optim_run("Adam", compiled=False, change=change)
    traced = _optim_run("Adam", compiled=True, change=change)
    for a, b in zip(eager[1], traced[1]):
        _assert_within_steps_ulps(b, a, STEPS, "parameter")
    assert _breaks() == 0
    assert traced[0].state_dict()["param_groups"] == eager[0].state_dict()["param_groups"]


def test_optim_state_loaded_between_compiled_steps_is_adopted():
    """``load_state_dict`` between compiled steps: the next step re-traces and steps from the
    loaded state (the same numbers as the step after it was saved)."""
    params = make_vars(SHAPES, torch.float32, seed=5)
    opt = ko.optim.Adam(params, lr=0.05)
    run = torch.compile(opt.step, fullgraph=True)
    grads = make_grads(SHAPES, 3, torch.float32, seed=6)

    def step(i):
        for p, g in zip(params, grads[i]):
            p.grad = g
        run()

    step(0)
    step(1)
    saved = copy.deepcopy(opt.state_dict())  # (torch returns the live tensors)
    values = [p.detach().clone() for p in params]
    step(2)
    after = [p.detach().clone() for p in params]
    step(1)  # moves the state on
    opt.load_state_dict(saved)
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    step(2)
    for p, a in zip(params, after):
        assert torch.equal(p, a)
    assert int(opt.state[params[0]]["step"]) == 3 and _breaks() == 0


def test_a_failed_first_compiled_optim_step_changes_nothing():
    """``kerasopt.optim`` under torch.compile: a first step that fails leaves no state, no
    parameter changed (and the next step builds afresh)."""

    def refuse(t):
        raise RuntimeError("constraint refused")

    a = ko.Variable(torch.ones(3), name="a", constraint=refuse)
    b = torch.nn.Parameter(torch.ones(2))
    opt = ko.optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    step = torch.compile(opt.step)
    with pytest.raises(RuntimeError, match="constraint refused"):
        step()
    assert len(opt.state) == 0 and not opt.state_dict()["state"]
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(2))
    a.constraint = None
    step()
    assert int(opt.state[a]["step"]) == 1
    torch.testing.assert_close(b.detach(), torch.full((2,), 0.9))


def test_optim_param_groups_trace_as_one_step():
    def run(compiled):
        params = make_vars(SHAPES, torch.float32, seed=5)
        opt = ko.optim.Adam(
            [{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}],
            weight_decay=0.0,
        )
        step = torch.compile(opt.step, fullgraph=True) if compiled else opt.step
        for grads in make_grads(SHAPES, STEPS, torch.float32, seed=6):
            for p, g in zip(params, grads):
                p.grad = g
            step()
        return params

    for a, b in zip(run(False), run(True)):
        _assert_within_steps_ulps(b, a, STEPS, "parameter")
    assert _breaks() == 0
