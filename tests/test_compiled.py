"""The compiled engine: the same rule under torch.compile, within a few ulp of eager, no recompiles."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.utils

import kerasopt as ko
from kerasopt import _compiled
from tests.helpers import (
    ELEMENTWISE_ULPS,
    assert_within_ulps,
    make_grads,
    make_optimizer,
    make_vars,
)
from tests.specs import OPTIMIZERS

ELEMENTWISE = [s for s in OPTIMIZERS if s.elementwise]
# 0-d and size-1 variables run through the foreach engine; the others are compiled in chunks.
SHAPES = [(), (5,), (3, 4), (7,)]


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _assert_within_steps_ulps(got, ref, steps, what):
    """Within ``steps`` times ELEMENTWISE_ULPS of the per-tensor run (docs/tolerances.md): the
    compiler may fuse operations (one rounding instead of two) and vectorise sqrt differently."""
    ulps, scale_ulps = ELEMENTWISE_ULPS
    a, b = got.detach().double().cpu(), ref.detach().double().cpu()
    assert got.dtype == ref.dtype, what
    scale = float(torch.maximum(a.abs(), b.abs()).max()) if a.numel() else 0.0
    assert_within_ulps(
        a.numpy(),
        b.numpy(),
        got.dtype,
        ulps=steps * ulps,
        scale=scale,
        scale_ulps=steps * scale_ulps,
        what=what,
    )


def _compare_with_eager(make_opt, shapes, steps, seed):
    """Runs the same steps per tensor and compiled; variables and every slot within a few ulp."""
    runs = []
    for implementation in ("per_tensor", "compiled"):
        variables = make_vars(shapes, torch.float32, seed=seed)
        opt = make_opt(implementation)
        for grads in make_grads(shapes, steps, torch.float32, seed=seed + 1):
            opt.apply_gradients(zip(grads, variables))
        runs.append((opt, variables))
    (eager_opt, eager_vars), (comp_opt, comp_vars) = runs
    for i, (a, b) in enumerate(zip(eager_vars, comp_vars)):
        _assert_within_steps_ulps(b, a, steps, f"variable {i}")
        for name in eager_opt._store.by_id[id(a)].slots:
            got, ref = comp_opt.get_slot(b, name), eager_opt.get_slot(a, name)
            _assert_within_steps_ulps(got, ref, steps, f"slot {name!r} of variable {i}")


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=[s.name for s in ELEMENTWISE])
def test_compiled_within_a_few_ulp_of_eager(spec):
    config = spec.configs[-1]
    _compare_with_eager(
        lambda impl: make_optimizer(spec, config, implementation=impl), SHAPES, 3, seed=3
    )


def test_no_recompile_on_hyperparameter_change_schedule_or_new_optimizer():
    sched = ko.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    variables = make_vars(SHAPES, torch.float32, seed=5)
    opt = ko.optimizers.Adam(sched, jit_compile=True)
    grads = make_grads(SHAPES, 1, torch.float32, seed=6)[0]
    opt.apply_gradients(zip(grads, variables))
    before = _graphs()
    for _ in range(3):  # the schedule moves every step
        opt.apply_gradients(zip(grads, variables))
    opt.beta_1 = 0.5
    opt.learning_rate = ko.optimizers.schedules.ExponentialDecay(0.3, 2, 0.5)
    opt.apply_gradients(zip(grads, variables))
    # Another optimizer of the same class, other sizes: the compiled graphs are shared.
    others = make_vars([(9,), (2, 2)], torch.float32, seed=7)
    ko.optimizers.Adam(0.01, jit_compile=True).apply_gradients(
        zip(make_grads([(9,), (2, 2)], 1, torch.float32)[0], others)
    )
    assert _graphs() == before


def test_jit_compile_round_trips_and_selects_compiled():
    opt = ko.optimizers.SGD(0.1, jit_compile=True)
    assert opt.implementation == "compiled"
    cfg = opt.get_config()
    assert cfg["jit_compile"] is True and "implementation" not in cfg
    assert ko.optimizers.SGD.from_config(cfg).implementation == "compiled"


def test_one_graph_whatever_the_number_and_sizes_of_tensors():
    shapes_a = [(40,)] * 20 + [(3, 3)]  # equal sizes first: no duck-sizing guards
    shapes_b = [(i + 2,) for i in range(37)]
    variables = make_vars(shapes_a, torch.float32, seed=11)
    opt = ko.optimizers.Lion(jit_compile=True)
    opt.apply_gradients(zip(make_grads(shapes_a, 1, torch.float32)[0], variables))
    before = _graphs()
    others = make_vars(shapes_b, torch.float32, seed=12)
    opt.apply_gradients(zip(make_grads(shapes_b, 1, torch.float32)[0], others))
    assert _graphs() == before


def test_compile_failure_falls_back_to_foreach(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_compiled, "_compiled", lambda key: broken)
    monkeypatch.setattr(_compiled, "_BROKEN", set())
    a = make_vars(SHAPES, torch.float32, seed=8)
    b = [torch.nn.Parameter(v.detach().clone()) for v in a]
    grads = make_grads(SHAPES, 1, torch.float32, seed=9)[0]
    with pytest.warns(RuntimeWarning, match="compiled engine is unavailable here"):
        ko.optimizers.Adam(0.1, jit_compile=True).apply_gradients(zip(grads, a))
    ko.optimizers.Adam(0.1, implementation="foreach").apply_gradients(zip(grads, b))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_engine_selection_rule():
    from kerasopt import _engines

    big, many = _engines.AUTO_COMPILE_NUMEL, _engines.FLAT_MIN_TENSORS
    assert _engines.select("auto", True, 10, 3) is _engines.run_foreach
    assert _engines.select("auto", True, big, 3) is _engines.run_compiled
    assert _engines.select("auto", True, many * 1000, many) is _engines.run_packed
    assert _engines.select("compiled", True, 10, 3) is _engines.run_compiled
    assert _engines.select("compiled", True, many * 1000, many) is _engines.run_packed
    assert _engines.select("auto", False, big, many) is _engines.run_per_tensor
    assert _engines.select("foreach", True, big, many) is _engines.run_foreach


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_flat_engine_for_many_small_tensors_matches_eager(name):
    shapes = [(3 + i % 5,) if i % 3 else (2, 3) for i in range(70)]
    make = getattr(ko.optimizers, name)
    _compare_with_eager(lambda impl: make(0.05, implementation=impl), shapes, 2, seed=13)


def test_flat_engine_follows_a_variable_given_new_storage():
    shapes = [(4,)] * 70
    variables = make_vars(shapes, torch.float32, seed=15)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    opt_a = ko.optimizers.SGD(0.5, momentum=0.5, jit_compile=True)
    opt_b = ko.optimizers.SGD(0.5, momentum=0.5, implementation="per_tensor")
    grads = make_grads(shapes, 1, torch.float32, seed=16)[0]
    opt_a.apply_gradients(zip(grads, variables))
    opt_b.apply_gradients(zip(grads, twins))
    with torch.no_grad():
        variables[3].data = torch.full((4,), 7.0)  # new storage behind the same Parameter
        twins[3].data = torch.full((4,), 7.0)
    opt_a.apply_gradients(zip(grads, variables))
    opt_b.apply_gradients(zip(grads, twins))
    for i, (a, b) in enumerate(zip(variables, twins)):
        _assert_within_steps_ulps(a, b, 2, f"variable {i}")


def test_chunked_engine_keeps_its_aliases_and_follows_changed_variables(monkeypatch):
    """The chunked engine keeps its variables' and slots' 1-D aliases between steps (only the
    gradients, new each step, are aliased anew) and makes new ones for a variable given new
    storage, or one transposed in place (a square matrix: same address, other strides, now run
    eagerly): the numbers stay the per-tensor engine's, within a few ulp."""
    shapes = [(6,), (3, 4), (4, 4), (1,), (5,)]
    variables = make_vars(shapes, torch.float32, seed=21)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    opt_a = ko.optimizers.SGD(0.5, momentum=0.5, jit_compile=True)
    opt_b = ko.optimizers.SGD(0.5, momentum=0.5, implementation="per_tensor")
    made = []
    real = _compiled._flat
    monkeypatch.setattr(_compiled, "_flat", lambda t: made.append(t) or real(t))
    for step, grads in enumerate(make_grads(shapes, 5, torch.float32, seed=22)):
        made.clear()
        opt_a.apply_gradients(zip(grads, variables))
        opt_b.apply_gradients(zip(grads, twins))
        compiled = 4 if step < 3 else 3  # (the size-1 variable runs eagerly; later the transpose)
        if step in (1, 4):  # steady: the gradients' aliases only
            assert len(made) == compiled
        elif step in (0, 3):  # first sight, or after the changes: the variable and its slot too
            assert len(made) == 3 * compiled
        if step == 2:
            with torch.no_grad():
                for vs in (variables, twins):
                    vs[0].data = torch.full((6,), 7.0)  # new storage behind the same Parameter
                    vs[2].data = vs[2].data.t()
        for i, (a, b) in enumerate(zip(variables, twins)):
            _assert_within_steps_ulps(a, b, step + 1, f"variable {i} after step {step}")
    assert float(variables[0][0]) != 7.0


def test_compiled_agrees_on_mixed_dtype_groups_and_sparse():
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    # bfloat16 computes in float32 on both engines and rounds once: at most 1 bf16 ulp apart
    eps16 = torch.finfo(torch.bfloat16).eps
    tol = {
        torch.float32: (4e-6, 1e-7),
        torch.float64: (1e-12, 1e-14),
        torch.bfloat16: (eps16, 1e-6),
    }
    runs = []
    for implementation in ("per_tensor", "compiled"):
        variables = [v for dt in dtypes for v in make_vars([(5,), (2, 3)], dt, seed=17)]
        emb = torch.nn.Parameter(torch.ones(6, 2))
        opt = ko.optimizers.Adam(0.05, implementation=implementation)
        for step in range(2):
            grads = [g for dt in dtypes for g in make_grads([(5,), (2, 3)], 2, dt, seed=18)[step]]
            sparse = ko.IndexedSlices(torch.full((2, 2), 0.5), torch.tensor([1, 1]), (6, 2))
            opt.apply_gradients([*zip(grads, variables), (sparse, emb)])
        runs.append([*variables, emb])
    for a, b in zip(*runs):
        rtol, atol = tol[a.dtype]
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "Nadam", "Ftrl"])
def test_compiled_matches_eager_in_half_precision(name, dtype):
    """Half precision computes in float32 on every engine and rounds once on store
    (kerasopt.optimizer.compute_dtype), so compiled and eager differ only where float32 results
    a few float32 ulps apart round to neighbouring half values: at most 1 ulp of the half type
    per step (measured: 0 over 5 steps for every optimizer; it was 1.3% (fp16) and 7% (bf16,
    Ftrl) when the rule ran in the half type)."""
    spec = next(s for s in OPTIMIZERS if s.name == name)
    runs = []
    for implementation in ("per_tensor", "compiled"):
        variables = make_vars([(5,), (2, 3)], dtype, seed=21)
        opt = make_optimizer(spec, spec.configs[-1], implementation=implementation)
        for grads in make_grads([(5,), (2, 3)], 4, dtype, seed=22):
            opt.apply_gradients(zip(grads, variables))
        runs.append(variables)
    eps = torch.finfo(dtype).eps
    for a, b in zip(*runs):
        x, y = a.detach().double(), b.detach().double()
        ulp = eps * torch.maximum(x.abs(), y.abs()).clamp_min(torch.finfo(dtype).tiny)
        assert ((x - y).abs() <= 4 * ulp).all(), f"{name} {dtype}: {x} vs {y}"


@pytest.mark.parametrize("name", ["Lamb", "Adafactor"])
def test_whole_tensor_rules_compile_per_tensor_within_a_few_ulp(name):
    """Lamb and Adafactor under ``compiled``: one graph per shape class, shared by instances,
    no recompile when a hyperparameter changes; within the compiled engine's ulp bound of the
    per-tensor rule (their norms may sum in another order). Adafactor factors the second moment
    of the matrices; compiled, the column means of those whose rows are two or more whole
    blocks of 32 sum the blocks ((64, 7), and (2, 64, 3) with a batch axis), the others take
    the plain mean ((130, 129), (2, 70, 3))."""
    shapes = [(), (1,), (5,), (3, 4), (130, 129), (1, 6), (64, 7), (2, 70, 3), (2, 64, 3)]
    make = getattr(ko.optimizers, name)
    _compare_with_eager(lambda impl: make(0.01, implementation=impl), shapes, 3, seed=17)
    if name == "Adafactor":  # the update's RMS clipped (RMS(u) is about 1)
        clipped = lambda impl: make(0.01, clip_threshold=0.5, implementation=impl)  # noqa: E731
        _compare_with_eager(clipped, shapes, 3, seed=27)
    variables = make_vars(shapes, torch.float32, seed=18)
    grads = make_grads(shapes, 1, torch.float32, seed=19)[0]
    opt = make(0.01, implementation="compiled")
    opt.apply_gradients(zip(grads, variables))
    before = _graphs()
    opt.learning_rate = 0.02
    opt.apply_gradients(zip(grads, variables))
    if name == "Adafactor":
        # (its default clip_threshold, 1.0, was the same cached constant as its `one`: dynamo
        # guarded on the two inputs aliasing, and a new value recompiled)
        opt.clip_threshold = 0.5
        opt.apply_gradients(zip(grads, variables))
    other = make(0.05, implementation="compiled")
    other.apply_gradients(zip(grads, [torch.nn.Parameter(v.detach().clone()) for v in variables]))
    assert _graphs() == before
    whole = [k for k in _compiled._CACHE if k[-1] == "whole" and k[1] is make]
    assert whole and not [k for k in whole if k in _compiled._BROKEN]  # it did compile


@pytest.mark.parametrize("name", ["Lamb", "Adafactor"])
def test_whole_tensor_rules_run_their_vectors_in_chunks(name, monkeypatch):
    """A whole-tensor rule's vectors run ``VECTOR_CHUNK`` to a compiled call, each with its own
    reductions, within the compiled engine's ulp bound of the per-tensor rule; a matrix and a
    non-contiguous vector run one tensor a call. A chunk graph that cannot be compiled leaves
    its vectors to the one-tensor calls: a warning, and their numbers."""
    shapes = [(5,), (7,), (300,), (2,), (9,), (33,), (4,), (6,), (11,), (3, 4)]
    make = getattr(ko.optimizers, name)
    _compare_with_eager(lambda impl: make(0.01, implementation=impl), shapes, 3, seed=23)

    def run() -> list[torch.Tensor]:
        variables = make_vars(shapes, torch.float32, seed=24)
        strided = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 20)[::2])
        grads = [*make_grads(shapes, 1, torch.float32, seed=25)[0], torch.full((10,), 0.1)]
        make(0.01, implementation="compiled").apply_gradients(zip(grads, [*variables, strided]))
        assert not strided.is_contiguous()
        return [*variables, strided]

    calls: list[object] = []
    real_call, real_compiled = _compiled._call, _compiled._compiled
    monkeypatch.setattr(
        _compiled, "_call", lambda fn, key, *a: calls.append(key[-1]) or real_call(fn, key, *a)
    )
    chunked = run()
    assert calls.count(("vectors", _compiled.VECTOR_CHUNK)) == 2  # 9 vectors
    assert calls.count("whole") == 2  # the matrix, the strided vector

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    def compiled(key, step=_compiled._chunk_step):
        return (
            broken if key[-1] == ("vectors", _compiled.VECTOR_CHUNK) else real_compiled(key, step)
        )

    monkeypatch.setattr(_compiled, "_compiled", compiled)
    monkeypatch.setattr(_compiled, "_BROKEN", set())
    with pytest.warns(RuntimeWarning, match="compiled engine is unavailable here"):
        one_by_one = run()
    calls.clear()
    assert run() and ("vectors", _compiled.VECTOR_CHUNK) not in calls  # marked broken
    for i, (a, b) in enumerate(zip(one_by_one, chunked)):
        _assert_within_steps_ulps(a, b, 1, f"variable {i}")


# convolution kernels (with 1x1 and 3x3 windows), matrices above and below inductor's 4096-element
# threshold, with and without whole blocks of 32 rows, size-1 dimensions, a rank-5 tensor: more
# shape classes than dynamo's default budget of 8 graphs a function
MANY_CLASSES = [
    (4, 3, 3, 3),
    (4, 4, 1, 1),
    (8, 4, 3, 3),
    (2, 2, 2, 2, 2),
    (10, 8),
    (300, 8),
    (64, 8),
    (96, 5),
    (1, 7),
    (7, 1),
    (2, 64, 3),
    (2, 70, 3),
    (5, 1, 1),
    (6,),
    (9,),
]


@pytest.mark.parametrize("name", ["Lamb", "Adafactor"])
def test_whole_tensor_rules_compile_more_shape_classes_than_dynamos_default_budget(name):
    """A model with a dozen shape classes compiles each (dynamo's default budget of 8 graphs a
    function raised ``FailOnRecompileLimitHit`` out of the step at the ninth), within the
    compiled engine's ulp bound of the per-tensor rule."""
    make = getattr(ko.optimizers, name)
    _compare_with_eager(lambda impl: make(0.01, implementation=impl), MANY_CLASSES, 2, seed=31)
    assert not [k for k in _compiled._BROKEN if k[1] is make]


def test_a_key_out_of_its_graph_budget_falls_back_to_the_eager_rule(monkeypatch):
    """Past ``_RECOMPILES``' budget a key falls back to the eager rule for the rest of the
    process, with a warning, like any compile failure: no error out of the step, and the
    eager rule's numbers."""
    monkeypatch.setattr(_compiled, "_CACHE", {})  # (a fresh code object: its own budget)
    monkeypatch.setattr(_compiled, "_READY", {})
    monkeypatch.setattr(_compiled, "_BROKEN", set())
    monkeypatch.setattr(_compiled, "_RECOMPILES", torch._dynamo.config.patch(recompile_limit=2))
    variables = make_vars(MANY_CLASSES, torch.float32, seed=33)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    grads = make_grads(MANY_CLASSES, 1, torch.float32, seed=34)[0]
    with pytest.warns(RuntimeWarning, match="compiled engine is unavailable here"):
        ko.optimizers.Adafactor(0.01, implementation="compiled").apply_gradients(
            zip(grads, variables)
        )
    assert [k for k in _compiled._BROKEN if k[-1] == "whole"]
    ko.optimizers.Adafactor(0.01, implementation="per_tensor").apply_gradients(zip(grads, twins))
    for i, (got, ref) in enumerate(zip(variables, twins)):
        _assert_within_steps_ulps(got, ref, 1, f"variable {i}")


def test_a_call_that_compiles_a_graph_hands_back_what_compiling_freed(monkeypatch):
    """Compiling a graph allocates and frees 100-200 MB that glibc would keep resident: a call
    that compiled one (dynamo's ``unique_graphs`` moved) calls ``release`` once; a call that
    reuses its graph does not."""
    monkeypatch.setattr(_compiled, "_CACHE", {})  # (fresh code objects: their own graphs)
    monkeypatch.setattr(_compiled, "_READY", {})
    released = []
    monkeypatch.setattr(_compiled, "release", lambda: released.append(1))
    variables = make_vars(SHAPES, torch.float32, seed=35)
    opt = ko.optimizers.RMSprop(0.01, jit_compile=True)
    grads = make_grads(SHAPES, 2, torch.float32, seed=36)
    opt.apply_gradients(zip(grads[0], variables))
    compiled = len(released)
    assert compiled >= 1
    opt.apply_gradients(zip(grads[1], variables))
    assert len(released) == compiled
