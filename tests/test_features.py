"""Newer-generation features run by the base pipeline for every optimizer (docs/reference-behaviour.md Part 2 §1.4–§1.8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.helpers import RefRun, assert_matches, make_grads, make_optimizer, make_vars, to64
from tests.specs import case_ids, cases

SHAPES = [(3,), (2, 4)]


def _sgd_scalar(value=10.0, **kwargs):
    v = ko.Variable(np.array([value]))  # float64: docs/reference-behaviour.md's examples are exact
    return v, ko.optimizers.SGD(1.0, **kwargs)


def _one(v):
    return [(torch.ones(1, dtype=torch.float64), v)]


# -- weight decay ------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_weight_decay_matches_reference_for_every_optimizer(spec, config):
    config = dict(config, weight_decay=0.05)
    variables = make_vars(SHAPES, torch.float64, seed=21)
    opt = make_optimizer(spec, config)
    run = RefRun(spec, config, variables)
    for t, grads in enumerate(make_grads(SHAPES, 3, torch.float64, seed=22), start=1):
        opt.apply_gradients(zip(grads, variables))
        run.step(t, [to64(g) for g in grads])
        assert_matches(opt, variables, run, spec, torch.float64, f"step {t}")


def test_weight_decay_formula_and_exclusions():
    w = ko.Variable(np.array([2.0]), name="dense.weight")
    b = ko.Variable(np.array([2.0]), name="dense.bias")
    e = ko.Variable(np.array([2.0]), name="other")
    opt = ko.optimizers.SGD(0.5, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_list=[e], var_names=["bias$"])
    grads = [(torch.zeros(1, dtype=torch.float64), v) for v in (w, b, e)]
    opt.apply_gradients(grads)
    lr = float(np.float32(0.5))
    wd = float(np.float32(0.1))  # TF casts the Python float through float32
    assert float(w) == 2.0 - 2.0 * wd * lr
    assert float(b) == 2.0 and float(e) == 2.0
    with pytest.raises(ValueError, match="can only be configured before the optimizer is built"):
        opt.exclude_from_weight_decay(var_names=["x"])


def test_exclusion_call_replaces_previous_and_module_names_match():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    opt = ko.optimizers.SGD(0.5, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["weight"])
    opt.exclude_from_weight_decay(var_names=["^bias$"])  # replaces: weight is decayed again
    opt.minimize(lambda: model(torch.zeros(1, 2)).sum() * 0.0, model)
    assert torch.allclose(model.weight, torch.full((1, 2), 1 - 0.05))
    assert float(model.bias) == 1.0


# -- EMA -----------------------------------------------------------------------------------------
def test_ema_keras3_timing_spec_example():
    v, opt = _sgd_scalar(use_ema=True, ema_momentum=0.5)
    for _ in range(3):
        opt.apply_gradients(_one(v))
    assert float(v) == 7.0
    assert float(opt.get_slot(v, "average")) == 7.75
    opt.finalize_variable_values([v])
    assert float(v) == 7.75
    assert float(opt.get_slot(v, "average")) == 7.75


def test_ema_overwrite_frequency_spec_example():
    v, opt = _sgd_scalar(use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    got = []
    for _ in range(4):
        opt.apply_gradients(_one(v))
        got.append(float(v))
    assert got == [9.0, 8.5, 7.5, 7.25]


def test_ema_with_accumulation_spec_example():
    v, opt = _sgd_scalar(use_ema=True, ema_momentum=0.5, gradient_accumulation_steps=2)
    got = []
    for _ in range(6):
        opt.apply_gradients(_one(v))
        got.append((float(v), float(opt.get_slot(v, "average"))))
    assert got == [(10, 10), (9, 9), (9, 9), (8, 8.5), (8, 8.25), (7, 7.625)]


def test_finalize_without_ema_is_noop_and_ema_weights_listed_last():
    v, opt = _sgd_scalar()
    opt.apply_gradients(_one(v))
    opt.finalize_variable_values([v])
    assert float(v) == 9.0
    a = ko.Variable(np.array([1.0]))
    opt2 = ko.optimizers.SGD(0.1, momentum=0.9, use_ema=True)
    opt2.apply_gradients(_one(a))
    w = opt2.variables()
    assert w[1] is opt2.get_slot(a, "momentum") and w[2] is opt2.get_slot(a, "average")
    assert opt2.get_slot_names() == ["momentum"]


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_ema_average_matches_reference_for_every_optimizer(spec, config):
    config = dict(config, use_ema=True, ema_momentum=0.7)
    variables = make_vars(SHAPES, torch.float64, seed=31)
    opt = make_optimizer(spec, config)
    run = RefRun(spec, config, variables)
    averages = None
    for t, grads in enumerate(make_grads(SHAPES, 3, torch.float64, seed=32), start=1):
        opt.apply_gradients(zip(grads, variables))
        run.step(t, [to64(g) for g in grads])
        mu = 0.7 if t > 1 else 0.0
        averages = [
            mu * (averages[i] if averages else 0) + (1 - mu) * run.vars[i]
            for i in range(len(SHAPES))
        ]
        for i, var in enumerate(variables):
            np.testing.assert_allclose(to64(opt.get_slot(var, "average")), averages[i], rtol=1e-10)


# -- gradient accumulation --------------------------------------------------------------------
def test_accumulation_spec_example():
    v = ko.Variable(np.array([0.0]))
    opt = ko.optimizers.SGD(1.0, gradient_accumulation_steps=2)
    got = []
    for g in (1.0, 3.0, 5.0, 7.0):
        opt.apply_gradients([(torch.tensor([g], dtype=torch.float64), v)])
        got.append(float(v))
    assert got == [0.0, -2.0, -2.0, -8.0]
    assert int(opt.iterations) == 2 and int(opt._raw_iterations) == 4
    assert float(opt.get_slot(v, "gradient_accumulator")) == 0.0


def test_accumulation_clips_the_mean_and_schedules_see_raw_counter():
    v = ko.Variable(np.array([0.0]))
    opt = ko.optimizers.SGD(1.0, gradient_accumulation_steps=2, clipnorm=1.0)
    for _ in range(2):
        opt.apply_gradients([(torch.tensor([10.0], dtype=torch.float64), v)])
    assert float(v) == -1.0
    v2 = ko.Variable(np.array([0.0]))
    opt2 = ko.optimizers.SGD(lambda step: 1.0 + float(step), gradient_accumulation_steps=2)
    got = []
    for _ in range(4):
        opt2.apply_gradients(_one(v2))
        got.append(float(v2))
    assert got == [0.0, -2.0, -2.0, -6.0]


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_accumulated_micro_steps_equal_one_step_on_the_mean(spec, config):
    k = 3
    variables = make_vars(SHAPES, torch.float64, seed=41)
    twins = [torch.nn.Parameter(v.detach().clone()) for v in variables]
    acc_opt = make_optimizer(spec, dict(config, gradient_accumulation_steps=k, weight_decay=0.01))
    plain = make_optimizer(spec, dict(config, weight_decay=0.01))
    micro = make_grads(SHAPES, 2 * k, torch.float64, seed=42)
    for update in range(2):
        batch = micro[update * k : (update + 1) * k]
        for grads in batch:
            acc_opt.apply_gradients(zip(grads, variables))
        mean = [sum(gs[i] for gs in batch) / k for i in range(len(SHAPES))]
        plain.apply_gradients(zip(mean, twins))
        assert int(acc_opt.iterations) == update + 1
        for a, b in zip(variables, twins):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)


def test_accumulation_of_sparse_gradients():
    e = ko.Variable(torch.zeros(4, 1, dtype=torch.float64))
    opt = ko.optimizers.SGD(1.0, gradient_accumulation_steps=2)
    g1 = ko.IndexedSlices(torch.ones(2, 1, dtype=torch.float64), torch.tensor([0, 0]), (4, 1))
    g2 = ko.IndexedSlices(torch.ones(1, 1, dtype=torch.float64), torch.tensor([3]), (4, 1))
    opt.apply_gradients([(g1, e)])
    opt.apply_gradients([(g2, e)])
    assert e.detach().flatten().tolist() == [-1.0, 0.0, 0.0, -0.5]


# -- loss_scale_factor ----------------------------------------------------------------------
def test_loss_scale_factor_divides_gradients_first():
    v = ko.Variable(np.array([0.0]))
    opt = ko.optimizers.SGD(1.0, loss_scale_factor=4.0)
    opt.apply_gradients([(torch.tensor([8.0], dtype=torch.float64), v)])
    assert float(v) == -2.0
    assert float(opt.scale_loss(torch.tensor(3.0))) == 12.0


def test_loss_scale_factor_in_minimize_round_trips():
    w = ko.Variable(np.array([2.0]))
    opt = ko.optimizers.SGD(1.0, loss_scale_factor=1024.0)
    opt.minimize(lambda: 3 * w, [w])
    assert float(w) == -1.0


# -- all features together, in docs/reference-behaviour.md's order ----------------------------
def test_pipeline_order_scale_then_accumulate_then_clip_then_decay():
    v = ko.Variable(np.array([1.0]))
    opt = ko.optimizers.SGD(
        0.5,
        loss_scale_factor=2.0,
        gradient_accumulation_steps=2,
        clipvalue=1.5,
        weight_decay=0.1,
        use_ema=True,
        ema_momentum=0.5,
    )
    for g in (4.0, 8.0):
        opt.apply_gradients([(torch.tensor([g], dtype=torch.float64), v)])
    # scaled: 2, 4 -> mean 3 -> clipped 1.5; decay: 1 - 1*0.1*0.5 = 0.95; step: 0.95 - 0.5*1.5
    wd = float(np.float32(0.1))  # TF casts the Python float through float32
    assert float(v) == pytest.approx((1.0 - 1.0 * wd * 0.5) - 0.75, rel=1e-15)
    # EMA: call 1 (n=0) avg=1.0; call 2 (n=0 still: raw 1 // 2) avg = theta
    assert float(opt.get_slot(v, "average")) == float(v)


# -- hyperparameter tensors keep their identity ------------------------------------------------
def test_hyperparameter_tensors_keep_identity_across_changes_and_schedules():
    v = ko.Variable([1.0])
    sched = ko.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    opt = ko.optimizers.Adam(sched, use_ema=True)
    opt.apply_gradients([(torch.ones(1), v)])
    ids = {name: id(t) for name, t in opt._hyper.tensors.items()}
    counter = id(opt._raw_iterations)
    lr_values = []
    for _ in range(3):
        opt.apply_gradients([(torch.ones(1), v)])
        lr_values.append(float(opt._hyper.tensors["learning_rate"]))
    opt.beta_1 = 0.5
    opt.learning_rate = ko.optimizers.schedules.ExponentialDecay(0.2, 1, 0.5)
    opt.apply_gradients([(torch.ones(1), v)])
    assert {name: id(t) for name, t in opt._hyper.tensors.items()} == ids
    assert id(opt._raw_iterations) == counter
    np.testing.assert_allclose(lr_values, [0.1 * 0.5**k for k in (1, 2, 3)], rtol=1e-6)
    assert float(opt._hyper.tensors["beta_1"]) == 0.5


# ---------------------------------------------------------------------------------------------
# the one table of base features (kerasopt._features.FEATURES)
def _feature_value(feature):
    """A valid non-default value for each feature."""
    return {
        "weight_decay": 0.125,
        "clipnorm": 2.0,
        "global_clipnorm": None,  # exclusive with clipnorm; checked on its own below
        "clipvalue": 0.5,
        "use_ema": True,
        "ema_momentum": 0.5,
        "ema_overwrite_frequency": 3,
        "loss_scale_factor": 4.0,
        "gradient_accumulation_steps": 2,
        "jit_compile": False,
        "slot_dtype": "float32",
        "implementation": "foreach",
    }[feature.name]


def test_the_table_is_what_every_front_end_reads():
    from kerasopt import _features
    from kerasopt.optim._adapter import _FEATURES

    names = [f.name for f in _features.FEATURES]
    assert list(_FEATURES) == names  # kerasopt.optim's group keys
    annotated = ko.optimizers.Optimizer.__annotations__
    assert all(name in annotated for name in names)  # mypy sees every feature
    opt = ko.optimizers.Adam()
    for feature in _features.FEATURES:
        assert getattr(opt, feature.name) == _features.default_of(feature.name, {})
    assert _features.FEATURE_SLOTS == ("average", "gradient_accumulator")


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lion"])
def test_every_base_attribute_is_answered_by_loss_scale_optimizer(name):
    from kerasopt import _features

    values = {f.name: _feature_value(f) for f in _features.FEATURES}
    values = {k: v for k, v in values.items() if v is not None}
    values["gradient_aggregator"] = lambda pairs: pairs
    inner = getattr(ko.optimizers, name)(**values)
    lso = ko.optimizers.LossScaleOptimizer(inner)
    for feature in _features.FEATURES:
        if feature.name == "loss_scale_factor":
            assert lso.loss_scale_factor is None  # the wrapper scales the loss itself
            continue
        assert getattr(lso, feature.name) == getattr(inner, feature.name), feature.name
    # the instance attributes the base constructor sets, and its hyperparameters
    public = {n for n in vars(inner) if not n.startswith("_")} | {"learning_rate", "lr", "decay"}
    missing = [n for n in sorted(public) if not hasattr(lso, n)]
    assert missing == [], missing
    assert lso.gradient_aggregator is inner.gradient_aggregator


def test_each_feature_config_policy():
    from kerasopt import _features

    for feature in _features.FEATURES:
        value = _feature_value(feature)
        if value is None:
            continue
        extra = {"clipnorm": None} if feature.name == "global_clipnorm" else {}
        opt = ko.optimizers.SGD(**{feature.name: value}, **extra)
        config = opt.get_config()
        expected = value if feature.name != "jit_compile" else None
        if expected is not None:
            assert config[feature.name] == expected, feature.name
        again = ko.optimizers.SGD.from_config(config)
        assert getattr(again, feature.name) == getattr(opt, feature.name), feature.name
    assert "implementation" not in ko.optimizers.SGD(jit_compile=True).get_config()
    assert ko.optimizers.SGD(jit_compile=True).get_config()["jit_compile"] is True
    assert ko.optimizers.SGD(global_clipnorm=1.0).get_config()["global_clipnorm"] == 1.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"clipnorm": "x"}, TypeError, r"`clipnorm` must be a number or None"),
        ({"clipvalue": -1.0}, ValueError, r"Expected clipvalue >= 0"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, ValueError, "Cannot accept both"),
        ({"gradient_accumulation_steps": 1}, ValueError, "must be an integer >= 2"),
        ({"use_ema": True, "ema_momentum": 2.0}, ValueError, r"`ema_momentum` must be in"),
        ({"weight_decay": "x"}, ValueError, "Argument `weight_decay` must be a float"),
        ({"implementation": "fast"}, ValueError, "`implementation` must be one of"),
        ({"slot_dtype": "float16"}, ValueError, "`slot_dtype` must be None"),
        ({"clipnorms": 1.0}, TypeError, "Unexpected keyword argument passed to optimizer"),
    ],
)
def test_feature_checks_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        ko.optimizers.Adam(**kwargs)


def test_the_typed_keywords_are_the_table():
    from typing import get_type_hints

    from kerasopt import _features

    keys = set(get_type_hints(_features.BaseKeywords))
    assert keys == {f.name for f in _features.FEATURES} | {"decay", "lr"}
    assert keys - set(get_type_hints(_features.OtherKeywords)) == {"weight_decay"}
