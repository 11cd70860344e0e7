"""Safety: a step or a load that raises changes nothing; state is never silently lost; misuse
raises an error naming the argument or variable (the safety issue's items 1, 2, 4, 6–10, 15–17).

"Nothing changed" is a byte comparison of every variable, slot, counter and loss scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.specs import OPTIMIZERS

SPECS = {spec.name: spec for spec in OPTIMIZERS}
NAMES = sorted(SPECS)


def _snapshot(opt, *variables):
    state = {k: v.detach().clone() for k, v in opt.state_dict().items()}
    return state, [v.detach().clone() for v in variables]


def _assert_unchanged(before, opt, *variables):
    state, values = before
    now = opt.state_dict()
    assert sorted(now) == sorted(state)
    for key, value in state.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key], value), key
    for v, saved in zip(variables, values):
        assert torch.equal(v.detach(), saved)


def _make(name, wrapper=None):
    inner = getattr(ko.optimizers, name)(**SPECS[name].configs[0])
    if wrapper == "loss_scale":
        return ko.optimizers.LossScaleOptimizer(inner)
    return inner


def _raise(_):
    raise RuntimeError("constraint failed")


# -- 1: a constraint that raises rolls the whole step back --------------------------------------
@pytest.mark.parametrize("wrapper", [None, "loss_scale"])
@pytest.mark.parametrize("name", NAMES)
def test_raising_constraint_changes_nothing(name, wrapper):
    a = ko.Variable(np.linspace(0.5, 1.5, 6).reshape(2, 3), name="a")
    b = ko.Variable(np.ones((2, 3)), name="b", constraint=_raise)
    opt = _make(name, wrapper)
    g = torch.full((2, 3), 0.5, dtype=torch.float64)
    opt.apply_gradients([(g, a)])
    before = _snapshot(opt, a, b)
    with pytest.raises(RuntimeError, match="constraint failed"):
        opt.apply_gradients([(g, a), (g, b)])
    _assert_unchanged(before, opt, a, b)
    b.constraint = None  # the optimizer is still usable
    opt.apply_gradients([(g, a), (g, b)])


def test_raising_constraint_rolls_back_every_multi_optimizer_group():
    a = ko.Variable(np.ones(3), name="a")
    b = ko.Variable(np.ones(3), name="b", constraint=_raise)
    m = ko.optimizers.OptimizerMap(ko.optimizers.Adam(0.1), {"b": ko.optimizers.SGD(0.5, 0.9)})
    opt = ko.optimizers.MultiOptimizer(m)
    g = torch.ones(3, dtype=torch.float64)
    b.constraint = None
    opt.apply_gradients([(g, a), (g, b)])
    b.constraint = _raise
    before = _snapshot(opt, a, b)
    with pytest.raises(RuntimeError, match="constraint failed"):
        opt.apply_gradients([(g, a), (g, b)])
    _assert_unchanged(before, opt, a, b)


def test_constraint_of_wrong_shape_is_refused():
    v = ko.Variable([1.0, 2.0], name="v", constraint=lambda x: x.sum())
    w = ko.Variable([3.0], name="w")
    opt = ko.optimizers.SGD(0.1, momentum=0.5)
    opt.apply_gradients([(torch.ones(1), w)])
    before = _snapshot(opt, v, w)
    with pytest.raises(ValueError, match=r"constraint of variable 'v' returned .*shape \(2,\)"):
        opt.apply_gradients([(torch.ones(1), w), (torch.ones(2), v)])
    _assert_unchanged(before, opt, v, w)


# -- 2: a variable whose shape changed under its slots -------------------------------------------
@pytest.mark.parametrize("implementation", ["per_tensor", "foreach", "compiled"])
@pytest.mark.parametrize("name", NAMES)
def test_variable_reshaped_after_slots_is_refused(name, implementation):
    p = torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    q = ko.Variable(np.ones((4,)), name="q")
    config = dict(SPECS[name].configs[0], implementation=implementation)
    opt = getattr(ko.optimizers, name)(**config)
    opt.apply_gradients([(torch.ones(4, dtype=torch.float64), q), (torch.ones_like(p), p)])
    before = _snapshot(opt, q)
    p.data = torch.ones(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"has shape \(6, 3\), but its slots .* \(5, 3\)"):
        opt.apply_gradients([(torch.ones(4, dtype=torch.float64), q), (torch.ones_like(p), p)])
    _assert_unchanged(before, opt, q)
    # new storage of the same shape keeps working
    p.data = torch.full((5, 3), 2.0, dtype=torch.float64)
    opt.apply_gradients([(torch.ones(4, dtype=torch.float64), q), (torch.ones(5, 3).double(), p)])
    assert torch.isfinite(p).all()


@pytest.mark.parametrize("implementation", ["per_tensor", "foreach", "compiled", "flat"])
@pytest.mark.parametrize("name", NAMES)
def test_variable_converted_after_slots_is_refused(name, implementation):
    """``model.float()`` / ``model.double()`` after the first step: the slots were made for the
    old dtype, so the step is refused (torch.optim fails inside its kernel) instead of mixing
    float32 moments into a float64 update."""
    p = torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    q = ko.Variable(np.ones((4,)), name="q")
    config = dict(SPECS[name].configs[0], implementation=implementation)
    opt = getattr(ko.optimizers, name)(**config)
    gq = torch.ones(4, dtype=torch.float64)
    opt.apply_gradients([(gq, q), (torch.ones_like(p), p)])
    opt.apply_gradients([(gq, q), (torch.ones_like(p), p)])  # (a steady step)
    before = _snapshot(opt, q)
    p.data = p.data.float()
    old = p.detach().clone()
    with pytest.raises(
        ValueError,
        match=r"Variable 'variable_1' has dtype torch\.float32, but its slots in optimizer "
        r"'\w+' were made for dtype torch\.float64 \(was the model converted",
    ):
        opt.apply_gradients([(gq, q), (torch.ones_like(p), p)])
    _assert_unchanged(before, opt, q)
    assert torch.equal(p.detach(), old)
    p.data = p.data.double()  # converted back, it steps again
    opt.apply_gradients([(gq, q), (torch.ones_like(p), p)])
    assert torch.isfinite(p).all()


def test_variable_moved_to_another_device_after_slots_is_refused():
    p = torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    opt = ko.optimizers.Adam(0.1)
    opt.apply_gradients([(torch.ones_like(p), p)])
    # (no second device here: the record says the slots were made on one)
    opt._store.record_of(p).device = torch.device("cuda", 0)
    before = _snapshot(opt, p)
    with pytest.raises(ValueError, match=r"has device cpu, but .* made for device cuda:0"):
        opt.apply_gradients([(torch.ones_like(p), p)])
    _assert_unchanged(before, opt, p)


@pytest.mark.parametrize("implementation", ["foreach", "flat"])
def test_model_converted_after_a_torch_style_step_is_refused(implementation):
    model = torch.nn.Linear(3, 2)
    opt = ko.optim.Adam(model.parameters(), lr=0.1, implementation=implementation)
    x = torch.randn(4, 3)
    model(x).sum().backward()
    opt.step()
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()}
    model.double()
    opt.zero_grad()
    model(x.double()).sum().backward()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"has dtype torch\.float64, but .* dtype torch\.float32"):
        opt.step()
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    for p, saved in state.items():
        assert all(torch.equal(opt.state[p][n], t) for n, t in saved.items())


# -- 4: gradients that alias variables are read before any write ---------------------------------
@pytest.mark.parametrize("implementation", ["per_tensor", "foreach"])
@pytest.mark.parametrize("name", NAMES)
def test_aliasing_gradients_give_one_answer(name, implementation):
    def run(alias):
        a = ko.Variable(np.linspace(0.5, 1.5, 6).reshape(2, 3), name="a")
        b = ko.Variable(np.linspace(-1.0, 1.0, 6).reshape(2, 3), name="b")
        opt = getattr(ko.optimizers, name)(
            **dict(SPECS[name].configs[0], implementation=implementation)
        )
        for _ in range(2):
            if alias:
                opt.apply_gradients([(b, a), (a, b)])
            else:
                opt.apply_gradients([(b.detach().clone(), a), (a.detach().clone(), b)])
        return a.detach(), b.detach()

    for got, expected in zip(run(True), run(False)):
        assert torch.equal(got, expected)


# -- 7, 8: state keys that do not match are not silently dropped ---------------------------------
def _trained(model_api: bool):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)).double()
    opt = ko.optimizers.Adam(0.01)
    x = torch.randn(4, 3, dtype=torch.float64)
    if model_api:
        opt.minimize(lambda: model(x).square().sum(), model)
    else:
        model(x).square().sum().backward()
        opt.apply_gradients([(p.grad, p) for p in model.parameters()])
    return model, opt


def test_resume_with_differently_named_variables_raises_instead_of_zeroing_slots():
    _model, opt = _trained(model_api=True)  # keys slot/0.weight/m ...
    sd = opt.state_dict()
    fresh_model, fresh = _trained(model_api=False)
    fresh = ko.optimizers.Adam(0.01)
    fresh.load_state_dict(sd)
    for p in fresh_model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in fresh_model.parameters()]
    with pytest.raises(ValueError, match=r"variables \[.*'0.weight'.*named differently"):
        fresh.apply_gradients([(p.grad, p) for p in fresh_model.parameters()])
    assert int(fresh.iterations) == int(sd["iterations"]) and not fresh._store.by_id
    for p, saved in zip(fresh_model.parameters(), before):
        assert torch.equal(p, saved)
    fresh.build(fresh_model)  # the module's names, as at save time: the state is adopted
    assert torch.equal(fresh.get_slot(fresh_model[0].weight, "m"), sd["slot/0.weight/m"])


def test_missing_slot_keys_raise_unless_partial_load_is_asked_for():
    _model, opt = _trained(model_api=True)
    sd = opt.state_dict()
    del sd["slot/1.bias/v"]
    before = _snapshot(opt)
    other_model, other = _trained(model_api=True)
    other_before = _snapshot(other)
    with pytest.raises(ValueError, match=r"lacks 1 slot key\(s\): \['slot/1.bias/v'\]"):
        other.load_state_dict(sd)
    _assert_unchanged(other_before, other)
    other.load_state_dict(sd, strict=False)
    assert torch.equal(other.get_slot(other_model[1].bias, "v"), other_before[0]["slot/1.bias/v"])
    assert torch.equal(other.get_slot(other_model[0].weight, "m"), sd["slot/0.weight/m"])
    _assert_unchanged(before, opt)


# -- 9: loaded values pass the constructor's validation -----------------------------------------
@pytest.mark.parametrize(
    "name,key,value,match",
    [
        ("Adam", "hyper/learning_rate", -0.5, "learning_rate >= 0"),
        ("SGD", "hyper/momentum", 7.0, "`momentum` must be between"),
        ("RMSprop", "hyper/momentum", 2.0, "`momentum` must be between"),
    ],
)
def test_loaded_hyperparameters_are_validated(name, key, value, match):
    v = ko.Variable([1.0], name="v")
    config = {"momentum": 0.5} if name != "Adam" else {}
    opt = getattr(ko.optimizers, name)(**config)
    opt.apply_gradients([(torch.ones(1), v)])
    sd = opt.state_dict()
    sd[key] = torch.tensor(value, dtype=torch.float64)
    before = _snapshot(opt, v)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    _assert_unchanged(before, opt, v)


def test_multi_optimizer_refuses_negative_iterations():
    a = ko.Variable([1.0], name="a")
    opt = ko.optimizers.MultiOptimizer(ko.optimizers.OptimizerMap(ko.optimizers.SGD(0.1), {}))
    opt.apply_gradients([(torch.ones(1), a)])
    sd = opt.state_dict()
    sd["iterations"] = torch.tensor(-3)
    before = _snapshot(opt, a)
    with pytest.raises(ValueError, match="'iterations' is negative"):
        opt.load_state_dict(sd)
    _assert_unchanged(before, opt, a)


# -- 10: a tensor that passes the checks but cannot be copied -----------------------------------
def test_meta_tensor_in_state_dict_changes_nothing():
    _model, opt = _trained(model_api=True)
    sd = opt.state_dict()
    sd["slot/1.bias/m"] = torch.empty_like(sd["slot/1.bias/m"], device="meta")
    sd["iterations"] = torch.tensor(99)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=r"'slot/1.bias/m' is a meta tensor"):
        opt.load_state_dict(sd)
    _assert_unchanged(before, opt)


# -- 15, 16, 17: misuse ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_torch_style_construction_is_refused(name):
    model = torch.nn.Linear(2, 1)
    cls = getattr(ko.optimizers, name)
    with pytest.raises(TypeError, match=rf"kerasopt.optim.{name}\(model.parameters\(\), lr="):
        cls(model.parameters(), lr=1e-3)
    with pytest.raises(TypeError, match="got model parameters"):
        cls([{"params": list(model.parameters())}])
    with pytest.raises(TypeError, match="got model parameters"):
        cls(model)


def test_swapped_pair_is_refused():
    p = torch.nn.Parameter(torch.ones(3))
    g = torch.full((3,), 0.5)
    opt = ko.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="looks swapped"):
        opt.apply_gradients([(p, g)])
    assert torch.equal(g, torch.full((3,), 0.5)) and int(opt.iterations) == 0


def test_sparse_coo_of_another_dense_shape_is_refused():
    v = ko.Variable(np.ones((5, 3), np.float32), name="emb")
    g = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, 3), (10, 3))
    opt = ko.optimizers.Adagrad(0.1)
    with pytest.raises(ValueError, match=r"'emb' has dense shape \(10, 3\), expected \(5, 3\)"):
        opt.apply_gradients([(g, v)])
    assert torch.equal(v, torch.ones(5, 3)) and not opt._store.by_id


def test_object_array_gradient_is_refused():
    v = ko.Variable([1.0, 2.0], name="v")
    opt = ko.optimizers.SGD(0.1)
    with pytest.raises(TypeError, match="'v' is a NumPy array of dtype object"):
        opt.apply_gradients([(np.array([1.0, None], dtype=object), v)])
    assert v.tolist() == [1.0, 2.0]


def test_multi_optimizer_apply_gradients_of_a_non_iterable():
    opt = ko.optimizers.MultiOptimizer(ko.optimizers.OptimizerMap(ko.optimizers.SGD(0.1), {}))
    with pytest.raises(TypeError, match="must be an iterable of \\(gradient, variable\\) pairs"):
        opt.apply_gradients(5)


@pytest.mark.parametrize("key", ["clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor"])
@pytest.mark.parametrize("value", ["", "0.5", True, [1.0]])
def test_feature_numbers_are_checked_at_construction(key, value):
    # before: Adam(clipnorm="") was accepted and the first step raised a raw torch TypeError
    with pytest.raises(TypeError, match=rf"`{key}` must be a number or None"):
        ko.optimizers.Adam(**{key: value})


def test_set_weights_with_an_unreadable_tensor_changes_nothing():
    v = ko.Variable([1.0], name="v")
    opt = ko.optimizers.Adam()
    opt.apply_gradients([(torch.ones(1), v)])
    before = _snapshot(opt, v)
    bad = [torch.tensor(5), torch.ones(1), torch.empty(1, device="meta")]
    with pytest.raises(ValueError, match="Optimizer weight 2 of optimizer Adam cannot be read"):
        opt.set_weights(bad)
    _assert_unchanged(before, opt, v)


def test_failed_first_multi_optimizer_call_leaves_it_unbuilt():
    a, b = ko.Variable([1.0], name="a"), ko.Variable([1.0, 2.0], name="b")
    m = ko.optimizers.OptimizerMap(ko.optimizers.Adam(0.1), {"b": ko.optimizers.SGD(0.5, 0.9)})
    opt = ko.optimizers.MultiOptimizer(m)
    fresh, count = _snapshot(opt, a, b), len(opt.variables())
    with pytest.raises(ValueError, match=r"'b' has shape \(3,\), expected \(2,\)"):
        opt.apply_gradients([(torch.ones(1), a), (torch.ones(3), b)])
    assert not opt.built and len(opt.variables()) == count
    _assert_unchanged(fresh, opt, a, b)
    opt.apply_gradients([(torch.ones(1), a), (torch.ones(2), b)])  # builds now
    assert opt.built and float(b[0]) == 0.5


# -- what commit copies, and when --------------------------------------------------------------
def _count_snapshots(monkeypatch):
    from kerasopt import step

    calls = []
    original = step.snapshot

    def counting(opt, plan):
        calls.append(opt)
        return original(opt, plan)

    monkeypatch.setattr(step, "snapshot", counting)
    return calls


@pytest.mark.parametrize("front", ["keras", "loss_scale", "multi", "optim"])
def test_a_step_without_user_code_in_commit_copies_nothing(front, monkeypatch):
    """The rollback snapshot costs a copy of every variable and slot: it is taken only when the
    commit runs user code (a constraint, a TF 2.x hook) or loaded state is pending."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 0.5)
    if front == "optim":
        opt = ko.optim.Adam([p], lr=0.1)
        step = opt.step
    else:
        opt = ko.optimizers.Adam(0.1)
        if front == "loss_scale":
            opt = ko.optimizers.LossScaleOptimizer(opt)
        elif front == "multi":
            opt = ko.optimizers.MultiOptimizer(lambda var, inner=opt: inner)

        def step():
            opt.apply_gradients([(p.grad, p)])

    step()
    calls = _count_snapshots(monkeypatch)
    step()
    assert calls == []
    p.constraint = lambda v: v.clamp(max=10.0)  # now the commit runs user code
    step()
    assert len(calls) == 1


class FailingHook(ko.Optimizer):
    """A TF 2.x subclass whose hook raises on the second variable of a step."""

    def __init__(self):
        super().__init__("FailingHook")
        self._set_hyper("learning_rate", 0.5)

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "count")

    def _resource_apply_dense(self, grad, var, apply_state=None):
        if var.numel() == 2:
            raise RuntimeError("hook failed")
        self.get_slot(var, "count").add_(1.0)
        var.sub_(grad * self._get_hyper("learning_rate", var.dtype))


def test_a_tf2_hook_raising_mid_step_leaves_everything_as_it_was():
    a, b = ko.Variable([1.0], name="a"), ko.Variable([1.0, 1.0], name="b")
    opt = FailingHook()
    opt.apply_gradients([(torch.ones(1), a)])
    before = opt.state_dict()
    with pytest.raises(RuntimeError, match="hook failed"):
        opt.apply_gradients([(torch.ones(1), a), (torch.ones(2), b)])
    assert a.item() == 0.5 and int(opt.iterations) == 1
    after = opt.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_loaded_state_survives_a_refused_first_step():
    """State loaded before the first step waits for its variables; a first step refused after
    their state was built (here: by a later param group's gradient) must leave it waiting, so the
    next step still starts from it."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    trained = ko.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(2)
    trained.step()
    saved = trained.keras_optimizers[0].state_dict()

    def fresh(*extra):
        x = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        groups = [{"params": [x]}] + [{"params": [p]} for p in extra]
        opt = ko.optim.Adam(groups, lr=0.1)
        opt.keras_optimizers[0].load_state_dict(saved)
        x.grad = torch.full((2,), 0.5)
        return x, opt

    bad = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    x, opt = fresh(bad)
    bad.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        opt.step()
    bad.grad = None
    opt.step()
    twin_x, twin = fresh()
    twin.step()  # the same step without the refused one before it
    inner, twin_inner = opt.keras_optimizers[0], twin.keras_optimizers[0]
    assert int(inner.iterations) == int(twin_inner.iterations) == 2
    assert torch.equal(x.detach(), twin_x.detach())
    for slot in ("m", "v"):
        assert torch.equal(inner.get_slot(x, slot), twin_inner.get_slot(twin_x, slot)), slot
