"""The flat engine (``implementation="flat"``): variables and slots re-homed into one buffer per
group, one compiled call per step, the same numbers as the compiled engine; what re-homing must
never change (identity, views a user holds, ``param.data = ...``, saved state), and
``kerasopt.optim``'s ``.grad`` views of the gradient buffer."""

from __future__ import annotations

import os
import platform
import sys

import pytest
import torch

import kerasopt as ko
from kerasopt import _engines
from tests.helpers import make_grads, make_optimizer, make_vars
from tests.specs import OPTIMIZERS
from tests.test_compiled import _assert_within_steps_ulps

ELEMENTWISE = [s for s in OPTIMIZERS if s.elementwise]
# 70 tensors (2 to 14 elements, some 2-D): more than one compiled chunk, one flat buffer
SHAPES = [(2 + i % 7,) if i % 3 else (2, 1 + i % 7) for i in range(70)]


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def _run(spec, config, implementation, steps=3, seed=21):
    variables = make_vars(SHAPES, torch.float32, seed=seed)
    opt = make_optimizer(spec, config, implementation=implementation)
    for grads in make_grads(SHAPES, steps, torch.float32, seed=seed + 1):
        opt.apply_gradients(zip(grads, variables))
    return opt, variables


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=[s.name for s in ELEMENTWISE])
def test_flat_is_the_compiled_engine_bit_for_bit(spec):
    """Every elementwise optimizer: flat storage runs the compiled rule over the same elements
    as the compiled engine's chunks, so variables and every slot are bit-identical to it (and
    within the compiled engine's ulp bound of the per-tensor reference)."""
    config = spec.configs[-1]
    flat_opt, flat_vars = _run(spec, config, "flat")
    comp_opt, comp_vars = _run(spec, config, "compiled")
    _, ref_vars = _run(spec, config, "per_tensor")
    assert len(_storages(flat_vars)) == 1  # one buffer holds them all
    for i, (f, c, r) in enumerate(zip(flat_vars, comp_vars, ref_vars)):
        assert torch.equal(f, c), f"variable {i}"
        _assert_within_steps_ulps(f, r, 3, f"variable {i}")
        for name in comp_opt._store.by_id[id(c)].slots:
            got, want = flat_opt.get_slot(f, name), comp_opt.get_slot(c, name)
            assert torch.equal(got, want), f"slot {name!r} of variable {i}"
    names = comp_opt._store.by_id[id(comp_vars[0])].slots
    for name in names:
        assert len(_storages(flat_opt.get_slot(v, name) for v in flat_vars)) == 1, name


def test_rehoming_keeps_identity_autograd_and_module_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(8)])
    params = list(model.parameters())
    ids = [id(p) for p in params]
    opt = ko.optimizers.Adam(0.01, implementation="flat")
    x = torch.randn(5, 4)
    for _ in range(2):
        with ko.GradientTape() as tape:
            loss = model(x).square().sum()
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
    assert [id(p) for p in model.parameters()] == ids
    assert all(isinstance(p, torch.nn.Parameter) and p.is_leaf for p in params)
    assert len(_storages(params)) == 1
    # autograd still reaches every parameter, and a state_dict round trip restores the values
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in params)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in params:
            p.zero_()
    model.load_state_dict(saved)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert len(_storages(params)) == 1  # load_state_dict copies in place


def test_a_variable_given_new_data_is_repacked_not_ignored():
    variables = make_vars(SHAPES, torch.float32, seed=30)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    flat = ko.optimizers.SGD(0.5, momentum=0.5, implementation="flat")
    ref = ko.optimizers.SGD(0.5, momentum=0.5, implementation="compiled")
    grads = make_grads(SHAPES, 1, torch.float32, seed=31)[0]
    flat.apply_gradients(zip(grads, variables))
    ref.apply_gradients(zip(grads, twins))
    with torch.no_grad():
        variables[3].data = torch.full(SHAPES[3], 7.0)  # new storage behind the same Parameter
        twins[3].data = torch.full(SHAPES[3], 7.0)
    flat.apply_gradients(zip(grads, variables))
    ref.apply_gradients(zip(grads, twins))
    for i, (a, b) in enumerate(zip(variables, twins)):
        assert torch.equal(a, b), f"variable {i}"
    assert len(_storages(variables)) == 1  # variable 3 is back in the buffer


def test_a_variable_a_user_views_is_not_moved_and_the_view_keeps_following_it():
    """Re-homing a variable that another tensor views would silently cut that view off: such
    a group runs the packed engine (the same numbers) until the view is gone."""
    variables = make_vars(SHAPES, torch.float32, seed=40)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    alias = variables[5].detach().view(-1)  # e.g. a NumPy array or a view kept by a user
    flat = ko.optimizers.Adam(0.1, implementation="flat")
    ref = ko.optimizers.Adam(0.1, implementation="compiled")
    for grads in make_grads(SHAPES, 2, torch.float32, seed=41):
        flat.apply_gradients(zip(grads, variables))
        ref.apply_gradients(zip(grads, twins))
    assert alias.data_ptr() == variables[5].data_ptr()
    assert torch.equal(alias, variables[5].detach().view(-1))
    assert len(_storages(variables)) == len(variables)  # nothing was moved
    del alias
    for grads in make_grads(SHAPES, 2, torch.float32, seed=42):
        flat.apply_gradients(zip(grads, variables))
        ref.apply_gradients(zip(grads, twins))
    assert len(_storages(variables)) == 1  # the view is gone: the group went flat
    for i, (a, b) in enumerate(zip(variables, twins)):
        assert torch.equal(a, b), f"variable {i}"


def test_movable_refuses_views_and_shared_memory():
    import numpy as np

    owner = torch.randn(6)
    assert _engines.movable([owner])
    view = owner[1:4]
    assert not _engines.movable([view])  # a window of a larger storage
    assert not _engines.movable([owner])  # now something else views it
    del view
    assert _engines.movable([owner])
    assert not _engines.movable([torch.randn(3, 4).t()])  # not contiguous
    assert not _engines.movable([torch.from_numpy(np.zeros(3, dtype=np.float32))])
    base = torch.randn(10)
    assert not _engines.movable([base[:4], base[4:]])  # `base` sees them too


def _compare(steps, impl_a="flat", impl_b="compiled", make=None):
    """Runs ``steps(make(impl))`` for both engines; every variable bit-equal."""
    results = []
    for impl in (impl_a, impl_b):
        results.append(steps(impl))
    for i, (x, y) in enumerate(zip(*results)):
        assert x.dtype == y.dtype and torch.equal(x, y), f"variable {i}"


def test_steps_over_other_subsets_of_the_variables_keep_every_slot_current():
    """Steps over 6, then 5, then 6 variables (and a sparse gradient for one of them in
    between): each subset lays its own group out, and a group that finds its variables or
    slots moved lays itself out again from the current values."""
    shapes = [(3,), (2, 2), (4,), (5,), (3,), (2,)]

    def steps(impl):
        variables = make_vars(shapes, torch.float32, seed=70)
        opt = ko.optimizers.Adam(0.1, implementation=impl)
        grads = make_grads(shapes, 5, torch.float32, seed=71)
        for k, subset in enumerate([6, 5, 6, 5, 6]):
            pairs = list(zip(grads[k], variables))[:subset]
            if k == 3:
                pairs[0] = (ko.IndexedSlices(torch.ones(1), torch.tensor([1]), (3,)), variables[0])
            opt.apply_gradients(pairs)
        return variables

    _compare(steps)

    def optim_steps(impl):  # an unused parameter: its `.grad` is None after zero_grad()
        torch.manual_seed(0)
        layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(4)])
        opt = ko.optim.Adam(layers.parameters(), lr=0.01, implementation=impl)
        x = torch.randn(2, 4)
        for step in range(4):
            opt.zero_grad()
            h = x
            for layer in layers if step != 1 else layers[:3]:
                h = layer(h)
            h.square().sum().backward()
            opt.step()
        return list(layers.parameters())

    _compare(optim_steps)


def test_a_first_flat_step_under_inference_mode_leaves_normal_parameters():
    model, x = _model_and_data(seed=9)
    opt = ko.optimizers.Adam(0.1, implementation="flat")
    params = list(model.parameters())
    grads = [torch.ones_like(p) for p in params]
    with torch.inference_mode():
        opt.apply_gradients(zip(grads, params))
    assert not any(p.is_inference() for p in params)
    model(x).sum().backward()  # autograd still reaches them
    opt.apply_gradients([(p.grad, p) for p in params])
    assert len(_storages(params)) == 1


@pytest.mark.parametrize("change", ["transpose", "from_numpy"])
def test_a_variable_changed_behind_the_layout_is_followed(change):
    """``param.data = ...`` between steps: the same address with other strides (a transposed
    square matrix), memory shared with a NumPy array (which must keep seeing the variable): the
    numbers are the compiled engine's. (Another dtype is refused: test_safety.py.)"""
    import numpy as np

    arrays = []

    def steps(impl):
        variables = [
            torch.nn.Parameter(torch.randn(3, 3, generator=torch.Generator().manual_seed(i)))
            for i in range(4)
        ]
        opt = ko.optimizers.SGD(0.5, momentum=0.5, implementation=impl)
        opt.apply_gradients([(torch.full((3, 3), 0.1), v) for v in variables])
        with torch.no_grad():
            if change == "transpose":
                variables[0].data = variables[0].data.t()
            else:
                arrays.append(np.zeros((3, 3), dtype=np.float32))
                variables[2].data = torch.from_numpy(arrays[-1])
        grad = torch.zeros(3, 3)
        grad[0, 1] = 1.0
        opt.apply_gradients([(grad, v) for v in variables])
        if change == "from_numpy":
            assert np.array_equal(arrays[-1], variables[2].detach().numpy())
        return variables

    _compare(steps)


def test_a_gradient_swapped_with_another_parameters_view_is_read_before_it_is_overwritten():
    def steps(impl):
        params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(4)]
        opt = ko.optim.SGD(params, lr=1.0, implementation=impl)
        for p, value in zip(params, (1.0, 2.0, 3.0, 4.0)):
            p.grad = torch.full((2,), value)
        opt.step()
        opt.zero_grad(set_to_none=False)
        for p, value in zip(params, (1.0, 2.0, 3.0, 4.0)):
            p.grad.fill_(value)
        params[0].grad, params[1].grad = params[1].grad, params[0].grad
        opt.step()
        return params

    _compare(steps)


def test_a_group_stays_flat_when_a_new_variable_joins():
    variables = make_vars(SHAPES[:6], torch.float32, seed=80)
    opt = ko.optimizers.Adam(0.1, implementation="flat")
    for grads in make_grads(SHAPES[:6], 2, torch.float32, seed=81):
        opt.apply_gradients(zip(grads, variables))
    variables.append(torch.nn.Parameter(torch.randn(4)))
    for grads in make_grads([*SHAPES[:6], (4,)], 2, torch.float32, seed=82):
        opt.apply_gradients(zip(grads, variables))
    assert len(_storages(variables)) == 1


def _model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        *[m for _ in range(10) for m in (torch.nn.Linear(6, 6), torch.nn.Tanh())]
    )
    return model, torch.randn(8, 6)


@pytest.mark.parametrize("set_to_none", [False, True])
def test_optim_grads_become_views_that_backward_accumulates_into(set_to_none, monkeypatch):
    """kerasopt.optim under flat: after the first step each ``.grad`` is a view of the group's
    gradient buffer; with ``zero_grad(set_to_none=False)`` the next backward accumulates into it
    and the step copies no gradient. With the default ``zero_grad()`` the gradients are new
    tensors each step and are copied in. Either way the numbers are the compiled engine's."""
    runs = {}
    for impl in ("flat", "compiled"):
        model, x = _model_and_data()
        opt = ko.optim.Adam(model.parameters(), lr=0.01, implementation=impl)
        for _ in range(4):
            opt.zero_grad(set_to_none=set_to_none)
            model(x).square().mean().backward()
            opt.step()
        runs[impl] = (model, opt)
    flat_model, flat_opt = runs["flat"]
    for a, b in zip(flat_model.parameters(), runs["compiled"][0].parameters()):
        assert torch.equal(a, b)
    params = list(flat_model.parameters())
    grad_storages = _storages(p.grad for p in params)
    assert len(grad_storages) == (1 if not set_to_none else len(params))
    if set_to_none:
        return
    copies = []
    real_copy = torch._foreach_copy_
    monkeypatch.setattr(
        torch, "_foreach_copy_", lambda *a, **k: copies.append(1) or real_copy(*a, **k)
    )
    flat_opt.zero_grad(set_to_none=False)
    flat_model(x).square().mean().backward()
    flat_opt.step()
    assert copies == []  # the gradients were already in the buffer
    assert _storages(p.grad for p in params) == grad_storages


def test_flat_state_saves_and_restores_bit_exactly(tmp_path):
    """kerasopt.save of a flat model and optimizer (views of shared buffers) restores into a
    fresh pair bit-exactly, and the next step is the one the saved pair would have taken."""
    model = torch.nn.ParameterList(make_vars(SHAPES, torch.float32, seed=50))
    opt = ko.optimizers.Adam(0.05, implementation="flat")
    grads = make_grads(SHAPES, 3, torch.float32, seed=51)
    for g in grads[:2]:
        opt.apply_gradients(zip(g, model))
    path = tmp_path / "ckpt.pt"
    ko.save(path, opt, model)
    fresh = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for s in SHAPES])
    restored = ko.optimizers.Adam(0.05, implementation="flat")
    ko.load(path, restored, fresh)
    for a, b in zip(fresh, model):
        assert torch.equal(a, b)
    opt.apply_gradients(zip(grads[2], model))
    restored.apply_gradients(zip(grads[2], fresh))
    for i, (a, b) in enumerate(zip(fresh, model)):
        assert torch.equal(a, b), f"variable {i}"
    for a, b in zip(restored.variables(), opt.variables()):
        assert torch.equal(a, b)


def test_half_precision_and_single_tensors_run_compiled():
    assert _engines.select("flat", True, 10, 1) is _engines.run_compiled
    assert _engines.select("flat", True, 10, 5) is _engines.run_flat
    assert _engines.select("flat", False, 10, 5) is _engines.run_per_tensor
    variables = [torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16)) for _ in range(5)]
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    grads = [torch.randn(4, dtype=torch.bfloat16) for _ in variables]
    ko.optimizers.Adam(0.1, implementation="flat").apply_gradients(zip(grads, variables))
    ko.optimizers.Adam(0.1, implementation="compiled").apply_gradients(zip(grads, twins))
    assert all(torch.equal(a, b) for a, b in zip(variables, twins))


def test_rehoming_keeps_gradient_hooks():
    """Hooks on a parameter's gradient accumulator (DDP's all-reduce hooks are such) and
    post-accumulate-grad hooks still fire after the parameter moved into the buffer
    (``Tensor.set_`` would have given it a new accumulator and silently orphaned them)."""
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    fired: list[str] = []
    accumulators = []  # (kept alive, as DDP keeps them: a parameter holds its node weakly)
    for p in params:
        accumulators.append(p.view_as(p).grad_fn.next_functions[0][0])
        accumulators[-1].register_hook(lambda *_: fired.append("node"))
        p.register_post_accumulate_grad_hook(lambda _: fired.append("post"))
    opt = ko.optim.SGD(params, lr=0.1, implementation="flat")
    for _ in range(2):
        fired.clear()
        sum(p.square().sum() for p in params).backward()
        assert fired.count("node") == fired.count("post") == 4
        opt.step()
        opt.zero_grad()
    assert len(_storages(params)) == 1


@pytest.mark.parametrize("front", ["keras", "optim"])
def test_large_tensors_with_the_callers_gradients_skip_the_copy(front, monkeypatch):
    """For large tensors, copying gradients that are not the buffer's views would cost more
    than it saves: the compiled engine runs on the re-homed tensors (same numbers), and
    kerasopt.optim's `.grad` still become views (with the gradients' values) for later steps."""
    monkeypatch.setattr(_engines, "FLAT_MAX_MEAN_NUMEL", 1)  # every tensor counts as large
    runs = {}
    for impl in ("flat", "compiled"):
        model, x = _model_and_data(seed=3)
        params = list(model.parameters())
        opt = (
            ko.optim.Adam(params, lr=0.01, implementation=impl)
            if front == "optim"
            else ko.optimizers.Adam(0.01, implementation=impl)
        )
        for _ in range(3):
            loss = model(x).square().mean()
            if front == "optim":
                opt.zero_grad(set_to_none=False)
                loss.backward()
                opt.step()
            else:
                opt.apply_gradients(zip(torch.autograd.grad(loss, params), params))
        runs[impl] = params
    for a, b in zip(runs["flat"], runs["compiled"]):
        assert torch.equal(a, b)
    assert len(_storages(runs["flat"])) == 1
    if front == "optim":
        assert len(_storages(p.grad for p in runs["flat"])) == 1


def test_loaded_state_reaches_a_flat_group_that_already_stepped():
    """``load_state_dict`` into flat optimizers that already laid out their buffers (both front
    ends): the loaded slots and weights are what the next steps use."""
    import copy

    def step(model, opt, x):
        opt.zero_grad(set_to_none=False)
        model(x).square().mean().backward()
        opt.step()

    reference, _ = _model_and_data(seed=7)
    x = torch.randn(8, 6)
    ref_opt = ko.optim.Adam(reference.parameters(), lr=0.01, implementation="flat")
    for _ in range(2):
        step(reference, ref_opt, x)
    saved_model = copy.deepcopy(reference.state_dict())
    saved_opt = copy.deepcopy(ref_opt.state_dict())
    for _ in range(2):
        step(reference, ref_opt, x)
    model, _ = _model_and_data(seed=8)
    opt = ko.optim.Adam(model.parameters(), lr=0.01, implementation="flat")
    step(model, opt, x)  # its own layout and state, then replaced
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    for _ in range(2):
        step(model, opt, x)
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)

    grads = make_grads(SHAPES, 3, torch.float32, seed=61)
    keras_vars = make_vars(SHAPES, torch.float32, seed=60)
    keras = ko.optimizers.Adam(0.1, implementation="flat")
    keras.apply_gradients(zip(grads[0], keras_vars))
    other_vars = [torch.nn.Parameter(v.detach().clone()) for v in keras_vars]
    other = ko.optimizers.Adam(0.1, implementation="flat")
    other.apply_gradients(zip(grads[1], other_vars))  # its own layout
    with torch.no_grad():
        for a, b in zip(other_vars, keras_vars):
            a.copy_(b)
    other.load_state_dict(keras.state_dict())
    keras.apply_gradients(zip(grads[2], keras_vars))
    other.apply_gradients(zip(grads[2], other_vars))
    for a, b in zip(keras_vars, other_vars):
        assert torch.equal(a, b)


def test_pickling_writes_each_window_of_flat_storage_once():
    """Plain pickle writes a view's whole storage once per view: a kerasopt.optim optimizer's
    state over 100 windows of one flat buffer pickled 200 buffers (80 MB for 800 KB of slots).
    Its state, and kerasopt.Variables, now pickle as copies of their own elements; the
    parameters stay torch's (a model pickled or copied with its optimizer keeps sharing them),
    and the unpickled optimizer trains on identically."""
    import copy
    import pickle

    torch.manual_seed(0)
    shapes = [(1000,)] * 100
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = ko.optim.Adam(params, lr=0.01, implementation="flat")
    grads = [[torch.randn(s) for s in shapes] for _ in range(4)]

    def step(optimizer, ps, gs):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        optimizer.step()

    for gs in grads[:2]:
        step(opt, params, gs)
    assert params[1].untyped_storage().nbytes() >= 100 * 1000 * 4  # windows of one buffer
    slots = 2 * 100 * 1000 * 4  # m and v
    state_bytes = len(pickle.dumps(opt)) - len(pickle.dumps(params))
    assert slots <= state_bytes < 1.2 * slots
    for twin_params, twin in [
        pickle.loads(pickle.dumps((params, opt))),
        copy.deepcopy((params, opt)),
    ]:
        assert all(p is q for p, q in zip(twin_params, twin.param_groups[0]["params"]))
        for gs in grads[2:]:
            step(twin, twin_params, gs)
        assert all(type(q) is torch.nn.Parameter and q.requires_grad for q in twin_params)
    for gs in grads[2:]:
        step(opt, params, gs)
    for p, q in zip(params, twin_params):
        assert torch.equal(p, q)
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], twin.state[q][key]), key

    keras = ko.optimizers.Adam(0.01, implementation="flat")
    variables = [ko.Variable(torch.randn(s), name=f"w{i}") for i, s in enumerate(shapes)]
    keras.apply_gradients(zip(grads[0], variables))
    assert variables[1].untyped_storage().nbytes() >= 100 * 1000 * 4
    blob = pickle.dumps(variables)
    assert len(blob) < 1.2 * 100 * 1000 * 4
    back = pickle.loads(blob)
    assert all(torch.equal(a, b) and a.name == b.name for a, b in zip(variables, back))
    assert all(isinstance(b, ko.Variable) for b in back)


def test_a_variable_in_shared_memory_pickles_its_storage_for_torch_multiprocessing():
    """``compact`` leaves shared memory alone: ``torch.multiprocessing`` (ForkingPickler) hands
    the storage itself to the other process, whose variable shares it (Hogwild training)."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # (registers torch's reductions)

    buffer = torch.zeros(10).share_memory_()
    v = ko.Variable(torch.zeros(5), name="w")
    v.data = buffer[:5]  # a window of a larger shared storage
    out = io.BytesIO()
    ForkingPickler(out).dump(v)
    other = pickle.loads(out.getvalue())
    other.data.add_(1.0)
    assert isinstance(other, ko.Variable) and other.name == "w"
    assert torch.equal(buffer, torch.tensor([1.0] * 5 + [0.0] * 5))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's peak-RSS reset"
)
def test_rehoming_holds_the_group_once_and_hands_back_what_it_frees():
    """The layout moves a group into its buffer one tensor at a time, freeing each old storage
    as it goes and handing freed memory back every ``RELEASE_BYTES`` (glibc keeps it resident
    otherwise): the peak above the group is a fraction of it, where a ``torch.cat`` of the group
    (the old layout) held it twice, and once laid out the process holds the group once."""
    from kerasopt import _copies

    # (freeing a 16 MB block raises glibc's mmap threshold, as a training process's frees do:
    # the tensors below then come from the heap, which keeps what is freed unless handed back)
    torch.empty(16 << 20, dtype=torch.uint8).fill_(1)
    _copies.release()
    tensors = [torch.full((640, 1024), float(i)) for i in range(48)]  # 2.6 MB each, 126 MB
    group = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from here
    buf = _copies.rehome(tensors, [t.numel() for t in tensors])
    peak, after = _status_mb("VmHWM") - before, _status_mb("VmRSS") - before
    assert all(torch.equal(t, torch.full((640, 1024), float(i))) for i, t in enumerate(tensors))
    assert {t.untyped_storage().data_ptr() for t in tensors} == {buf.data_ptr()}
    budget = _copies.RELEASE_BYTES / 2**20 + 16
    assert peak < budget < group, f"peak {peak:.0f} MB above the group's {group:.0f} MB"
    assert after < 16, f"{after:.0f} MB more resident after moving the group"


def test_optim_hands_back_the_gradients_its_views_replaced_once(monkeypatch):
    """The step that gives ``.grad`` the buffer's views still holds the gradients they replace
    (the caller's list); the next step hands their memory back (``release``), once: later steps
    do not call it again."""
    model, x = _model_and_data()
    opt = ko.optim.Adam(model.parameters(), lr=0.01, implementation="flat")
    released = []
    monkeypatch.setattr(_engines, "release", lambda: released.append(1))
    counts = []
    for _ in range(4):
        opt.zero_grad(set_to_none=False)
        model(x).square().mean().backward()
        opt.step()
        counts.append(len(released))
    assert counts == [0, 1, 1, 1]


def test_the_packed_engine_rehomes_slots_as_the_layout_does_under_inference_mode():
    """``auto`` on many small tensors (the packed engine) moves each slot list into one buffer
    with the layout's ``rehome``: the same slot objects, windows of one normal (not inference)
    buffer, even when the first step runs under inference mode; the numbers stay within a few
    ulp of the foreach engine's."""
    variables = [torch.nn.Parameter(torch.full((5,), float(i))) for i in range(70)]
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    packed = ko.optimizers.Adam(0.1)  # auto: >= 64 small tensors of a rule with slots
    eager = ko.optimizers.Adam(0.1, implementation="foreach")
    with torch.inference_mode():
        packed.apply_gradients([(torch.ones(5), v) for v in variables])
    eager.apply_gradients([(torch.ones(5), v) for v in twins])
    slots = [packed.get_slot(v, "m") for v in variables]
    assert len(_storages(slots)) == 1 and not any(s.is_inference() for s in slots)
    packed.apply_gradients([(torch.ones(5) * 2, v) for v in variables])
    eager.apply_gradients([(torch.ones(5) * 2, v) for v in twins])
    assert all(packed.get_slot(v, "m") is s for v, s in zip(variables, slots))
    assert len(_storages(packed.get_slot(v, "m") for v in variables)) == 1
    for v, t in zip(variables, twins):  # (compiled: within a few ulp of foreach)
        assert torch.allclose(v, t, rtol=4e-7, atol=0)


def test_release_is_glibcs_malloc_trim_on_linux_and_a_no_op_elsewhere(monkeypatch):
    from kerasopt import _copies

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert _copies._malloc_trim() is not None
    monkeypatch.setattr(_copies.sys, "platform", "darwin")
    assert _copies._malloc_trim() is None
    monkeypatch.setattr(_copies, "_TRIM", None)
    _copies.release()  # nothing to call: no error
