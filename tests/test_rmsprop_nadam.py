"""RMSprop and Nadam (legacy family): validation, epsilon placement, Nadam's momentum cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kerasopt as ko

F64 = torch.float64
U32 = float(np.float32(0.96))  # TF's tf.cast(0.96, float64): float32 first
B1 = float(np.float32(0.9))  # beta_1 is a float32 hyperparameter


def _var(values, dtype=F64, name=None):
    return ko.Variable(torch.tensor(values, dtype=dtype), name=name)


def _step(opt, var, grad):
    opt.apply_gradients([(torch.as_tensor(grad, dtype=var.dtype), var)])


# -- RMSprop: construction ----------------------------------------------------------------------
def test_rmsprop_positional_order_and_defaults():
    opt = ko.optimizers.RMSprop(0.01, 0.8, 0.5, 1e-3, True, "r")
    cfg = opt.get_config()
    assert cfg == {
        "name": "r",
        "learning_rate": 0.01,
        "decay": 0.0,
        "rho": 0.8,
        "momentum": 0.5,
        "epsilon": 1e-3,
        "centered": True,
    }
    assert ko.optimizers.RMSprop().name == "RMSprop"
    assert ko.optimizers.RMSprop(epsilon=0).epsilon == 1e-7
    assert ko.optimizers.RMSprop(epsilon=None).epsilon == 1e-7


@pytest.mark.parametrize("momentum", [1.5, -0.1, 2])
def test_rmsprop_momentum_outside_unit_interval(momentum):
    message = (
        f"`momentum` must be between [0, 1]. Received: momentum={momentum} "
        f"(of type {type(momentum)})."
    )
    with pytest.raises(ValueError) as info:
        ko.optimizers.RMSprop(momentum=momentum)
    assert str(info.value) == message


def test_rmsprop_slot_order_one_name_at_a_time():
    a, b = _var([1.0, 2.0], name="a"), _var([[1.0]], name="b")
    opt = ko.optimizers.RMSprop(momentum=0.5, centered=True)
    opt.apply_gradients([(torch.ones(2, dtype=F64), a), (torch.ones(1, 1, dtype=F64), b)])
    assert opt.get_slot_names() == ["rms", "momentum", "mg"]
    expected = [opt.get_slot(v, s) for s in ("rms", "momentum", "mg") for v in (a, b)]
    weights = opt.variables()
    assert len(weights) == 7
    assert all(w is e for w, e in zip(weights[1:], expected))


@pytest.mark.parametrize(
    ("momentum", "slots"),
    [
        (0.0, ["rms"]),
        (0.3, ["rms", "momentum"]),
        (torch.tensor(0.0), ["rms", "momentum"]),  # a tensor selects the momentum path (TF)
        (lambda: 0.0, ["rms", "momentum"]),
    ],
)
def test_rmsprop_momentum_slot_created_when_needed(momentum, slots):
    v = _var([1.0])
    opt = ko.optimizers.RMSprop(momentum=momentum)
    _step(opt, v, [1.0])
    assert opt.get_slot_names() == slots


# -- RMSprop: epsilon placement, by hand (exact binary values: lr=0.5, rho=0.75, eps=0.25) --------
H = {"learning_rate": 0.5, "rho": 0.75, "epsilon": 0.25}


def test_rmsprop_plain_path_epsilon_outside_sqrt():
    v = _var([1.0])
    opt = ko.optimizers.RMSprop(**H)
    _step(opt, v, [2.0])
    # rms = 0.75*0 + 0.25*4 = 1; var -= 0.5*2 / (sqrt(1) + 0.25)
    assert float(opt.get_slot(v, "rms")) == 1.0
    assert float(v) == 1.0 - 1.0 / 1.25


def test_rmsprop_momentum_path_epsilon_inside_sqrt():
    v = _var([1.0])
    opt = ko.optimizers.RMSprop(momentum=0.5, **H)
    _step(opt, v, [2.0])
    # rms = 1; mom = 0.5*2 / sqrt(1 + 0.25); var -= mom
    mom = 1.0 / math.sqrt(1.25)
    assert float(opt.get_slot(v, "momentum")) == pytest.approx(mom, rel=1e-15)
    assert float(v) == pytest.approx(1.0 - mom, rel=1e-15)
    _step(opt, v, [2.0])
    # rms = 1 + (4 - 1)*0.25 = 1.75; mom = 0.5*mom + 1/sqrt(2.0)
    mom2 = 0.5 * mom + 1.0 / math.sqrt(1.75 + 0.25)
    assert float(v) == pytest.approx(1.0 - mom - mom2, rel=1e-15)


def test_rmsprop_centered_epsilon_placement_on_both_paths():
    plain, fused = _var([1.0]), _var([1.0])
    opt_plain = ko.optimizers.RMSprop(centered=True, **H)
    opt_fused = ko.optimizers.RMSprop(momentum=0.5, centered=True, **H)
    _step(opt_plain, plain, [2.0])
    _step(opt_fused, fused, [2.0])
    # rms = 1, mg = 0.5: plain denom = 1 - 0.25 (eps outside), fused denom = 1 - 0.25 + 0.25
    assert float(opt_plain.get_slot(plain, "mg")) == 0.5
    assert float(plain) == pytest.approx(1.0 - 1.0 / (math.sqrt(0.75) + 0.25), rel=1e-15)
    assert float(fused) == 0.0  # mom = 0.5*2 / sqrt(1) = 1


def test_rmsprop_sparse_plain_path_decays_all_rows_moves_indexed_rows():
    v = _var([1.0, 1.0, 1.0])
    opt = ko.optimizers.RMSprop(**H)
    _step(opt, v, [2.0, 2.0, 2.0])  # rms = 1 everywhere, var = 0.2
    g = ko.IndexedSlices(torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([1, 1]), (3,))
    opt.apply_gradients([(g, v)])  # duplicates summed: g_1 = 2
    rms = opt.get_slot(v, "rms").tolist()
    assert rms == [0.75, 0.75 + 1.0, 0.75]
    expected = 0.2 - 1.0 / (math.sqrt(1.75) + 0.25)
    np.testing.assert_allclose(v.numpy(), [0.2, expected, 0.2], rtol=1e-15)


def test_rmsprop_sparse_momentum_path_is_lazy():
    v = _var([1.0, 1.0, 1.0])
    opt = ko.optimizers.RMSprop(momentum=0.5, **H)
    _step(opt, v, [2.0, 2.0, 2.0])
    before = {s: opt.get_slot(v, s).clone() for s in ("rms", "momentum")}
    var_before = v.detach().clone()
    g = ko.IndexedSlices(torch.tensor([2.0], dtype=F64), torch.tensor([2]), (3,))
    opt.apply_gradients([(g, v)])
    for s, old in before.items():
        assert torch.equal(opt.get_slot(v, s)[:2], old[:2])
    assert torch.equal(v.detach()[:2], var_before[:2])
    mom = 0.5 * before["momentum"][2].item() + 1.0 / math.sqrt(1.75 + 0.25)
    assert v.detach()[2].item() == pytest.approx(var_before[2].item() - mom, rel=1e-15)


def test_rmsprop_honours_legacy_decay():
    v = _var([1.0])
    opt = ko.optimizers.RMSprop(decay=1.0, **H)
    _step(opt, v, [2.0])
    _step(opt, v, [2.0])
    # step 2: lr = 0.5 / (1 + 1*1); rms = 0.75 + 1 = 1.75
    assert float(v) == pytest.approx(0.2 - 0.25 * 2 / (math.sqrt(1.75) + 0.25), rel=1e-15)


# -- Nadam --------------------------------------------------------------------------------------
def _nadam_by_hand(lr, g_steps, beta_1=0.9, beta_2=0.999, eps=1e-7, d=0.004):
    """docs/reference-behaviour.md Part 1 §1.10's lines in float64 (TF rounds u, lr and the betas to float32 first)."""
    lr, beta_1, beta_2 = (float(np.float32(x)) for x in (lr, beta_1, beta_2))
    var, m, v, cache = 0.0, 0.0, 0.0, 1.0
    for t, g in enumerate(g_steps, start=1):
        mu_t = beta_1 * (1 - 0.5 * U32 ** (d * t))
        mu_next = beta_1 * (1 - 0.5 * U32 ** (d * (t + 1)))
        cache = cache * mu_t
        m_sched_next = cache * mu_next
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        m_bar = (1 - mu_t) * (g / (1 - cache)) + mu_next * (m / (1 - m_sched_next))
        var -= lr * m_bar / (math.sqrt(v / (1 - beta_2**t)) + eps)
    return var, cache


def test_nadam_three_steps_by_hand_and_momentum_cache():
    v = _var([0.0])
    opt = ko.optimizers.Nadam(learning_rate=0.1)
    grads = [1.0, -0.5, 2.0]
    for g in grads:
        _step(opt, v, [g])
    expected_var, expected_cache = _nadam_by_hand(0.1, grads)
    weights = opt.get_weights()
    # [iterations, momentum_cache, m, v]: the cache right after iterations, a float64 scalar
    assert [w.shape for w in weights] == [(), (), (1,), (1,)]
    assert weights[0] == 3
    assert weights[1].dtype == np.float64
    assert weights[1] == pytest.approx(expected_cache, rel=1e-15)
    mu = [B1 * (1 - 0.5 * U32 ** (0.004 * t)) for t in (1, 2, 3)]
    assert weights[1] == pytest.approx(mu[0] * mu[1] * mu[2], rel=1e-15)
    # the learning rate is not decayed by `decay` (=schedule_decay): raw lr throughout
    assert float(v) == pytest.approx(expected_var, rel=1e-14)


def test_nadam_momentum_cache_dtype_is_first_variables():
    a, b = _var([1.0], dtype=torch.float32), _var([1.0])
    opt = ko.optimizers.Nadam()
    opt.apply_gradients([(torch.ones(1), a), (torch.ones(1, dtype=F64), b)])
    assert opt.variables()[1].dtype == torch.float32
    assert opt.get_weights()[1].dtype == np.float32


def test_nadam_every_dtype_group_reads_the_cache_before_the_step():
    # The cache is float64 (first variable) and is written by the float64 group; the float32
    # group of the same step still sees the old value, like a float32-only optimizer.
    a64, b32 = _var([1.0, -1.0]), _var([1.0, -1.0], dtype=torch.float32)
    alone = _var([1.0, -1.0], dtype=torch.float32)
    mixed, single = ko.optimizers.Nadam(0.1), ko.optimizers.Nadam(0.1)
    g = torch.tensor([0.3, -0.7])
    mixed.apply_gradients([(g.to(F64), a64), (g, b32)])
    single.apply_gradients([(g, alone)])
    assert torch.equal(b32.detach(), alone.detach())
    assert mixed.get_weights()[1] == pytest.approx(B1 * (1 - 0.5 * U32**0.004), rel=1e-15)


def test_nadam_sparse_decays_moments_everywhere_moves_indexed_rows():
    v = _var([1.0, 1.0, 1.0])
    opt = ko.optimizers.Nadam(0.1)
    _step(opt, v, [1.0, 1.0, 1.0])
    m_before = opt.get_slot(v, "m").clone()
    var_before = v.detach().clone()
    g = ko.IndexedSlices(torch.tensor([0.5], dtype=F64), torch.tensor([0]), (3,))
    opt.apply_gradients([(g, v)])
    m = opt.get_slot(v, "m")
    np.testing.assert_allclose(m[1:].numpy(), (m_before[1:] * B1).numpy(), rtol=1e-15)
    assert torch.equal(v.detach()[1:], var_before[1:])
    assert v.detach()[0] != var_before[0]


@pytest.mark.parametrize("kwarg", ["learning_rate", "lr"])
def test_nadam_rejects_schedules(kwarg):
    sched = ko.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    with pytest.raises(ValueError) as info:
        ko.optimizers.Nadam(**{kwarg: sched})
    assert str(info.value) == (
        "The Nadam optimizer does not support tf.keras.optimizers.LearningRateSchedules as "
        "the learning rate."
    )


def test_nadam_schedule_decay_is_config_decay():
    opt = ko.optimizers.Nadam(0.01, 0.8, 0.99, 1e-3, "n", schedule_decay=0.01)
    cfg = opt.get_config()
    assert cfg == {
        "name": "n",
        "learning_rate": 0.01,
        "decay": 0.01,
        "beta_1": 0.8,
        "beta_2": 0.99,
        "epsilon": 1e-3,
    }
    assert ko.optimizers.Nadam().get_config()["decay"] == 0.004
    # `decay` is accepted when `schedule_decay` is absent, so configs round-trip
    assert ko.optimizers.Nadam.from_config(cfg).get_config() == cfg
    assert ko.optimizers.Nadam(schedule_decay=0.02, decay=0.5).get_config()["decay"] == 0.02


def test_nadam_positional_order():
    opt = ko.optimizers.Nadam(0.5, 0.7, 0.95, 0.25, "x")
    assert opt.name == "x" and opt.epsilon == 0.25
    assert float(opt.beta_1) == pytest.approx(0.7) and float(opt.beta_2) == pytest.approx(0.95)
    assert float(opt.learning_rate) == 0.5


# -- registry ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("identifier", "name"), [("rmsprop", "RMSprop"), ("RMSProp", "RMSprop"), ("nadam", "Nadam")]
)
def test_get_by_name(identifier, name):
    opt = ko.optimizers.get(identifier)
    assert type(opt).__name__ == name and opt.name == name
