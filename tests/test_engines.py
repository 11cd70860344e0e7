"""Every engine runs the one rule: per-tensor and foreach are bit-identical, dense and sparse.

Only elementwise rules have a second engine: ``_engines.select`` runs a rule that needs the whole
tensor (``elementwise = False``: Lamb, Adafactor, Muon) per tensor whatever ``implementation``
says, so for those the tests below check that routing and the result against the float64
reference instead of comparing per-tensor with itself. Sparse gradients reach an engine only
where the optimizer densifies them (``sparse_mode = "dense"``); the lazy sparse rules run
``update_sparse`` per variable, outside the engines, which is checked as such.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from kerasopt import _engines, _tensorlist
from kerasopt._types import Coefficients
from tests.helpers import (
    RefRun,
    assert_matches,
    make_grads,
    make_optimizer,
    make_vars,
    to64,
)
from tests.specs import OPTIMIZERS

ENGINES = ["per_tensor", "foreach"]
MIXED = [(), (7,), (3, 4), (2, 3, 2)]


def _cases(predicate):
    chosen = [(s, c, i) for s in OPTIMIZERS if predicate(s) for c, i in zip(s.configs, s.ids())]
    return [(s, c) for s, c, _ in chosen], [i for _, _, i in chosen]


# The cases are chosen by what the table states (OptSpec.elementwise, OptSpec.sparse), which
# test_classes_declare_what_the_table_states holds the classes' attributes to.
ELEMENTWISE, ELEMENTWISE_IDS = _cases(lambda s: s.elementwise)
WHOLE_TENSOR, WHOLE_TENSOR_IDS = _cases(lambda s: not s.elementwise)
# Elementwise rules that densify sparse gradients: the densified gradient joins a foreach group.
DENSIFIED, DENSIFIED_IDS = _cases(lambda s: s.elementwise and not s.sparse)
LAZY, LAZY_IDS = _cases(lambda s: s.sparse)


def test_classes_declare_what_the_table_states():
    """Each class's ``elementwise`` (the engines run it per tensor when False) and
    ``sparse_mode`` ("lazy": its own sparse rule, "dense": densify) are what the table states
    from docs/reference-behaviour.md / TensorFlow; a class that drifts would otherwise only move its cases between the
    tests above, where they might still pass."""
    classes = {s.name: getattr(ko.optimizers, s.name) for s in OPTIMIZERS}
    declared = {n: (cls.elementwise, cls.sparse_mode) for n, cls in classes.items()}
    stated = {s.name: (s.elementwise, "lazy" if s.sparse else "dense") for s in OPTIMIZERS}
    assert declared == stated


class EngineSpy:
    """Records which engine ran which variables (``select`` looks the engines up by name)."""

    NAMES = (
        "run_per_tensor",
        "run_foreach",
        "run_compiled",
        "run_packed",
        "run_flat",
        "run_whole_compiled",
    )

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        for name in self.NAMES:
            monkeypatch.setattr(_engines, name, self._wrap(name, getattr(_engines, name)))

    def _wrap(self, name, engine):
        def run(rule, variables, *args, **kwargs):
            self.calls.append((name, [id(v) for v in variables]))
            return engine(rule, variables, *args, **kwargs)

        return run

    def engines_of(self, var: torch.Tensor) -> set[str]:
        return {name for name, ids in self.calls if id(var) in ids}


def _run(spec, config, implementation, dtypes, steps=3):
    variables = [v for dt in dtypes for v in make_vars(MIXED, dt, seed=5)]
    grads = [
        [g for dt in dtypes for g in make_grads(MIXED, steps, dt, seed=6)[s]] for s in range(steps)
    ]
    opt = make_optimizer(spec, config, implementation=implementation)
    for step_grads in grads:
        opt.apply_gradients(zip(step_grads, variables))
    return opt, variables


def _assert_same_state(opt_a, vars_a, opt_b, vars_b):
    """Variables and every slot bit-identical (slot sets may differ per variable: Adafactor's
    r/c exist only for rank >= 2)."""
    for i, (a, b) in enumerate(zip(vars_a, vars_b)):
        assert torch.equal(a, b), f"variable {i}"
        names = opt_a._store.by_id[id(a)].slots
        assert names.keys() == opt_b._store.by_id[id(b)].slots.keys(), f"slots of variable {i}"
        assert names, f"variable {i} has no slots to compare"
        for name in names:
            got, ref = opt_b.get_slot(b, name), opt_a.get_slot(a, name)
            assert torch.equal(got, ref), f"slot {name!r} of variable {i}"


@pytest.mark.parametrize(("spec", "config"), ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_foreach_bit_identical_to_per_tensor_mixed_dtypes(spec, config, monkeypatch):
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    ref_opt, ref_vars = _run(spec, config, "per_tensor", dtypes)
    spy = EngineSpy(monkeypatch)
    opt, variables = _run(spec, config, "foreach", dtypes)
    # every group ran foreach; bfloat16 variables as their float32 working copies (they compute
    # in float32: kerasopt.optimizer.compute_dtype), so count the tensors the engine updated
    assert {name for name, _ in spy.calls} == {"run_foreach"}, spy.calls
    assert sum(len(ids) for _, ids in spy.calls) == 3 * len(variables)
    assert all(spy.engines_of(v) == {"run_foreach"} for v in variables if v.dtype != torch.bfloat16)
    for i, (a, b) in enumerate(zip(ref_vars, variables)):
        assert torch.equal(a, b), f"variable {i}"
        names = ref_opt._store.by_id[id(a)].slots
        assert names.keys() == opt._store.by_id[id(b)].slots.keys()
        for name in names:
            assert torch.equal(ref_opt.get_slot(a, name), opt.get_slot(b, name)), name


@pytest.mark.parametrize("implementation", ["per_tensor", "foreach", "compiled", "flat", "auto"])
@pytest.mark.parametrize(("spec", "config"), WHOLE_TENSOR, ids=WHOLE_TENSOR_IDS)
def test_whole_tensor_rules_run_per_tensor_and_match_reference(
    spec, config, implementation, monkeypatch
):
    """Lamb, Adafactor and Muon (``elementwise = False``) have no multi-tensor engine: they run
    one tensor per call, compiled under ``compiled`` / ``flat`` (and ``auto`` for large groups)
    where the class allows it (Lamb, Adafactor; Muon's matrix products gain nothing), eagerly
    otherwise; a float32 + float64 group (one apply_gradients call, a densified sparse gradient
    in it) follows the float64 reference either way."""
    dtypes = [torch.float32, torch.float64]
    variables = [v for dt in dtypes for v in make_vars(MIXED, dt, seed=5)]
    emb = [
        torch.nn.Parameter(torch.tensor(np.linspace(-1, 1, 12).reshape(6, 2), dtype=dt))
        for dt in dtypes
    ]
    spy = EngineSpy(monkeypatch)
    opt = make_optimizer(spec, config, implementation=implementation)
    runs = {
        dt: RefRun(spec, config, [*make_vars(MIXED, dt, seed=5), emb[j]])
        for j, dt in enumerate(dtypes)
    }
    for step in range(3):
        grads = [g for dt in dtypes for g in make_grads(MIXED, 3, dt, seed=6)[step]]
        idx = np.array([1, 4, 1])
        vals = np.full((3, 2), 0.5 + step)
        sparse = [
            ko.IndexedSlices(torch.tensor(vals, dtype=dt), torch.tensor(idx), (6, 2))
            for dt in dtypes
        ]
        opt.apply_gradients([*zip(grads, variables), *zip(sparse, emb)])
        for j, dt in enumerate(dtypes):
            own = grads[j * len(MIXED) : (j + 1) * len(MIXED)]
            runs[dt].step(step + 1, [*(to64(g) for g in own), (idx, vals)])
    for j, dt in enumerate(dtypes):
        own = [*variables[j * len(MIXED) : (j + 1) * len(MIXED)], emb[j]]
        assert_matches(opt, own, runs[dt], spec, dt, f"{implementation}, {dt}")
        compiles = spec.name in ("Lamb", "Adafactor") and implementation in ("compiled", "flat")
        engine = "run_whole_compiled" if compiles else "run_per_tensor"
        assert all(spy.engines_of(v) == {engine} for v in own), spy.calls
    assert type(opt).compiles_whole_tensors == (spec.name in ("Lamb", "Adafactor"))
    big = _engines.AUTO_COMPILE_NUMEL
    for impl in _engines.ENGINES:
        assert _engines.select(impl, False, big, 100) is _engines.run_per_tensor
        compiled = impl in ("compiled", "flat", "auto")
        assert _engines.select(impl, False, big, 100, compile_whole=True) is (
            _engines.run_whole_compiled if compiled else _engines.run_per_tensor
        )
    assert _engines.select("auto", False, big - 1, 100, compile_whole=True) is (
        _engines.run_per_tensor
    )


def _sparse_run(spec, config, implementation):
    """A sparse (6, 2) variable (duplicate index 1) and two dense ones in one call, 3 steps."""
    var = make_vars([(6, 2)], torch.float32, seed=7)[0]
    dense = make_vars([(3,), (2, 2)], torch.float32, seed=8)
    opt = make_optimizer(spec, config, implementation=implementation)
    for step in range(3):
        g = ko.IndexedSlices(torch.full((3, 2), 0.5 + step), torch.tensor([1, 4, 1]), (6, 2))
        grads = make_grads([(3,), (2, 2)], 3, torch.float32, seed=9)[step]
        opt.apply_gradients([(g, var), *zip(grads, dense)])
    return opt, [var, *dense]


@pytest.mark.parametrize(("spec", "config"), DENSIFIED, ids=DENSIFIED_IDS)
def test_engines_agree_on_densified_sparse_gradients(spec, config, monkeypatch):
    """AdamW, Lion, ScheduleFreeAdamW densify a sparse gradient, which then runs through the
    engine with the dense variables: foreach (checked to be the engine that ran) equals
    per-tensor bit for bit, variables and slots."""
    ref_opt, ref_vars = _sparse_run(spec, config, "per_tensor")
    spy = EngineSpy(monkeypatch)
    opt, variables = _sparse_run(spec, config, "foreach")
    assert spy.engines_of(variables[0]) == {"run_foreach"}, spy.calls
    _assert_same_state(ref_opt, ref_vars, opt, variables)


@pytest.mark.parametrize(("spec", "config"), LAZY, ids=LAZY_IDS)
def test_lazy_sparse_rules_bypass_the_engines(spec, config, monkeypatch):
    """The lazy sparse rules (SGD, Adam, Adagrad, ... Ftrl) run ``update_sparse`` per variable:
    no engine sees the sparse variable, whatever ``implementation`` says, so the engines cannot
    change it; the dense variables of the same call still take the chosen engine."""
    spy = EngineSpy(monkeypatch)
    states = []
    for implementation in ("per_tensor", "foreach"):
        spy.calls.clear()
        opt, variables = _sparse_run(spec, config, implementation)
        assert spy.engines_of(variables[0]) == set(), spy.calls
        engine = "run_per_tensor" if implementation == "per_tensor" else "run_foreach"
        assert all(spy.engines_of(v) == {engine} for v in variables[1:]), spy.calls
        states.append((opt, variables))
    (opt_a, vars_a), (opt_b, vars_b) = states
    for name in opt_a._store.by_id[id(vars_a[0])].slots:
        assert torch.equal(opt_a.get_slot(vars_a[0], name), opt_b.get_slot(vars_b[0], name))
    assert torch.equal(vars_a[0], vars_b[0])


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        ko.optimizers.Adam(implementation="magic")


WHOLE = [s for s in OPTIMIZERS if not s.elementwise]


@pytest.mark.parametrize("spec", WHOLE, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gathered_whole_tensor_path_computes_half_precision_in_float32(spec, dtype):
    """FSDP2 runs a whole-tensor rule on gathered tensors (``run_whole_tensors``); for half
    precision it must compute in float32 and round once, exactly as the unsharded path
    (``run_in_float32``) does, or sharded and unsharded training drift apart."""
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(4, 3, generator=gen).to(dtype)
    grad = torch.randn(4, 3, generator=gen).to(dtype)
    results = []
    for run in ("gathered", "unsharded"):
        var = ko.Variable(start.clone(), name="w")
        opt = getattr(ko.optimizers, spec.name)(**spec.configs[0])
        opt.build([var])
        slots = {k: [v] for k, v in opt._rule_slots(opt._store.record_of(var)).items()}
        for t in (var, *(lst[0] for lst in slots.values())):
            t.requires_grad_(False)
        c = opt._prepare([var])[(var.device, torch.float32)]
        with torch.no_grad():
            if run == "gathered":
                _engines.run_whole_tensors(opt.update, [var], [grad], slots, c)
            else:
                _engines.run_in_float32(
                    _engines.run_per_tensor, opt.update, [var], [grad], slots, c
                )
        results.append([var.detach().clone(), *(lst[0].clone() for lst in slots.values())])
    assert not torch.equal(results[0][0], start), "nothing moved"
    for a, b in zip(*results):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_auto_keeps_foreach_for_many_small_tensors_of_a_rule_without_slots():
    """The flat engine packs variables and gradients every step: worth it for a rule with
    state, not for plain SGD (bench_optim: SGD 3.3x -> 1.8x torch foreach on 148 tensors)."""
    many, small = _engines.FLAT_MIN_TENSORS, _engines.FLAT_MIN_TENSORS * 100
    assert _engines.select("auto", True, small, many, slots=2) is _engines.run_packed
    assert _engines.select("auto", True, small, many, slots=0) is _engines.run_foreach
    assert _engines.select("compiled", True, small, many, slots=0) is _engines.run_packed
    w = [torch.nn.Parameter(torch.ones(8)) for _ in range(many)]
    opt = ko.optimizers.SGD(0.5)
    opt.apply_gradients([(torch.ones(8), v) for v in w])
    assert all(torch.equal(v, torch.full((8,), 0.5)) for v in w)


@pytest.mark.parametrize("implementation", ["foreach", "compiled", "flat"])
def test_a_model_converted_to_float64_between_steps_is_refused_by_name(implementation):
    """``model.double()`` keeps each parameter's identity and gives it new storage of another
    dtype. Its slots were made for float32, so the step is refused with the variable named (a
    bare KeyError from the engines' group cache once; then float32 moments silently stepped
    float64 variables) and changes nothing; converted back, the model steps on."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
    params = list(model.parameters())
    opt = ko.optimizers.Adam(0.1, implementation=implementation)

    def step():
        loss = model(torch.ones(2, 4, dtype=params[0].dtype)).sum()
        opt.apply_gradients(zip(torch.autograd.grad(loss, params), params))

    step()
    model.double()
    before = [p.detach().clone() for p in params]
    slots = [s.detach().clone() for s in opt.variables()]
    with pytest.raises(ValueError, match=r"'variable_0' has dtype torch\.float64, but its slots"):
        step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    assert all(torch.equal(s, b) for s, b in zip(opt.variables(), slots))
    assert int(opt.iterations) == 1
    model.float()
    step()
    assert int(opt.iterations) == 2


def _foreach_caches(monkeypatch):
    """The group caches the foreach engine runs with, one per call, as they are filled."""
    caches = []
    real = _engines.run_foreach

    def spy(rule, variables, grads, slots, c, cache=None):
        caches.append(cache)
        return real(rule, variables, grads, slots, c, cache)

    monkeypatch.setattr(_engines, "run_foreach", spy)
    return caches


def _scratch_sizes(scratch):
    return {key: len(lists) for key, lists in scratch.free.items()}


def test_foreach_temporaries_live_in_buffers_kept_between_steps(monkeypatch):
    """Below ``SCRATCH_MAX_NUMEL`` the foreach engine's temporaries are the group's ``Scratch``
    buffers: the first step allocates as many lists as the rule holds at once (one for Adam on
    the CPU, ``sqrt(v) + eps``: the quotient is one ``addcdiv_``), later steps allocate none,
    and the numbers stay the
    per-tensor engine's bit for bit (fresh temporaries of 100 KB and more cost page faults every
    step: docs/performance.md)."""
    caches = _foreach_caches(monkeypatch)
    torch.manual_seed(0)
    shapes = [(64, 32), (32,), (300, 400)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(4)]
    runs = {}
    for implementation in ("per_tensor", "foreach"):
        variables = [ko.Variable(t.clone()) for t in start]
        opt = ko.optimizers.Adam(0.1, implementation=implementation)
        sizes = []
        for gs in grads:
            opt.apply_gradients(zip(gs, variables))
            if implementation == "foreach":
                sizes.append(_scratch_sizes(caches[-1]["foreach"][3]))
        runs[implementation] = (opt, variables)
    assert sizes[0] == sizes[-1] and sum(sizes[0].values()) == 1, sizes
    (ref_opt, ref_vars), (opt, variables) = runs["per_tensor"], runs["foreach"]
    _assert_same_state(ref_opt, ref_vars, opt, variables)


def test_foreach_groups_above_the_scratch_limit_keep_no_buffers(monkeypatch):
    monkeypatch.setattr(_engines, "SCRATCH_MAX_NUMEL", 10)
    caches = _foreach_caches(monkeypatch)
    v = ko.Variable(torch.ones(11))
    opt = ko.optimizers.Adam(0.1, implementation="foreach")
    opt.apply_gradients([(torch.ones(11), v)])
    assert caches[-1]["foreach"][3] is None
    assert type(caches[-1]["foreach"][1]) is _tensorlist.TensorList
    # Adam's first step from zero slots: m = 0.1 g, v = 0.001 g^2 -> var -= lr * m_hat / ...
    assert torch.allclose(v, torch.full((11,), 0.9), atol=1e-6)


def test_a_pooled_list_computes_what_a_tensorlist_computes_in_buffers_it_reuses():
    """Every pooled operation against ``TensorList``'s ``_foreach`` result, bit for bit; a
    buffer still held is never handed out again, and a dropped one is."""
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 3), (7,), ()]
    scratch = _tensorlist.Scratch()

    def pooled(lo=0.5):
        return _tensorlist.pooled([torch.rand(s, generator=g) + lo for s in shapes], scratch)

    a, b = pooled(), pooled()
    plain_a, plain_b = _tensorlist.TensorList(a), _tensorlist.TensorList(b)
    zero_d = torch.tensor(1.5)  # a 0-d operand of the list's dtype
    cases = [
        lambda x, y: x + y,
        lambda x, y: x + 2.5,
        lambda x, y: x - y,
        lambda x, y: x - zero_d,
        lambda x, y: 3.0 - x,
        lambda x, y: x * y,
        lambda x, y: x * zero_d,
        lambda x, y: x / y,
        lambda x, y: x / 3.0,
        lambda x, y: -x,
        lambda x, y: x**2.0,
        lambda x, y: x**y,
        lambda x, y: x.sqrt(),
        lambda x, y: x.rsqrt(),
        lambda x, y: (x - 1.0).abs(),
        lambda x, y: (x - 1.0).sign(),
        lambda x, y: x.square(),
        lambda x, y: x.maximum(y),
        lambda x, y: x.minimum(y),
    ]
    for i, op in enumerate(cases):
        got, want = op(a, b), op(plain_a, plain_b)
        assert isinstance(got, _tensorlist.PooledList), i
        assert all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(got, want)), i
    held = a * 2.0
    other = a + 1.0
    assert all(x.data_ptr() != y.data_ptr() for x, y in zip(held, other))
    assert torch.equal(held[0], plain_a[0] * 2.0)
    ident = id(other)
    del other
    assert id(a - 1.0) == ident  # dropped: its buffers are taken again
    # operands that could promote run as a TensorList does (fresh tensors, their own dtype)
    wide = _tensorlist.TensorList([t.double() for t in b])
    mixed = a * wide
    assert type(mixed) is _tensorlist.TensorList and mixed[0].dtype == torch.float64
    assert type(a * torch.tensor(1j)) is _tensorlist.TensorList
    assert type(a * torch.ones(1)) is _tensorlist.TensorList  # broadcast: the aten loop
    scalars = a - [1.0, 2.0, 3.0]  # a list of numbers: torch's ScalarList overload
    assert type(scalars) is _tensorlist.TensorList and torch.equal(scalars[1], plain_a[1] - 2.0)
    promoted = a * torch.tensor(1.5, dtype=torch.float64)  # promotes the 0-d member
    assert type(promoted) is _tensorlist.TensorList and promoted[2].dtype == torch.float64


def test_a_scratch_keeps_at_most_max_lists_when_temporaries_are_kept():
    """Temporaries a rule keeps are its own: past ``MAX_LISTS`` held lists of one shape the
    scratch stops pooling instead of growing step after step."""
    scratch = _tensorlist.Scratch()
    a = _tensorlist.pooled([torch.ones(3), torch.ones(2)], scratch)
    kept = [a * float(i) for i in range(_tensorlist.MAX_LISTS + 3)]
    assert [type(t) for t in kept[-3:]] == [_tensorlist.TensorList] * 3
    assert all(torch.equal(t[1], torch.full((2,), float(i))) for i, t in enumerate(kept))
    assert sum(len(lists) for lists in scratch.free.values()) == _tensorlist.MAX_LISTS
    kept.clear()
    assert isinstance(a + 1.0, _tensorlist.PooledList)  # freed: pooled again
    assert sum(len(lists) for lists in scratch.free.values()) == _tensorlist.MAX_LISTS


# Each helper, and the separate operations in TF's order it stands for: (helper, reference),
# each called with (coefficients, var, x, denominator, scale, decay).
_ONE_PASS_HELPERS = {
    "sub_quotient": (
        lambda c, v, x, d, s, r: c.sub_quotient(v, x, s, d),
        lambda c, v, x, d, s, r: v - (x * s) / d,
    ),
    "sub_product": (
        lambda c, v, x, d, s, r: c.sub_product(v, x, s),
        lambda c, v, x, d, s, r: v - x * s,
    ),
    "add_product": (
        lambda c, v, x, d, s, r: c.add_product(v, x, s),
        lambda c, v, x, d, s, r: v + x * s,
    ),
    "average": (
        lambda c, v, x, d, s, r: c.average(v, r, x, s),
        lambda c, v, x, d, s, r: v * r + x * s,
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("helper", sorted(_ONE_PASS_HELPERS))
def test_the_one_pass_subtractions_are_the_operations_bit_for_bit(helper, dtype):
    """``Coefficients.sub_quotient``, ``sub_product``, ``add_product`` and ``average`` (one
    ``addcdiv_`` each, eagerly on the CPU for float32 and float64) against the separate
    operations in TF's order, ``var - (x * s) / d``, ``var - x * s``, ``var + x * s`` and
    ``var * r + x * s``: equal bit for bit, on tensors and on a ``TensorList``, for sizes that
    run the vectorised body and the scalar tail, with values over forty binades (twelve for
    half). Half and bfloat16 (which ``addcdiv_`` would round once, in float32) take the separate
    operations. CI runs the suite under ATEN_CPU_CAPABILITY=default and =avx2 too."""
    g = torch.Generator().manual_seed(5)
    sizes = [1, 7, 16, 33, 1000, 4099]
    span = 6 if dtype == torch.float16 else 20

    def draw(n: int) -> torch.Tensor:
        exponents = torch.randint(-span, span, (n,), generator=g).to(torch.float64)
        return (torch.randn(n, generator=g, dtype=torch.float64) * torch.exp2(exponents)).to(dtype)

    var, num = [draw(n) for n in sizes], [draw(n) for n in sizes]
    den = [draw(n).abs() + 1e-3 for n in sizes]
    scale, decay = torch.tensor(3.7e-4, dtype=dtype), torch.tensor(0.93, dtype=dtype)
    helper_, reference = _ONE_PASS_HELPERS[helper]
    c = Coefficients()
    expected = [reference(c, v, x, d, scale, decay) for v, x, d in zip(var, num, den)]
    singles = [v.clone() for v in var]
    for v, x, d in zip(singles, num, den):
        helper_(c, v, x, d, scale, decay)
    group = _tensorlist.TensorList([v.clone() for v in var])
    lists = _tensorlist.TensorList(num), _tensorlist.TensorList(den)
    helper_(c, group, *lists, scale, decay)
    for i, (want, one, many) in enumerate(zip(expected, singles, group)):
        assert torch.equal(one, want) and torch.equal(many, want), f"size {sizes[i]}"
