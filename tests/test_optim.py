"""kerasopt.optim: every optimizer behind the torch.optim protocol, bit-identical to the Keras API.

The table (tests/specs.py) drives the bit-identity tests: for every optimizer, configuration and
eager engine, ``backward(); step()`` and ``apply_gradients`` on the same gradients must give the
same weights, slots and step counter, bit for bit, dense and sparse. The rest covers the protocol:
param groups, hyperparameter changes, state dicts (torch's format, Keras's checks), hooks and
errors. Integrations with the ecosystem are in tests/test_optim_integrations.py.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import kerasopt as ko
from tests.specs import OPTIMIZERS

ENGINES = ["per_tensor", "foreach"]
DENSE_SHAPES: list[tuple[int, ...]] = [(), (3,), (4, 5)]
EMBEDDING = (6, 3)  # rows of an nn.Embedding(sparse=True) table
STEPS = 3

# Keras config keys that are named differently in kerasopt.optim's constructors.
TORCH_KEYS = {"learning_rate": "lr"}


def torch_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {TORCH_KEYS.get(k, k): v for k, v in config.items()}


def cases() -> tuple[list[Any], list[str]]:
    out, ids = [], []
    for spec in OPTIMIZERS:
        for i, config in enumerate(spec.configs):
            out.append((spec.name, config))
            ids.append(f"{spec.name}-{i}")
    return out, ids


CASES, CASE_IDS = cases()
FIRST = [(s.name, s.configs[0]) for s in OPTIMIZERS]
FIRST_IDS = [s.name for s in OPTIMIZERS]


def make_params(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.rand(s, generator=g) * 2 - 1) for s in shapes]


def twin(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def dense_grads(shapes: list[tuple[int, ...]], steps: int, seed: int = 1) -> list[list[Any]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.rand(s, generator=g) * 2 - 1 for s in shapes] for _ in range(steps)]


def embedding_grads(steps: int, seed: int = 2) -> list[torch.Tensor]:
    """Sparse COO gradients from a real nn.Embedding(sparse=True), duplicate rows included."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.Embedding(*EMBEDDING, sparse=True)
    out = []
    for _ in range(steps):
        emb.zero_grad()
        ids = torch.tensor([1, 4, 1, 0])
        weights = torch.rand(4, EMBEDDING[1], generator=g)
        (emb(ids) * weights).sum().backward()
        assert emb.weight.grad is not None and emb.weight.grad.layout == torch.sparse_coo
        out.append(emb.weight.grad.clone())
    return out


def keras_and_torch(name: str, config: dict[str, Any], params: list[Any], **extra: Any):
    keras = getattr(ko.optimizers, name)(**config, **extra)
    mirror = twin(params)
    opt = getattr(ko.optim, name)(mirror, **torch_kwargs(config), **extra)
    return keras, mirror, opt


def assert_same_state(keras: Any, keras_vars: list[Any], opt: Any, params: list[Any]) -> None:
    """Weights, every slot (by TF name) and the step counter, bit for bit."""
    raw_step = keras.variables()[0]
    for i, (kv, p) in enumerate(zip(keras_vars, params)):
        assert torch.equal(kv, p), f"variable {i} differs"
        state = opt.state[p]
        assert int(state["step"]) == int(raw_step)
        expected = set()
        for name in (*keras.get_slot_names(), "average", "gradient_accumulator"):
            try:
                slot = keras.get_slot(kv, name)
            except KeyError:
                continue
            expected.add(name)
            assert torch.equal(state[name], slot), f"slot {name!r} of variable {i} differs"
        weights = {k for k in state if k != "step" and k not in expected}
        assert weights <= {"momentum_cache"}, f"unexpected state keys {weights}"
        for w in weights:
            assert torch.equal(state[w], keras.variables()[1])


def run_steps(keras, keras_vars, opt, params, grads) -> None:
    for step_grads in grads:
        keras.apply_gradients(zip(step_grads, keras_vars))
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        assert_same_state(keras, keras_vars, opt, params)


# ----------------------------------------------------------------------------------------------
# one rule, two front ends: bit-identical
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "config"), CASES, ids=CASE_IDS)
def test_step_is_apply_gradients_dense_and_sparse(name, config, engine):
    shapes = [*DENSE_SHAPES, EMBEDDING]
    keras_vars = make_params(shapes)
    keras, params, opt = keras_and_torch(name, config, keras_vars, implementation=engine)
    grads = dense_grads(DENSE_SHAPES, STEPS)
    for step_grads, sparse in zip(grads, embedding_grads(STEPS)):
        step_grads.append(sparse)
    run_steps(keras, keras_vars, opt, params, grads)


@pytest.mark.parametrize(("name", "config"), FIRST, ids=FIRST_IDS)
def test_float64_and_default_engine(name, config):
    keras_vars = [p.detach().double().requires_grad_() for p in make_params([(3,), (2, 4)])]
    keras, params, opt = keras_and_torch(name, config, keras_vars)
    grads = [[g.double() for g in step] for step in dense_grads([(3,), (2, 4)], STEPS)]
    run_steps(keras, keras_vars, opt, params, grads)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_compiled_engine(name):
    config = {"learning_rate": 0.05, **({"momentum": 0.9} if name == "SGD" else {})}
    keras_vars = make_params([(5,), (3, 4)])
    keras, params, opt = keras_and_torch(name, config, keras_vars, jit_compile=True)
    run_steps(keras, keras_vars, opt, params, dense_grads([(5,), (3, 4)], 2))


def test_backward_loop_with_real_embedding_and_linear():
    """The torch loop itself (forward, backward, step) on a model with a sparse embedding."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 1))
    keras_model = copy.deepcopy(model)
    opt = ko.optim.Adagrad(model.parameters(), lr=0.1)
    keras = ko.optimizers.Adagrad(0.1)
    ids, y = torch.tensor([[1, 2, 2], [7, 1, 0]]), torch.tensor([[[1.0]], [[0.0]]]).expand(2, 3, 1)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(ids), y).backward()
        opt.step()
        keras_model.zero_grad()
        torch.nn.functional.mse_loss(keras_model(ids), y).backward()
        variables = list(keras_model.parameters())
        keras.apply_gradients([(v.grad, v) for v in variables])
    assert model[0].weight.grad.layout == torch.sparse_coo
    assert_same_state(keras, list(keras_model.parameters()), opt, list(model.parameters()))


def test_loop_written_for_torch_adam_runs_unchanged():
    def train(opt_cls, model):
        torch.manual_seed(1)
        opt = opt_cls(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        for _ in range(5):
            x = torch.randn(8, 3)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        return opt

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    train(torch.optim.Adam, theirs)  # the loop, as written for torch.optim.Adam
    opt = train(ko.optim.Adam, ours)
    # ... and with kerasopt.optim.Adam it gives the Keras API's numbers
    keras_model = copy.deepcopy(model)
    keras = ko.optimizers.Adam(1e-2)
    torch.manual_seed(1)
    probe = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([torch.zeros(1)], 1e-2), 5)
    lrs = []
    for _ in range(5):
        lrs.append(probe.optimizer.param_groups[0]["lr"])
        probe.optimizer.step()
        probe.step()
    for lr in lrs:
        x = torch.randn(8, 3)
        keras_model.zero_grad()
        (keras_model(x) - x.sum(1, keepdim=True)).pow(2).mean().backward()
        keras.learning_rate = lr
        keras.apply_gradients([(p.grad, p) for p in keras_model.parameters()])
    assert_same_state(keras, list(keras_model.parameters()), opt, list(ours.parameters()))
    assert not torch.equal(ours.weight, theirs.weight)  # TF's Adam is not torch's


def test_every_keras_optimizer_has_a_torch_protocol_twin():
    skip = {ko.optimizers.Optimizer, ko.optimizers.LossScaleOptimizer, ko.optimizers.MultiOptimizer}
    for name in ko.optimizers.__all__:
        cls = getattr(ko.optimizers, name)
        if isinstance(cls, type) and issubclass(cls, ko.optimizers.Optimizer) and cls not in skip:
            twin_cls = getattr(ko.optim, name)
            assert issubclass(twin_cls, torch.optim.Optimizer)
            assert twin_cls._spec.keras is cls
    assert {s.name for s in OPTIMIZERS} <= set(ko.optim.__all__)


# ----------------------------------------------------------------------------------------------
# construction and param groups
def test_keras_names_defaults_and_torch_aliases():
    w = torch.nn.Parameter(torch.ones(2))
    group = ko.optim.Adam([w]).param_groups[0]
    assert (group["lr"], group["beta_1"], group["betas"], group["epsilon"]) == (
        0.001,
        0.9,
        (0.9, 0.999),
        1e-7,
    )
    assert ko.optim.Adadelta([w]).param_groups[0]["lr"] == 0.001
    assert ko.optim.Adagrad([w]).param_groups[0]["initial_accumulator_value"] == 0.1
    assert ko.optim.AdamW([w]).param_groups[0]["weight_decay"] == 0.004
    assert ko.optim.SGD([w], 0.5).param_groups[0]["lr"] == 0.5
    assert ko.optim.SGD([w], learning_rate=0.2).param_groups[0]["lr"] == 0.2
    g = ko.optim.Adam([w], betas=(0.5, 0.6)).param_groups[0]
    assert (g["beta_1"], g["beta_2"], g["betas"]) == (0.5, 0.6, (0.5, 0.6))
    g = ko.optim.Adam([w], beta_2=0.7).param_groups[0]
    assert g["betas"] == (0.9, 0.7)
    g = ko.optim.Adam([{"params": [w], "learning_rate": 0.3, "betas": (0.1, 0.2)}]).param_groups[0]
    assert (g["lr"], g["beta_1"], "learning_rate" in g) == (0.3, 0.1, False)
    assert "betas" not in ko.optim.Adagrad([w]).param_groups[0]
    assert ko.optim.SGD([w]).param_groups[0]["momentum"] == 0.0


def test_constructor_errors_name_the_argument():
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match="epsilon"):
        ko.optim.Adam([w], eps=1e-8)
    with pytest.raises(TypeError, match="rho"):
        ko.optim.RMSprop([w], alpha=0.99)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nesterov'"):
        ko.optim.Adam([w], nesterov=True)
    with pytest.raises(TypeError, match="not both"):
        ko.optim.Adam([w], 0.1, learning_rate=0.2)
    with pytest.raises(ValueError, match="learning_rate"):
        ko.optim.Adam([w], lr=-1.0)
    with pytest.raises(ValueError, match="both `betas` and `beta_1`"):
        ko.optim.Adam([w], betas=(0.5, 0.6), beta_1=0.7)
    with pytest.raises(TypeError, match="abstract"):
        ko.optim.KerasOptimizer([w])
    ko.optim.Adam([w], foreach=None, maximize=False)  # falsy torch flags are harmless
    opt = ko.optim.SGD([w])
    with pytest.raises(ValueError, match=r"param_groups\[1\].*momentum"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "momentum": 2.0})
    with pytest.raises(TypeError, match="epsilon"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "eps": 1e-8})
    assert len(opt.param_groups) == 1  # a refused group is not added


def test_groups_are_separate_keras_optimizers():
    shapes = [(3,), (2, 2), (4,)]
    params = make_params(shapes)
    mirrors = twin(params)
    opt = ko.optim.AdamW(
        [
            {"params": mirrors[:2], "lr": 0.02, "weight_decay": 0.1, "betas": (0.8, 0.99)},
            {"params": mirrors[2:], "weight_decay": 0.0},
        ],
        lr=0.01,
    )
    k1 = ko.optimizers.AdamW(0.02, weight_decay=0.1, beta_1=0.8, beta_2=0.99)
    k2 = ko.optimizers.AdamW(0.01, weight_decay=0.0)
    for step_grads in dense_grads(shapes, STEPS):
        k1.apply_gradients(zip(step_grads[:2], params[:2]))
        k2.apply_gradients(zip(step_grads[2:], params[2:]))
        for p, g in zip(mirrors, step_grads):
            p.grad = g.clone()
        opt.step()
    assert_same_state(k1, params[:2], opt, mirrors[:2])
    assert_same_state(k2, params[2:], opt, mirrors[2:])
    assert opt.keras_optimizers[0].learning_rate.item() == pytest.approx(0.02)


def test_add_param_group_later_and_params_without_grad():
    a, b, c = make_params([(3,), (2,), (4,)])
    ka, kb = twin([a, b])
    opt = ko.optim.SGD([a, c], lr=0.1, momentum=0.9)
    keras_1, keras_2 = ko.optimizers.SGD(0.1, momentum=0.9), ko.optimizers.SGD(0.3, momentum=0.5)
    for t, (ga, gb) in enumerate(dense_grads([(3,), (2,)], 4)):
        if t == 2:
            opt.add_param_group({"params": [b], "lr": 0.3, "momentum": 0.5})
        opt.zero_grad()
        a.grad = ga.clone()
        keras_1.apply_gradients([(ga, ka)])
        if t >= 2:
            b.grad = gb.clone()
            keras_2.apply_gradients([(gb, kb)])
        opt.step()
    assert c not in opt.state  # never had a gradient: no state, as in torch.optim
    assert_same_state(keras_1, [ka], opt, [a])
    assert_same_state(keras_2, [kb], opt, [b])


def test_group_changes_take_effect_next_step():
    """Hyperparameters (Hyper and Param) are set live; other keys rebuild, keeping the state."""
    shapes = [(3,), (2, 2)]
    params = make_params(shapes)
    mirrors = twin(params)
    opt = ko.optim.AdamW(mirrors, lr=0.01)
    keras = ko.optimizers.AdamW(0.01)
    changes = [
        {},
        {"lr": 0.05},
        {"beta_1": 0.5},  # a Param in AdamW
        {"betas": (0.7, 0.95), "epsilon": 1e-3},
        {"clipnorm": 0.1},  # a base-class feature: the inner optimizer is rebuilt
    ]
    for change, step_grads in zip(changes, dense_grads(shapes, len(changes))):
        opt.param_groups[0].update(change)
        for key, value in change.items():
            if key == "betas":
                keras.beta_1, keras.beta_2 = value
            else:
                setattr(keras, "learning_rate" if key == "lr" else key, value)
        keras.apply_gradients(zip(step_grads, params))
        for p, g in zip(mirrors, step_grads):
            p.grad = g.clone()
        opt.step()
        assert_same_state(keras, params, opt, mirrors)
    assert opt.param_groups[0]["beta_1"] == 0.7


def test_weight_decay_change_takes_effect():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ko.optim.SGD([w], lr=0.1, weight_decay=0.5)
    zero = torch.zeros(2)
    expected = w.detach().clone()
    for wd in (0.5, 0.0, 0.25):
        opt.param_groups[0]["weight_decay"] = wd
        w.grad = zero.clone()
        opt.step()
        decay = torch.tensor(wd, dtype=torch.float32) * torch.tensor(0.1, dtype=torch.float32)
        expected = expected - expected * decay if wd else expected
        assert torch.allclose(w, expected, rtol=1e-6, atol=0), wd
    assert int(opt.state[w]["step"]) == 3


def test_changes_that_would_change_the_slots_are_refused():
    w = torch.nn.Parameter(torch.ones(2))
    opt = ko.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[w].items()}
    for key, value in [("amsgrad", True), ("use_ema", True)]:
        opt.param_groups[0][key] = value
        with pytest.raises(ValueError, match=key):
            opt.step()
        opt.param_groups[0][key] = False
    for k, v in opt.state[w].items():
        assert torch.equal(v, before[k])
    opt.step()  # restored: steps again


def test_construction_time_choices_follow_the_values_at_the_first_step():
    """TF picks SGD's and RMSprop's momentum path at construction: here, at the first step."""
    w = torch.nn.Parameter(torch.ones(2))
    sgd = ko.optim.SGD([w], lr=0.1)  # momentum 0 ...
    sgd.param_groups[0]["momentum"] = 0.9  # ... until a scheduler sets it, before any step
    w.grad = torch.ones(2)
    sgd.step()
    assert sorted(sgd.state[w]) == ["momentum", "step"]
    # once the state exists, the path is fixed, as in TF (the Keras API does the same)
    v, kv = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    plain, keras = ko.optim.SGD([v], lr=0.1), ko.optimizers.SGD(0.1)
    for momentum in (0.0, 0.9, 0.9):
        plain.param_groups[0]["momentum"] = momentum
        keras.momentum = momentum
        v.grad = torch.ones(2)
        plain.step()
        keras.apply_gradients([(torch.ones(2), kv)])
    assert_same_state(keras, [kv], plain, [v])


def test_state_holds_the_inner_optimizers_tensors():
    params = make_params([(3,), (2,)])
    opt = ko.optim.Nadam(params, lr=0.1)
    assert len(opt.state) == 0  # lazily built, as torch.optim
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    inner = opt.keras_optimizers[0]
    for p in params:
        assert opt.state[p]["m"] is inner.get_slot(p, "m")
        assert opt.state[p]["v"] is inner.get_slot(p, "v")
        assert opt.state[p]["step"] is inner.variables()[0]
        assert opt.state[p]["step"].dtype == torch.int64
    assert opt.state[params[0]]["momentum_cache"] is opt.state[params[1]]["momentum_cache"]


def test_hooks_closure_and_zero_grad():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = ko.optim.Adam([w], lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd-post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    global_handle = register_optimizer_step_post_hook(lambda o, a, k: calls.append("global-post"))

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    try:
        with torch.no_grad():
            loss = opt.step(closure)
    finally:
        global_handle.remove()
    assert float(loss.detach()) == 5.0
    opt.load_state_dict(opt.state_dict())
    assert calls == ["pre", "post", "global-post", "sd-pre", "sd-post", "load-pre", "load-post"]
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and not w.grad.any()
    opt.zero_grad()
    assert w.grad is None
    opt.step()  # no gradients: nothing to do
    assert int(opt.state[w]["step"]) == 1


def test_state_assigned_from_outside_is_adopted_at_the_next_step():
    """What ZeroRedundancyOptimizer's load and Lightning's device moves do: state[p] = {...}."""
    (w,) = make_params([(3,)])
    (kw,) = twin([w])
    opt = ko.optim.Adam([w], lr=0.1)
    keras = ko.optimizers.Adam(0.1)
    keras.build([kw])
    m, v = torch.full((3,), 0.5), torch.full((3,), 2.0)
    keras.get_slot(kw, "m").copy_(m)
    keras.get_slot(kw, "v").copy_(v)
    keras.iterations = 7
    opt.state[w] = {"step": torch.tensor(7), "m": m.clone(), "v": v.clone()}
    grad = torch.tensor([0.1, -0.2, 0.3])
    keras.apply_gradients([(grad, kw)])
    w.grad = grad.clone()
    opt.step()
    assert_same_state(keras, [kw], opt, [w])
    # a value that does not fit is refused at the step, before anything moves
    opt.state[w]["m"] = torch.zeros(4)
    before = w.detach().clone()
    with pytest.raises(ValueError, match=r"'m' has shape \(4,\), expected \(3,\)"):
        opt.step()
    assert torch.equal(w, before)


def test_deepcopy_and_pickle_keep_training_identically():
    params = make_params([(3,), (2, 2)])
    opt = ko.optim.RMSprop(params, lr=0.01, momentum=0.5, centered=True)
    grads = dense_grads([(3,), (2, 2)], 4)
    for step_grads in grads[:2]:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    opt2 = copy.deepcopy(opt)
    params2 = [p for g in opt2.param_groups for p in g["params"]]
    for step_grads in grads[2:]:
        for ps in (params, params2):
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
        opt.step()
        opt2.step()
    for p, p2 in zip(params, params2):
        assert torch.equal(p, p2)
        for k in opt.state[p]:
            assert torch.equal(opt.state[p][k], opt2.state[p2][k])


# ----------------------------------------------------------------------------------------------
# state dicts
STATE_CASES = [
    *FIRST,
    ("Adam", {"learning_rate": 0.01, "amsgrad": True, "use_ema": True}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "gradient_accumulation_steps": 2}),
]
STATE_IDS = [*FIRST_IDS, "Adam-amsgrad-ema", "SGD-accumulation"]


def train(opt, params, grads):
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize(("name", "config"), STATE_CASES, ids=STATE_IDS)
def test_state_dict_round_trip_resumes_bit_exactly(name, config):
    shapes = [(3,), (2, 4), EMBEDDING]
    params = make_params(shapes)
    opt = getattr(ko.optim, name)(params, **torch_kwargs(config))
    grads = dense_grads(shapes[:2], 5)
    for step_grads, sparse in zip(grads, embedding_grads(5)):
        step_grads.append(sparse)
    train(opt, params, grads[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved) == {"state", "param_groups"} and sorted(saved["state"]) == [0, 1, 2]
    assert all(s["step"].dtype == torch.int64 for s in saved["state"].values())

    resumed = twin(params)
    opt2 = getattr(ko.optim, name)(resumed, lr=123.0)  # hyperparameters come from the state dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    train(opt, params, grads[3:])
    train(opt2, resumed, grads[3:])
    for p, q in zip(params, resumed):
        assert torch.equal(p, q)
        assert sorted(opt.state[p]) == sorted(opt2.state[q])
        for k in opt.state[p]:
            assert torch.equal(opt.state[p][k], opt2.state[q][k]), k
    inner = opt2.keras_optimizers[0]
    assert opt2.state[resumed[0]]["step"] is inner.variables()[0]  # still the live tensors


def snapshot(opt):
    state = {id(p): {k: (v, v.clone()) for k, v in s.items()} for p, s in opt.state.items()}
    return state, copy.deepcopy(
        [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    )


def assert_unchanged(opt, before):
    state, groups = before
    assert (
        copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
        == groups
    )
    assert {id(p) for p in opt.state} == set(state)
    for p, s in opt.state.items():
        assert set(s) == set(state[id(p)])
        for k, v in s.items():
            obj, value = state[id(p)][k]
            assert v is obj and torch.equal(v, value)


def corrupt(kind):
    def edit(sd):
        s0 = sd["state"][0]
        if kind == "slot name":
            s0["exp_avg"] = s0.pop("m")
        elif kind == "shape":
            s0["m"] = torch.zeros(5)
        elif kind == "dtype":
            s0["v"] = s0["v"].double()
        elif kind == "sparse":
            s0["v"] = s0["v"].to_sparse()
        elif kind == "no step":
            del s0["step"]
        elif kind == "steps differ":
            sd["state"][1]["step"] = torch.tensor(99)
        elif kind == "bad step":
            s0["step"] = torch.tensor(-1)
        elif kind == "param count":
            sd["param_groups"][0]["params"].append(9)
        elif kind == "group count":
            sd["param_groups"].append(dict(sd["param_groups"][0], params=[]))
        elif kind == "unknown param":
            sd["state"][7] = sd["state"][0]
        elif kind == "bad hyperparameter":
            sd["param_groups"][0]["lr"] = -1.0
        elif kind == "amsgrad slots":
            sd["param_groups"][0]["amsgrad"] = True  # then 'vhat' is missing: fine; add junk
            s0["junk"] = torch.zeros(3)
        return sd

    return edit


CORRUPTIONS = {
    "slot name": "unknown state key 'exp_avg'",
    "shape": r"'m' has shape \(5,\), expected \(3,\)",
    "dtype": "'v' has dtype torch.float64, expected torch.float32",
    "sparse": "must hold a dense tensor",
    "no step": "has no 'step'",
    "steps differ": "different 'step' values",
    "bad step": "non-negative integer",
    "param count": "parameter group 0 has 3 parameters",
    "group count": "2 parameter groups",
    "unknown param": "state for parameter 7",
    "bad hyperparameter": r"param_groups\[0\].*learning_rate",
    "amsgrad slots": "unknown state key 'junk'",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_refused_load_changes_nothing(kind):
    params = make_params([(3,), (2,)])
    source = ko.optim.Adam(params, lr=0.01)
    train(source, params, dense_grads([(3,), (2,)], 2))
    sd = corrupt(kind)(copy.deepcopy(source.state_dict()))
    target_params = make_params([(3,), (2,)], seed=5)
    target = ko.optim.Adam(target_params, lr=0.02, beta_1=0.5)
    train(target, target_params, dense_grads([(3,), (2,)], 1, seed=7))
    before = snapshot(target)
    with pytest.raises(ValueError, match=CORRUPTIONS[kind]):
        target.load_state_dict(sd)
    assert_unchanged(target, before)


def test_load_before_the_first_step_and_of_a_subset():
    params = make_params([(3,), (2,)])
    source = ko.optim.Adam(params, lr=0.01)
    source.zero_grad()
    params[0].grad = torch.ones(3)
    source.step()  # only params[0] has state
    sd = source.state_dict()
    assert sorted(sd["state"]) == [0]
    fresh = twin(params)
    target = ko.optim.Adam(fresh)
    target.load_state_dict(sd)
    assert fresh[0] in target.state and fresh[1] not in target.state
    assert int(target.state[fresh[0]]["step"]) == 1


def test_a_group_appended_to_param_groups_directly_gets_its_own_keras_optimizer():
    a, b = make_params([(2,), (3,)])
    opt = ko.optim.Adam([a], lr=0.1)
    opt.param_groups.append({"params": [b], "lr": 0.05, "betas": (0.5, 0.9)})
    for p in (a, b):
        p.grad = torch.ones_like(p)
    opt.step()
    inner = opt.keras_optimizers
    assert len(inner) == 2 and inner[1].beta_1.item() == 0.5
    assert opt.param_groups[1]["beta_1"] == 0.5 and opt.param_groups[1]["epsilon"] == 1e-7
    assert int(opt.state[b]["step"]) == 1


def test_flat_engine_many_small_tensors():
    """auto packs >= 64 small tensors into flat buffers (re-homing the slots' storage)."""
    shapes = [(5,)] * 70
    keras_vars = make_params(shapes)
    keras, params, opt = keras_and_torch(
        "SGD", {"learning_rate": 0.05, "momentum": 0.9}, keras_vars
    )
    run_steps(keras, keras_vars, opt, params, dense_grads(shapes, 2))
    saved = opt.state_dict()["state"][3]["momentum"]
    assert torch.equal(saved, opt.state[params[3]]["momentum"])


def test_a_user_keras_optimizer_gets_a_torch_protocol_twin():
    from kerasopt._hyper import Hyper, non_negative

    class MySGD(ko.optimizers.Optimizer):
        learning_rate = Hyper(0.01, check=non_negative)
        slots = ("velocity",)

        def __init__(self, learning_rate=0.01, name="MySGD", **kwargs):
            super().__init__(name=name, learning_rate=learning_rate, **kwargs)

        def update(self, var, grad, velocity, *, c):
            velocity.copy_(velocity * 0.9 + grad)
            var.sub_(velocity * c.lr_t)

    class TorchMySGD(ko.optim.KerasOptimizer, keras=MySGD):
        """MySGD behind torch.optim's protocol."""

    keras_vars = make_params([(3,)])
    keras = MySGD(0.1)
    params = twin(keras_vars)
    opt = TorchMySGD(params, lr=0.1)
    run_steps(keras, keras_vars, opt, params, dense_grads([(3,)], 3))
    assert sorted(opt.state[params[0]]) == ["step", "velocity"]


@pytest.mark.parametrize("fresh", [True, False], ids=["first-step", "later-step"])
def test_a_step_refused_in_a_later_group_changes_no_group(fresh):
    """The step is one transaction across param groups: a gradient refused in the second group
    (a complex parameter, which Adam does not support) leaves the first group's parameters,
    slots and counter as they were, and creates no state."""
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.complex64))
    opt = ko.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    if not fresh:
        a.grad = torch.ones(2)
        opt.step()  # b has no gradient yet: only a's group steps
    before = copy.deepcopy(opt.state_dict())
    values = a.detach().clone(), b.detach().clone()
    a.grad = torch.full((2,), 0.5)
    b.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        opt.step()
    assert torch.equal(a.detach(), values[0]) and torch.equal(b.detach(), values[1])
    after = opt.state_dict()
    assert after["state"].keys() == before["state"].keys()
    for index, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(after["state"][index][key], value), (index, key)
    assert [int(k.iterations) for k in opt.keras_optimizers] == [0 if fresh else 1, 0]
    b.grad = None
    opt.step()  # without the refused gradient the step runs
    assert not torch.equal(a.detach(), values[0])


def test_a_keras_class_overriding_apply_gradients_gets_it_called():
    class CountingSGD(ko.optimizers.SGD):
        calls = 0

        def apply_gradients(self, grads_and_vars, name=None, **kwargs):
            type(self).calls += 1
            return super().apply_gradients(grads_and_vars, name, **kwargs)

    class TorchCountingSGD(ko.optim.KerasOptimizer, keras=CountingSGD):
        """CountingSGD behind torch.optim's protocol."""

    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = TorchCountingSGD([p], lr=0.5)
    p.grad = torch.ones(2)
    opt.step()
    assert CountingSGD.calls == 1 and p.detach().tolist() == [0.5, 1.5]
