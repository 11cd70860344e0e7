"""LossScaleOptimizer: tf_keras LossScaleOptimizerV3 semantics (docs/reference-behaviour.md Part 2 §5)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

import kerasopt as ko
from kerasopt.optimizers import SGD, Adam, LossScaleOptimizer

INF, NAN = float("inf"), float("nan")


def _lso(inner=None, **kwargs):
    return LossScaleOptimizer(inner if inner is not None else SGD(1.0), **kwargs)


def _state(opt, var):
    return [var.detach().clone()] + [w.detach().clone() for w in opt.variables()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# constructor (§5.1)
def test_defaults_dynamic():
    opt = _lso()
    assert opt.dynamic is True
    assert opt.initial_scale == 32768.0 and isinstance(opt.initial_scale, float)
    assert opt.dynamic_growth_steps == 2000
    assert opt.loss_scale.dtype == torch.float32 and float(opt.loss_scale) == 32768.0
    assert opt.dynamic_counter.dtype == torch.int64 and int(opt.dynamic_counter) == 0
    assert opt.loss_scale.dim() == 0 and opt.dynamic_counter.dim() == 0


def test_static_mode():
    opt = _lso(dynamic=False, initial_scale=4)
    assert opt.dynamic is False
    assert opt.initial_scale == 4.0 and isinstance(opt.initial_scale, float)
    assert opt.dynamic_growth_steps is None and opt.dynamic_counter is None
    assert opt.loss_scale.dtype == torch.float32 and float(opt.loss_scale) == 4.0
    assert opt.loss_scale_state == {}
    var = ko.Variable(1.0)
    for g in (1.0, INF):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.apply_gradients([(torch.tensor(g), var)])
    # static scaling always applies, and the scale never moves
    assert float(var) == -INF and float(opt.loss_scale) == 4.0 and int(opt.iterations) == 2


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "message"),
    [
        (
            ("not an optimizer",),
            {},
            TypeError,
            '"inner_optimizer" must be an instance of Optimizer, but got: not an optimizer.',
        ),
        (
            (SGD(),),
            {"dynamic": 1},
            TypeError,
            '"dynamic" argument to LossScaleOptimizer.__init__ must be a bool, but got: 1',
        ),
        ((SGD(),), {"dynamic": "dynamic"}, TypeError, "must be a bool, but got: 'dynamic'"),
        (
            (SGD(),),
            {"dynamic": False},
            ValueError,
            '"initial_scale" must be specified if "dynamic" is False',
        ),
        (
            (SGD(),),
            {"dynamic": False, "initial_scale": 1, "dynamic_growth_steps": 2},
            ValueError,
            '"dynamic_growth_steps" must be None if "dynamic" is False, but got: 2',
        ),
    ],
)
def test_constructor_errors(args, kwargs, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        LossScaleOptimizer(*args, **kwargs)


def test_cannot_wrap_a_loss_scale_optimizer():
    with pytest.raises(
        TypeError, match="LossScaleOptimizer cannot wrap another LossScaleOptimizer, but got: "
    ):
        LossScaleOptimizer(_lso())


def test_inner_is_flagged_and_cannot_be_wrapped_twice():
    inner = SGD(loss_scale_factor=8.0)
    opt = LossScaleOptimizer(inner)
    assert inner._is_wrapped_by_loss_scale_optimizer is True
    # gradients are never unscaled twice
    assert inner.loss_scale_factor is None and opt.loss_scale_factor is None
    with pytest.raises(
        ValueError,
        match=re.escape(
            '"inner_optimizer" is already wrapped by a LossScaleOptimizer. An optimizer can only '
            "be wrapped by a single LossScaleOptimizer"
        ),
    ):
        LossScaleOptimizer(inner)


def test_failed_construction_leaves_inner_unflagged():
    inner = SGD(loss_scale_factor=2.0)
    with pytest.raises(ValueError):
        LossScaleOptimizer(inner, dynamic=False)
    assert not getattr(inner, "_is_wrapped_by_loss_scale_optimizer", False)
    assert inner.loss_scale_factor == 2.0
    LossScaleOptimizer(inner)  # still wrappable


# --------------------------------------------------------------------------------------------
# dynamic update rule (§5.2)
# docs/reference-behaviour.md's verification (TFK, Adam lr 0.1, S0=8, N=2): theta, iterations, S, c after each call.
TABLE = [
    (1.0, 0.900001, 1, 8.0, 1),
    (1.0, 0.800002, 2, 16.0, 0),
    (INF, 0.800002, 3, 8.0, 0),
    (1.0, 0.709033, 4, 8.0, 1),
    (NAN, 0.709033, 5, 4.0, 0),
    (1.0, 0.619188, 6, 4.0, 1),
    (1.0, 0.526359, 7, 8.0, 0),
]


def test_spec_verification_table():
    var = ko.Variable(1.0)
    opt = LossScaleOptimizer(Adam(0.1), initial_scale=8, dynamic_growth_steps=2)
    # A plain Adam stepped at the same t (skips only advance its counter): identical bits.
    ref_var, ref = ko.Variable(1.0), Adam(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g, theta, iterations, scale, counter in TABLE:
            previous = var.detach().clone()
            result = opt.apply_gradients([(torch.tensor(g), var)])
            if np.isfinite(g):
                ref.apply_gradients([(torch.tensor(g), ref_var)])
            else:
                ref.iterations = int(ref.iterations) + 1
                assert torch.equal(var, previous)
            # TFK's new-API Adam rounds (1 - beta_2**t) differently in float32 (beta_2 is a
            # Python float there): the table differs from optimizer_v2's Adam by ~1e-6.
            assert float(var) == pytest.approx(theta, abs=5e-6)
            assert torch.equal(var, ref_var)
            assert int(result) == int(opt.iterations) == iterations
            assert float(opt.loss_scale) == scale
            assert int(opt.dynamic_counter) == counter


def test_scale_floor_is_one_and_growth_only_when_finite():
    var = ko.Variable(1.0)
    opt = _lso(initial_scale=1.0, dynamic_growth_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.apply_gradients([(torch.tensor(NAN), var)])
        assert float(opt.loss_scale) == 1.0
        opt.apply_gradients([(torch.tensor(0.0), var)])
        assert float(opt.loss_scale) == 2.0 and int(opt.dynamic_counter) == 0
    big = _lso(initial_scale=2.0**127, dynamic_growth_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big.apply_gradients([(torch.tensor(0.0), var)])
    # 2**128 overflows float32: the scale is kept, the counter is reset
    assert float(big.loss_scale) == 2.0**127 and int(big.dynamic_counter) == 0


def _manual_step(opt, grads_and_vars):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return opt.apply_gradients(grads_and_vars)


@pytest.mark.parametrize(
    "inner_kwargs",
    [
        {"use_ema": True, "ema_momentum": 0.5},
        {"weight_decay": 0.1, "clipnorm": 1.0},
        {"amsgrad": True, "global_clipnorm": 1.0},
    ],
)
def test_skipped_step_changes_nothing_but_iterations(inner_kwargs):
    a, b = ko.Variable([1.0, 2.0], name="a"), ko.Variable([[3.0]], name="b")
    opt = LossScaleOptimizer(Adam(0.1, **inner_kwargs))
    _manual_step(opt, [(torch.tensor([0.5, -0.5]), a), (torch.tensor([[1.0]]), b)])
    before = [*_state(opt, a), b.detach().clone()]
    _manual_step(opt, [(torch.tensor([0.5, INF]), a), (torch.tensor([[1.0]]), b)])
    after = [*_state(opt, a), b.detach().clone()]
    assert int(opt.iterations) == 2
    assert torch.equal(before[1], torch.tensor(1)) and torch.equal(after[1], torch.tensor(2))
    del before[1], after[1]
    assert _same(before, after)


def test_ema_example_from_spec():
    # TFK: SGD lr 1, ema_momentum 0.5, one finite then one skipped step -> theta 3, average
    # unchanged by the skip, iterations 2 (kerasopt EMA timing: the average starts at theta_1).
    var = ko.Variable(4.0)
    opt = LossScaleOptimizer(SGD(1.0, use_ema=True, ema_momentum=0.5))
    _manual_step(opt, [(torch.tensor(1.0), var)])
    average = opt.inner_optimizer.get_slot(var, "average").clone()
    _manual_step(opt, [(torch.tensor(INF), var)])
    assert float(var) == 3.0 and int(opt.iterations) == 2
    assert torch.equal(opt.inner_optimizer.get_slot(var, "average"), average)
    opt.finalize_variable_values([var])
    assert float(var) == 3.0


def test_skip_with_gradient_accumulation_keeps_the_cycle():
    # A skipped call is one skipped update: the raw counter moves by K, the accumulators keep
    # their micro-batches, the next call completes the cycle.
    var = ko.Variable(0.0)
    opt = LossScaleOptimizer(SGD(1.0, gradient_accumulation_steps=2))
    _manual_step(opt, [(torch.tensor(1.0), var)])  # accumulate
    _manual_step(opt, [(torch.tensor(INF), var)])  # update call, skipped
    acc = opt.inner_optimizer.get_slot(var, "gradient_accumulator")
    assert float(var) == 0.0 and float(acc) == 1.0 and int(opt.iterations) == 1
    _manual_step(opt, [(torch.tensor(3.0), var)])  # update call: mean of 1 and 3
    assert float(var) == -2.0 and float(acc) == 0.0 and int(opt.iterations) == 2


@pytest.mark.parametrize("kind", ["dense", "indexed_slices", "sparse_coo"])
def test_non_finite_detection_for_every_gradient_kind(kind):
    table = ko.Variable(torch.ones(4, 2), name="table")
    other = ko.Variable(1.0, name="other")

    def grad(value):
        values = torch.tensor([[1.0, value]])
        indices = torch.tensor([2])
        if kind == "dense":
            return torch.zeros(4, 2).index_add_(0, indices, values)
        if kind == "indexed_slices":
            return ko.IndexedSlices(values, indices, (4, 2))
        return torch.sparse_coo_tensor(indices[None], values, (4, 2), check_invariants=True)

    opt = LossScaleOptimizer(SGD(1.0))
    _manual_step(opt, [(grad(NAN), table), (torch.tensor(1.0), other)])
    assert torch.equal(table, torch.ones(4, 2)) and float(other) == 1.0
    assert float(opt.loss_scale) == 16384.0
    _manual_step(opt, [(grad(2.0), table), (torch.tensor(1.0), other)])
    assert table[2].tolist() == [0.0, -1.0] and float(other) == 0.0
    assert int(opt.dynamic_counter) == 1 and int(opt.iterations) == 2


def test_none_gradients_are_filtered():
    a, b = ko.Variable(1.0, name="a"), ko.Variable(1.0, name="b")
    opt = _lso()
    opt.get_scaled_loss(torch.tensor(1.0))  # no scaling warning
    opt.get_unscaled_gradients([])
    with pytest.warns(UserWarning, match="Gradients do not exist for variables"):
        opt.apply_gradients([(None, a), (torch.tensor(1.0), b)])
    assert float(a) == 1.0 and float(b) == 0.0
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        _manual_step(opt, [(None, a), (None, b)])


def test_invalid_step_changes_nothing_including_the_scale():
    var = ko.Variable([1.0, 2.0])
    opt = _lso(initial_scale=8.0, dynamic_growth_steps=1)
    with pytest.raises(ValueError, match="has shape"):
        _manual_step(opt, [(torch.tensor([INF, 1.0, 1.0]), var)])
    assert float(opt.loss_scale) == 8.0 and int(opt.dynamic_counter) == 0
    assert int(opt.iterations) == 0 and var.tolist() == [1.0, 2.0]


def test_loss_scale_state_is_live_and_loss_scale_a_snapshot():
    opt = _lso(initial_scale=8.0)
    state = opt.loss_scale_state
    assert set(state) == {"current_loss_scale", "good_steps"}
    snapshot = opt.loss_scale
    state["current_loss_scale"].fill_(2.0)
    state["good_steps"].fill_(5)
    assert float(snapshot) == 8.0
    assert float(opt.loss_scale) == 2.0 and int(opt.dynamic_counter) == 5
    assert opt.dynamic_counter is state["good_steps"]
    # the state is not among the optimizer's variables (TF)
    assert all(t is not state["current_loss_scale"] for t in opt.variables())


# --------------------------------------------------------------------------------------------
# scaling helpers and the two workflows (§5.3)
def test_get_scaled_loss_tensor_and_callable():
    opt = _lso(initial_scale=4.0)
    loss = torch.tensor(1.5, dtype=torch.float16)
    scaled = opt.get_scaled_loss(loss)
    assert scaled.dtype == torch.float16 and float(scaled) == 6.0
    fn = opt.get_scaled_loss(lambda: torch.tensor(2.0, dtype=torch.float64))
    assert callable(fn)
    opt.loss_scale_state["current_loss_scale"].fill_(8.0)  # evaluated when called
    value = fn()
    assert value.dtype == torch.float64 and float(value) == 16.0


def test_get_unscaled_gradients_multiplies_by_the_float32_reciprocal():
    opt = _lso(dynamic=False, initial_scale=3.0)
    reciprocal32 = float(np.float32(1.0) / np.float32(3.0))
    g64 = torch.tensor([1.0, 3.0], dtype=torch.float64)
    sparse = ko.IndexedSlices(torch.tensor([[3.0, 6.0]]), torch.tensor([1]), (2, 2))
    coo = torch.sparse_coo_tensor(
        torch.tensor([[0]]), torch.tensor([3.0]), (2,), check_invariants=True
    )
    out = opt.get_unscaled_gradients([g64, None, sparse, coo])
    assert out[1] is None
    # 1/S is computed in float32 then cast: not the float64 quotient
    assert out[0].dtype == torch.float64
    assert out[0].tolist() == [reciprocal32, 3.0 * reciprocal32]
    assert out[0][0].item() != 1.0 / 3.0
    assert isinstance(out[2], ko.IndexedSlices)
    assert torch.equal(out[2].indices, sparse.indices)
    assert torch.equal(out[2].values, sparse.values * torch.tensor(reciprocal32))
    assert out[3].is_sparse
    assert torch.equal(out[3].to_dense(), torch.tensor([3.0 * np.float32(reciprocal32), 0.0]))
    g32 = torch.tensor([7.0])
    assert torch.equal(opt.get_unscaled_gradients([g32])[0], g32 * (1.0 / torch.tensor(3.0)))


def test_minimize_spec_check_is_fully_automatic():
    # docs/reference-behaviour.md: w=2, loss=3w, SGD lr 1 -> w=-1
    w = ko.Variable(2.0)
    opt = LossScaleOptimizer(SGD(1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # minimize never warns about scaling
        assert int(opt.minimize(lambda: 3 * w, [w])) == 1
    assert float(w) == -1.0
    assert int(opt.dynamic_counter) == 1 and float(opt.loss_scale) == 32768.0


def test_minimize_with_tensor_loss_tape_and_callable_var_list():
    w = ko.Variable(2.0, name="w")
    opt = LossScaleOptimizer(SGD(1.0))
    with ko.GradientTape() as tape:
        loss = 3 * w
    opt.minimize(loss, [w], tape=tape)
    assert float(w) == -1.0
    opt.minimize(3 * w, lambda: [w])  # autograd directly
    assert float(w) == -4.0
    opt.minimize(lambda: 3 * w, {"w": w}, grad_loss=torch.tensor(2.0))
    assert float(w) == -10.0


def test_compute_gradients_returns_unscaled_pairs():
    w, unused = ko.Variable([1.0, 2.0], name="w"), ko.Variable(0.0, name="unused")
    opt = _lso(initial_scale=1024.0)
    pairs = opt.compute_gradients(lambda: (w * w).sum(), [w, unused])
    assert pairs[0][1] is w and pairs[1] == (None, unused)
    assert pairs[0][0].tolist() == [2.0, 4.0]


def test_manual_tape_workflow_matches_minimize():
    a, b = ko.Variable([1.0, -2.0]), ko.Variable([1.0, -2.0])
    opt_a, opt_b = LossScaleOptimizer(Adam(0.1)), LossScaleOptimizer(Adam(0.1))
    for _ in range(3):
        opt_a.minimize(lambda: (a**3).sum(), [a])
        with ko.GradientTape() as tape:
            scaled = opt_b.get_scaled_loss((b**3).sum())
        grads = opt_b.get_unscaled_gradients(tape.gradient(scaled, [b]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt_b.apply_gradients(zip(grads, [b]))
    assert torch.equal(a, b)


def _warning_messages(opt, scale_loss, unscale_grads):
    var = ko.Variable(1.0)
    if scale_loss:
        opt.get_scaled_loss(torch.tensor(1.0))
    if unscale_grads:
        opt.get_unscaled_gradients([torch.tensor(1.0)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.apply_gradients([(torch.tensor(1.0), var)])
    return [str(w.message) for w in caught]


def test_three_scaling_warnings():
    neither = _warning_messages(_lso(), False, False)
    assert len(neither) == 1
    assert neither[0].startswith(
        "You forgot to call LossScaleOptimizer.get_scaled_loss() and "
        "LossScaleOptimizer.get_unscaled_gradients() before calling "
        "LossScaleOptimizer.apply_gradients()."
    )
    only_unscaled = _warning_messages(_lso(), False, True)
    assert len(only_unscaled) == 1
    assert only_unscaled[0].startswith(
        "You forgot to call LossScaleOptimizer.get_scaled_loss() before calling "
        "LossScaleOptimizer.apply_gradients() (you did call get_unscaled_gradients() however)."
    )
    only_scaled = _warning_messages(_lso(), True, False)
    assert len(only_scaled) == 1
    assert only_scaled[0].startswith(
        "You forgot to call LossScaleOptimizer.get_unscaled_gradients() before calling "
        "LossScaleOptimizer.apply_gradients() (you did call get_scaled_loss() however)."
    )
    assert _warning_messages(_lso(), True, True) == []


# --------------------------------------------------------------------------------------------
# delegation, config
def test_delegation_to_the_inner_optimizer():
    inner = Adam(0.01, use_ema=True, ema_momentum=0.9)
    opt = LossScaleOptimizer(inner)
    var = ko.Variable([1.0, 2.0], name="v")
    opt.build([var])
    assert opt.built and inner.built
    assert opt.get_slot_names() == inner.get_slot_names() == ["m", "v"]
    assert opt.get_slot(var, "m") is inner.get_slot(var, "m")
    assert opt.variables() == inner.variables()
    assert opt.weights == inner.weights
    assert opt.use_ema is True and opt.ema_momentum == 0.9
    assert float(opt.learning_rate) == pytest.approx(0.01)
    opt.learning_rate = 0.5
    assert float(inner.learning_rate) == 0.5 and float(opt.lr) == 0.5
    opt.iterations = 7
    assert int(inner.iterations) == 7 and int(opt.iterations) == 7
    opt.minimize(lambda: (var * var).sum(), [var])
    assert int(inner.iterations) == 8
    weights = opt.get_weights()
    assert len(weights) == len(inner.variables())
    opt.set_weights(weights)
    moved = var.detach().clone()
    opt.finalize_variable_values([var])
    assert torch.equal(var, inner.get_slot(var, "average"))
    assert not torch.equal(var, moved)
    assert opt.name == "LossScaleOptimizer"
    assert "LossScaleOptimizer" in repr(opt)


def test_get_config_and_round_trip():
    opt = LossScaleOptimizer(Adam(0.01), initial_scale=64, dynamic_growth_steps=10)
    config = opt.get_config()
    assert config == {
        "inner_optimizer": ko.optimizers.serialize(opt.inner_optimizer),
        "dynamic": True,
        "initial_scale": 64.0,
        "dynamic_growth_steps": 10,
    }
    clone = LossScaleOptimizer.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    assert type(clone.inner_optimizer) is Adam and clone.inner_optimizer is not opt.inner_optimizer
    default = _lso().get_config()
    assert default["initial_scale"] == 32768.0 and default["dynamic_growth_steps"] == 2000
    static = _lso(dynamic=False, initial_scale=2).get_config()
    assert static["dynamic"] is False and static["dynamic_growth_steps"] is None
    assert LossScaleOptimizer.from_config(static).get_config() == static


def test_serialize_deserialize_through_the_registry():
    opt = LossScaleOptimizer(SGD(0.5, momentum=0.9), dynamic=False, initial_scale=128)
    data = json.loads(json.dumps(ko.optimizers.serialize(opt)))
    assert data["class_name"] == "LossScaleOptimizer"
    clone = ko.optimizers.deserialize(data)
    assert isinstance(clone, LossScaleOptimizer)
    assert clone.get_config() == opt.get_config()
    assert ko.optimizers.get(data).get_config() == opt.get_config()
    assert ko.optimizers.get(opt) is opt


# --------------------------------------------------------------------------------------------
# half-precision models
@pytest.mark.parametrize(
    ("dtype", "overflow_scale"), [(torch.float16, 2.0**16), (torch.bfloat16, 2.0**127)]
)
def test_half_precision_model_trains_and_backs_off_on_overflow(dtype, overflow_scale):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).to(dtype)
    x, y = torch.randn(16, 4).to(dtype), torch.randn(16, 2).to(dtype)

    def loss():
        return ((model(x) - y) ** 2).mean()

    def loss_value():
        with torch.no_grad():
            return loss().item()

    opt = LossScaleOptimizer(SGD(0.1), initial_scale=overflow_scale)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    # The scaled loss overflows (float16: 2**16 itself is inf; bfloat16: loss * 2**127 is):
    # the step is skipped and the scale backs off.
    opt.minimize(lambda: loss() * 4, model)
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    assert float(opt.loss_scale) == overflow_scale / 2 and int(opt.iterations) == 1
    start = loss_value()
    for _ in range(5):
        opt.minimize(loss, model)
    assert loss_value() < start
    assert int(opt.iterations) == 6 and int(opt.dynamic_counter) == 5
    assert all(p.dtype == dtype for p in model.parameters())
    assert opt.inner_optimizer.variables()[0].dtype == torch.int64
