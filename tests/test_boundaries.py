"""A step has a boundary: what plan refuses on every engine and both front ends, what a commit
restores whatever raised inside it, steps of one optimizer from several threads, saves taken
while another thread trains, in-place hyperparameter assigns in saved state, strict loads
before the first step, and the torch.compile'd ``kerasopt.optim`` step."""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
import typing
from typing import Any

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.specs import BY_NAME, LEGACY_HYPERS, OPTIMIZERS

ENGINES = ["auto", "foreach", "per_tensor", "compiled", "flat"]
FRONT_ENDS = ["keras", "optim"]


# ---------------------------------------------------------------------------------------------
# helpers: one step through either front end, and a byte-exact picture of everything it may write
class Stepper:
    """Three float32 variables (and, in ``extra``, any more) stepped by Adam through a front end."""

    def __init__(self, front: str, engine: str, extra: list[torch.Tensor] | None = None) -> None:
        rng = np.random.default_rng(0)
        self.front = front
        self.vars = [
            ko.Variable(torch.tensor(rng.normal(size=(3, 2)), dtype=torch.float32), name=n)
            for n in "abc"
        ]
        self.all = self.vars + list(extra or [])
        if front == "keras":
            self.opt: Any = ko.optimizers.Adam(0.1, implementation=engine)
        else:
            self.opt = ko.optim.Adam(self.vars, lr=0.1, implementation=engine)
            if extra:
                self.opt.add_param_group({"params": list(extra)})

    def step(self, grads: list[Any]) -> None:
        if self.front == "keras":
            self.opt.apply_gradients(list(zip(grads, self.all)))
        else:
            for v, g in zip(self.all, grads):
                v.grad = g
            self.opt.step()

    def good_grads(self, seed: int = 1) -> list[torch.Tensor]:
        rng = np.random.default_rng(seed)
        return [torch.tensor(rng.normal(size=v.shape), dtype=v.dtype) for v in self.vars]

    def picture(self) -> dict[str, torch.Tensor]:
        if self.front == "keras":
            state = {k: v.detach().clone() for k, v in self.opt.state_dict().items()}
            state["_step"] = torch.tensor(self.opt._step)
        else:
            state = {}
            for i, inner in enumerate(self.opt.keras_optimizers):
                state.update(
                    {f"{i}/{k}": v.detach().clone() for k, v in inner.state_dict().items()}
                )
        for i, v in enumerate(self.all):
            if v.device.type != "meta":
                state[f"var/{i}"] = v.detach().clone()
        return state


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# plan refuses what no engine can update, naming it, and the optimizer stays usable
@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_meta_variable_is_refused_by_every_engine(front: str, engine: str) -> None:
    meta = ko.Variable(torch.ones(3, 2, device="meta"), name="on_meta")
    s = Stepper(front, engine, extra=[meta])
    s.step([*s.good_grads(), None])
    before = s.picture()
    with pytest.raises(ValueError, match=r"Variable 'on_meta' is on the meta device"):
        s.step([*s.good_grads(2), torch.ones(3, 2, device="meta")])
    assert_same(s.picture(), before)
    s.step([*s.good_grads(3), None])  # still usable


@pytest.mark.parametrize("front", FRONT_ENDS)
def test_a_meta_variable_first_does_not_move_the_optimizer(front: str) -> None:
    meta = ko.Variable(torch.ones(2, device="meta"), name="on_meta")
    s = Stepper(front, "auto", extra=[meta])
    with pytest.raises(ValueError, match=r"'on_meta' is on the meta device"):
        s.step([None, None, None, torch.ones(2, device="meta")])
    inner = s.opt if front == "keras" else s.opt.keras_optimizers[0]
    assert inner.iterations.device.type == "cpu"
    assert inner.learning_rate.device.type == "cpu"
    s.step([*s.good_grads(), None])
    assert int(inner.iterations) == 1
    assert all(torch.isfinite(v).all() for v in s.vars)


def test_building_on_a_meta_variable_does_not_move_the_optimizer() -> None:
    # build() may make meta slots (shape-only checks do), but the counter stays home
    opt = ko.optimizers.Adam()
    opt.build([ko.Variable(torch.ones(2, device="meta"), name="m")])
    assert opt.iterations.device.type == "cpu" and opt.learning_rate.device.type == "cpu"
    w = ko.Variable(torch.ones(2), name="w")
    opt.apply_gradients([(torch.ones(2), w)])
    assert int(opt.iterations) == 1 and torch.isfinite(w).all()


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_an_inference_variable_in_a_later_group_changes_nothing(front: str, engine: str) -> None:
    with torch.inference_mode():
        frozen = torch.ones(3, dtype=torch.float64)  # another (device, dtype) group
    s = Stepper(front, engine, extra=[frozen])
    s.step([*s.good_grads(), None])
    before = s.picture()
    with pytest.raises(ValueError, match=r"is an inference tensor"):
        s.step([*s.good_grads(2), torch.ones(3, dtype=torch.float64)])
    assert_same(s.picture(), before)
    assert torch.equal(frozen, torch.ones(3, dtype=torch.float64))


class Exploding(torch.Tensor):
    """A gradient whose arithmetic raises (a tensor subclass with its own __torch_function__)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if any(op in name for op in ("mul", "add", "sub", "div", "sqrt", "addcmul", "lerp")):
            raise RuntimeError(f"injected failure in {name}")
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("engine", ["auto", "foreach", "per_tensor"])
def test_a_gradient_that_raises_inside_the_rule_changes_nothing(front: str, engine: str) -> None:
    other = ko.Variable(torch.ones(3, dtype=torch.float64), name="other")
    s = Stepper(front, engine, extra=[other])
    s.step([*s.good_grads(), torch.ones(3, dtype=torch.float64)])
    before = s.picture()
    bad = torch.full((3,), 0.5, dtype=torch.float64).as_subclass(Exploding)
    with pytest.raises(RuntimeError, match="injected failure"):
        s.step([*s.good_grads(2), bad])
    assert_same(s.picture(), before)
    s.step([*s.good_grads(3), torch.ones(3, dtype=torch.float64)])  # still usable


def test_the_compiled_engine_does_not_write_an_inference_tensor() -> None:
    with torch.inference_mode():
        frozen = torch.ones(3)
    opt = ko.optimizers.Adam(0.1, implementation="compiled")
    with pytest.raises(ValueError, match="inference tensor"):
        opt.apply_gradients([(torch.ones(3), frozen)])
    assert torch.equal(frozen, torch.ones(3)) and int(opt.iterations) == 0


# ---------------------------------------------------------------------------------------------
# steps of one optimizer from several threads do not interleave
# small tensors: Python-bound steps switch threads anywhere; large ones: kernels run without the GIL
@pytest.mark.parametrize("size", [4, 50_000])
@pytest.mark.parametrize("wrapper", ["plain", "loss_scale", "keras3_loss_scale", "multi", "optim"])
def test_threads_stepping_one_optimizer_keep_one_count(wrapper: str, size: int) -> None:
    variables = [ko.Variable(torch.zeros(size), name=f"v{i}") for i in range(4)]
    if wrapper == "optim":
        opt: Any = ko.optim.SGD(variables, lr=0.01, momentum=0.9)
    else:
        inner = ko.optimizers.SGD(0.01, momentum=0.9)
        if wrapper == "loss_scale":
            opt = ko.optimizers.LossScaleOptimizer(inner, initial_scale=4.0)
        elif wrapper == "keras3_loss_scale":
            opt = ko.keras3.LossScaleOptimizer(ko.keras3.SGD(0.01, momentum=0.9), 4.0)
        elif wrapper == "multi":
            opt = ko.optimizers.MultiOptimizer(
                ko.optimizers.OptimizerMap(inner, {"v0": ko.optimizers.Adam(0.01)})
            )
        else:
            opt = inner
    steps, workers = (150 if size < 100 else 60), 3
    errors: list[BaseException] = []

    def train(seed: int) -> None:
        try:
            for i in range(steps):
                g = torch.full((size,), 1.0 + seed)
                if wrapper.endswith("loss_scale") and i % 10 == 0:
                    g = torch.full((size,), float("inf"))  # a skipped step
                if wrapper == "optim":
                    for v in variables:
                        v.grad = g.clone()
                    opt.step()
                else:
                    opt.apply_gradients([(g.clone(), v) for v in variables])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=train, args=(k,)) for k in range(workers)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so unguarded steps would interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    inners = (
        opt.keras_optimizers
        if wrapper == "optim"
        else [opt.inner_optimizer]
        if wrapper.endswith("loss_scale")
        else opt.optimizers
        if wrapper == "multi"
        else [opt]
    )
    # Keras 3's LossScaleOptimizer does not count a skipped step (every 10th here)
    total = steps * workers - (workers * len(range(0, steps, 10)) if "keras3" in wrapper else 0)
    for inner in inners:
        assert int(inner.iterations) == total
        assert inner._step == total  # the Python mirror, which repr shows
        assert f"iterations={total}" in repr(inner)
    if wrapper == "multi":
        assert int(opt.iterations) == steps * workers


# ---------------------------------------------------------------------------------------------
# a save taken while another thread trains is one step boundary's snapshot
def _trajectory(steps: int) -> list[dict[str, torch.Tensor]]:
    model, opt = _model_and_optimizer()
    out = [_picture(model, opt)]
    for i in range(steps):
        _train_step(model, opt, i)
        out.append(_picture(model, opt))
    return out


def _model_and_optimizer() -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)).double()
    return model, ko.optimizers.Adam(0.01)


def _train_step(model: torch.nn.Module, opt: Any, i: int) -> None:
    x = torch.linspace(-1, 1, 64 * 4, dtype=torch.float64).reshape(4, 64) * (1 + i % 7)
    opt.minimize(lambda: model(x).pow(2).mean(), model)


def _picture(model: torch.nn.Module, opt: Any) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    out.update({f"opt/{k}": v.detach().clone() for k, v in opt.state_dict().items()})
    return out


def test_saves_taken_while_training_are_step_boundaries(tmp_path: Any) -> None:
    steps = 60
    expected = _trajectory(steps)
    model, opt = _model_and_optimizer()
    done = threading.Event()
    paths: list[str] = []

    def train() -> None:
        for i in range(steps):
            _train_step(model, opt, i)
            # (on a loaded machine the 60 steps may take less than one save: wait for a first
            # and a second save to be taken while training, so at least two are checked)
            if i in (steps // 3, 2 * steps // 3):
                deadline = time.monotonic() + 60
                while len(paths) < (1 if i == steps // 3 else 2) and time.monotonic() < deadline:
                    time.sleep(0.001)
        done.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    while not done.is_set() and len(paths) < 40:
        path = os.path.join(tmp_path, f"ckpt{len(paths)}.pt")
        ko.save(path, opt, model)
        paths.append(path)
    trainer.join(timeout=120)
    assert len(paths) >= 2
    for path in paths:
        model2, opt2 = _model_and_optimizer()
        ko.load(path, opt2, model2)  # CRCs hold: nothing changed while it was written
        n = int(opt2.iterations)
        if n:
            opt2.apply_gradients([])  # nothing to build: the loaded state is complete
        got = _picture(model2, opt2)
        if n == 0:
            got = {k: v for k, v in got.items() if k in expected[0]}
        want = {k: v for k, v in expected[n].items() if k in got}
        assert sorted(want) == sorted(got), path
        for key in want:
            assert torch.equal(got[key], want[key]), (path, n, key)


# ---------------------------------------------------------------------------------------------
# a hyperparameter assigned in place is what the saved state holds
def _number_hypers(opt: Any) -> list[str]:
    return [n for n in opt._hyper.sources if n in LEGACY_HYPERS and n != "decay"]


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=[s.name for s in OPTIMIZERS])
@pytest.mark.parametrize("when", ["before_first_step", "after_a_step"])
def test_an_in_place_assign_is_saved_and_resumed(spec: Any, when: str, tmp_path: Any) -> None:
    config = dict(spec.configs[0])
    opt = getattr(ko.optimizers, spec.name)(**config)
    names = _number_hypers(opt)
    assert "learning_rate" in names
    rng = np.random.default_rng(3)
    var = ko.Variable(rng.normal(size=(4, 3)), name="w")
    grads = [torch.tensor(rng.normal(size=(4, 3))) for _ in range(6)]
    if when == "after_a_step":
        opt.apply_gradients([(grads[0], var)])
    new = {}
    for name in names:
        old = float(getattr(opt, name))
        new[name] = float(np.float32(old * 0.5 + 0.25 if old < 1 else old * 0.5))
        getattr(opt, name).assign(new[name])  # TF: backend.set_value(opt.lr, x)
    state = opt.state_dict()
    for name, value in new.items():
        assert float(state[f"hyper/{name}"]) == value, name
    assert opt.get_config()["learning_rate"] == new["learning_rate"]
    path = os.path.join(tmp_path, "ckpt.pt")
    ko.save(path, opt)
    resumed = getattr(ko.optimizers, spec.name)(**config)
    ko.load(path, resumed)
    twin = copy.deepcopy(var)
    for g in grads[1:]:
        opt.apply_gradients([(g, var)])
        resumed.apply_gradients([(g.clone(), twin)])
    assert torch.equal(var, twin)


def test_the_measured_case_rmsprop_resumes_with_the_assigned_rate() -> None:
    # the measurement: RMSprop, 10 steps after a resume, 0.048 apart before the fix
    var = ko.Variable(np.linspace(-1, 1, 6), name="w")
    opt = ko.optimizers.RMSprop(0.01)
    opt.learning_rate.assign(0.1)
    resumed = ko.optimizers.RMSprop(0.01)
    resumed.load_state_dict(opt.state_dict())
    twin = copy.deepcopy(var)
    for i in range(10):
        g = torch.linspace(-1, 1, 6, dtype=torch.float64) * (i + 1)
        opt.apply_gradients([(g, var)])
        resumed.apply_gradients([(g.clone(), twin)])
    assert torch.equal(var, twin)


# ---------------------------------------------------------------------------------------------
# strict means the same before and after the first step
@pytest.mark.parametrize("front", ["keras", "loss_scale"])
def test_a_strict_load_missing_a_slot_is_refused_before_the_first_step_too(front: str) -> None:
    a, b = ko.Variable(torch.ones(3), name="a"), ko.Variable(torch.ones(2), name="b")

    def make() -> Any:
        inner = ko.optimizers.Adam(0.1)
        return ko.optimizers.LossScaleOptimizer(inner) if front == "loss_scale" else inner

    saved = make()
    saved.apply_gradients([(torch.ones(3), a), (torch.ones(2), b)])
    state = saved.state_dict()
    key = next(k for k in state if k.endswith("slot/a/v"))
    del state[key]
    with pytest.raises(ValueError, match=r"lacks 1 slot key"):
        saved.load_state_dict(state)  # after the first step
    fresh = make()
    fresh.load_state_dict(state)  # variables not seen yet: checked when they appear
    values = (a.detach().clone(), b.detach().clone())
    with pytest.raises(ko.StateError, match=r"lacks 1 slot key.*'slot/a/v'"):
        fresh.apply_gradients([(torch.ones(3), a), (torch.ones(2), b)])
    assert torch.equal(a, values[0]) and torch.equal(b, values[1])
    assert not fresh.variables()[1:] or not any(
        n.startswith("a/") for n in [getattr(v, "name", "") for v in fresh.variables()]
    )
    lenient = make()
    lenient.load_state_dict(state, strict=False)
    lenient.apply_gradients([(torch.ones(3), a), (torch.ones(2), b)])


def test_a_strict_load_is_refused_for_a_new_variable_it_holds_nothing_for() -> None:
    a, b = ko.Variable(torch.ones(3), name="a"), ko.Variable(torch.ones(2), name="b")
    saved = ko.optimizers.Adam(0.1)
    saved.apply_gradients([(torch.ones(3), a)])
    fresh = ko.optimizers.Adam(0.1)
    fresh.load_state_dict(saved.state_dict())
    with pytest.raises(ko.StateError, match=r"'slot/b/m', 'slot/b/v'"):
        fresh.apply_gradients([(torch.ones(3), a), (torch.ones(2), b)])
    fresh.apply_gradients([(torch.ones(3), a)])  # the saved variables alone adopt it
    fresh.apply_gradients([(torch.ones(3), a), (torch.ones(2), b)])  # later ones start afresh


# ---------------------------------------------------------------------------------------------
# torch.compile of a kerasopt.optim step
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_a_compiled_optim_step_runs_and_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager_params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    compiled_params = [torch.nn.Parameter(p.detach().clone()) for p in eager_params]
    config = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    eager = getattr(ko.optim, name)(eager_params, **config)
    compiled = getattr(ko.optim, name)(compiled_params, **config)
    step = torch.compile(compiled.step)
    for i in range(3):
        for p, q in zip(eager_params, compiled_params):
            g = torch.full_like(p, 0.1 * (i + 1)) + p.detach()
            p.grad, q.grad = g, g.clone()
        eager.step()
        step()
    for p, q in zip(eager_params, compiled_params):
        assert torch.equal(p, q)
    assert int(compiled.state[compiled_params[0]]["step"]) == 3


@pytest.mark.parametrize(
    ("make", "breaks"),
    [
        (lambda: ko.optimizers.Adam(0.1), 0),
        (lambda: ko.optimizers.Adam(0.1, implementation="flat"), 0),
        (
            lambda: ko.optimizers.LossScaleOptimizer(
                ko.optimizers.SGD(0.1), dynamic=False, initial_scale=1.0
            ),
            None,  # never scaled nor unscaled: the eager step's warnings (tests/test_traced.py)
        ),
        (lambda: ko.keras3.Adam(0.1), 0),
    ],
    ids=["Adam", "Adam-flat", "LossScale", "keras3-Adam"],
)
def test_a_compiled_function_calling_apply_gradients_matches_eager(make, breaks) -> None:
    """A torch.compile'd function that calls ``apply_gradients`` traces an optimizer's step
    whole (kerasopt._traced; tests/test_traced.py); a step that must warn runs as it runs
    eagerly (at a graph break in ``apply_gradients``, the same numbers)."""
    import torch._dynamo.utils as dynamo_utils

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    shapes = [(4, 3), (3,), (5,)]
    grads = [
        [torch.randn(s, generator=torch.Generator().manual_seed(i)) for s in shapes]
        for i in range(3)
    ]
    runs = []
    for compiled in (False, True):
        params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
        opt = make()
        step = lambda g, opt=opt, params=params: opt.apply_gradients(zip(g, params))  # noqa: E731
        if compiled:
            step = torch.compile(step)
        for g in grads:
            step(g)
        runs.append(params)
    for p, q in zip(*runs):
        torch.testing.assert_close(q, p, rtol=4 * torch.finfo(p.dtype).eps, atol=0)
    found = dynamo_utils.counters["graph_break"]
    if breaks is None:
        assert any("apply_gradients" in reason for reason in found)
    else:
        assert sum(found.values()) == breaks


# ---------------------------------------------------------------------------------------------
# smaller ones
def test_adafactor_leaves_no_nan_in_a_zero_size_variable_slots() -> None:
    empty, full = ko.Variable(torch.zeros(0, 3), name="e"), ko.Variable(torch.ones(2, 3), name="f")
    opt = ko.optimizers.Adafactor(0.1)
    for _ in range(2):
        opt.apply_gradients([(torch.zeros(0, 3), empty), (torch.ones(2, 3), full)])
    for slot in ("r", "c", "v"):
        assert torch.isfinite(opt.get_slot(empty, slot)).all(), slot
        assert torch.equal(opt.get_slot(empty, slot), torch.zeros_like(opt.get_slot(empty, slot)))
    assert int(opt.iterations) == 2 and torch.isfinite(full).all()


@pytest.mark.parametrize("form", ["indexed_slices", "torch_sparse"])
def test_a_sparse_gradient_of_another_dense_shape_is_refused(form: str) -> None:
    var = ko.Variable(torch.ones(3, 2), name="emb")
    opt = ko.optimizers.SGD(0.1)
    values, indices = torch.ones(1, 2), torch.tensor([0])
    grad: Any = (
        ko.IndexedSlices(values, indices, (9, 2))
        if form == "indexed_slices"
        else torch.sparse_coo_tensor(indices[None], values, (9, 2))
    )
    with pytest.raises(
        ValueError, match=r"variable 'emb' has dense shape \(9, 2\), expected \(3, 2\)"
    ):
        opt.apply_gradients([(grad, var)])
    assert torch.equal(var, torch.ones(3, 2)) and int(opt.iterations) == 0


@pytest.mark.parametrize("wrapper", ["plain", "multi"])
def test_a_detached_alias_of_a_tracked_variable_is_refused(wrapper: str) -> None:
    w = ko.Variable(torch.ones(3), name="w")
    u = ko.Variable(torch.ones(2), name="u")
    opt: Any = ko.optimizers.Adam(0.1)
    if wrapper == "multi":
        opt = ko.optimizers.MultiOptimizer(ko.optimizers.OptimizerMap(opt, {}))
    opt.apply_gradients([(torch.ones(3), w), (torch.ones(2), u)])
    before = w.detach().clone()
    pairs = [(torch.ones(3), w.detach()), (torch.ones(2), u)]
    with pytest.raises(ValueError, match=r"Variables .*'w'.* share memory"):
        opt.apply_gradients(pairs)
    with pytest.raises(ValueError, match=r"share memory"):  # both in one step
        ko.optimizers.SGD(0.1).apply_gradients([(torch.ones(3), w), (torch.ones(3), w.detach())])
    assert torch.equal(w.detach(), before)


def test_views_of_one_buffer_that_do_not_overlap_are_separate_variables() -> None:
    flat = torch.zeros(10)
    a = torch.nn.Parameter(flat[:4])  # e.g. parameters packed into one buffer
    b = torch.nn.Parameter(flat[4:])
    opt = ko.optimizers.SGD(1.0)
    opt.apply_gradients([(torch.ones(4), a), (torch.ones(6), b)])
    assert torch.equal(flat, -torch.ones(10))


@pytest.mark.parametrize("module", ["kerasopt", "kerasopt.optim", "kerasopt.optimizers"])
def test_public_namespaces_hold_only_their_api(module: str) -> None:
    import importlib
    import types

    mod = importlib.import_module(module)
    stray = [
        n
        for n in dir(mod)
        if not n.startswith("_")
        and n not in mod.__all__
        and not isinstance(getattr(mod, n), types.ModuleType)
    ]
    assert stray == []


def test_get_is_typed_as_returning_an_optimizer() -> None:
    assert typing.get_type_hints(ko.optimizers.get)["return"] is ko.optimizers.Optimizer
    assert type(ko.optimizers.get("rmsprop")) is ko.optimizers.RMSprop
    assert BY_NAME["RMSprop"].name == "RMSprop"


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_an_expanded_variable_is_refused_before_anything_is_written(
    front: str, engine: str
) -> None:
    expanded = torch.nn.Parameter(torch.zeros(1).expand(4))  # four elements, one location
    s = Stepper(front, engine, extra=[expanded])
    s.step([*s.good_grads(), None])
    before = s.picture()
    with pytest.raises(ValueError, match=r"share memory .*stride 0"):
        s.step([*s.good_grads(2), torch.ones(4)])
    assert_same(s.picture(), before)


def test_a_gradient_of_another_layout_is_refused_by_name() -> None:
    a, b = ko.Variable(torch.ones(3), name="a"), ko.Variable(torch.ones(2, 2), name="b")
    opt = ko.optimizers.Adam(0.1)
    with pytest.raises(TypeError, match=r"Gradient for variable 'b' has layout torch\.sparse_csr"):
        opt.apply_gradients([(torch.ones(3), a), (torch.ones(2, 2).to_sparse_csr(), b)])
    assert torch.equal(a, torch.ones(3)) and int(opt.iterations) == 0


def test_a_known_variable_whose_data_becomes_an_expanded_view_is_refused() -> None:
    w = ko.Variable(torch.zeros(4), name="w")
    u = ko.Variable(torch.zeros(2), name="u")
    opt = ko.optimizers.Adam(0.1)
    for _ in range(2):  # the second step is a steady one (kerasopt._steady.steady)
        opt.apply_gradients([(torch.ones(4), w), (torch.ones(2), u)])
    before = {k: v.clone() for k, v in opt.state_dict().items()}
    u_before = u.detach().clone()
    w.data = torch.zeros(1).expand(4)  # same shape, dtype and device: one memory location
    with pytest.raises(ValueError, match=r"'w' has elements that share memory"):
        opt.apply_gradients([(torch.ones(4), w), (torch.ones(2), u)])
    assert torch.equal(u, u_before)
    assert all(torch.equal(v, before[k]) for k, v in opt.state_dict().items())


def _steps_with_a_first_under_inference_mode(front: str, engine: str, inference: bool) -> Any:
    torch.manual_seed(0)
    shapes = [(30, 4)] + [(3,)] * 70  # 71 tensors: `auto` packs them into flat buffers
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    if front == "keras":
        opt: Any = ko.optimizers.Adam(0.1, implementation=engine, use_ema=True)
    else:
        opt = ko.optim.Adam(params, lr=0.1, implementation=engine)
    for k, step_grads in enumerate(grads):
        if front == "optim":
            for p, g in zip(params, step_grads):
                p.grad = g
        with torch.inference_mode(inference and k == 0):
            if front == "keras":
                opt.apply_gradients(zip(step_grads, params))
            else:
                opt.step()
    return params, opt


@pytest.mark.parametrize("front", FRONT_ENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_first_step_under_inference_mode_leaves_state_later_steps_update(front, engine):
    """The state a first step makes under the caller's ``torch.inference_mode()`` (slots, EMA,
    the foreach engine's buffers, packed buffers, kerasopt.optim's inner optimizers) is normal
    tensors: later steps outside inference mode update it (they raised "Inplace update to
    inference tensor outside InferenceMode", and kerasopt.optim's first step raised "Inference
    tensors do not track version counter"), with the numbers of steps all taken outside."""
    params, opt = _steps_with_a_first_under_inference_mode(front, engine, inference=True)
    ref_params, _ = _steps_with_a_first_under_inference_mode(front, engine, inference=False)
    for p, q in zip(params, ref_params):
        assert torch.equal(p, q) and not p.is_inference()
    state = opt.variables() if front == "keras" else opt.state_dict()["state"]
    assert not any(
        t.is_inference()
        for t in (state if front == "keras" else [v for s in state.values() for v in s.values()])
        if isinstance(t, torch.Tensor)
    )
