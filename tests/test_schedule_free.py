"""ScheduleFreeAdamW (docs/reference-behaviour.md Part 2 §3.6): what the table-driven tests do not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.reference import REFERENCES
from tests.specs import BY_NAME, KERAS3_BASE_KEYS

SFA = ko.optimizers.ScheduleFreeAdamW
SFA_SPEC = BY_NAME["ScheduleFreeAdamW"]


def f32(x: float) -> float:
    """A Python float as Keras 3's ``ops.cast`` hands it to a float64 variable (TF backend)."""
    return float(np.float32(x))


def f64(values):
    return ko.Variable(np.asarray(values, dtype=np.float64))


def g64(values):
    return torch.tensor(values, dtype=torch.float64)


def _grads(shape, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size=shape) for _ in range(steps)]


# -- constructor, config, registry -------------------------------------------------------------
def test_defaults_positional_order_and_name():
    opt = SFA()
    defaults = SFA_SPEC.default_config
    assert opt.name == defaults["name"] == "ScheduleFreeAdamW"
    assert float(opt.learning_rate) == pytest.approx(defaults["learning_rate"])
    own = ("beta_1", "beta_2", "epsilon", "warmup_steps")
    assert tuple(getattr(opt, k) for k in own) == tuple(defaults[k] for k in own)
    assert opt.weight_decay is defaults["weight_decay"] is None
    opt = SFA(0.01, 0.8, 0.99, 1e-6, 5, "sf")
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.warmup_steps, opt.name) == (
        0.8,
        0.99,
        1e-6,
        5,
        "sf",
    )


def test_get_by_name_and_keras3_config_round_trip():
    assert type(ko.optimizers.get("schedulefreeadamw")) is SFA
    assert type(ko.optimizers.get("ScheduleFreeAdamW")) is SFA
    opt = SFA(learning_rate=0.5, warmup_steps=7, weight_decay=0.01, clipvalue=1.0, use_ema=True)
    cfg = opt.get_config()
    assert set(cfg) == KERAS3_BASE_KEYS | SFA_SPEC.own_config_keys
    assert cfg["warmup_steps"] == 7 and cfg["weight_decay"] == 0.01 and cfg["learning_rate"] == 0.5
    assert SFA.from_config(cfg).get_config() == cfg
    again = ko.optimizers.deserialize(ko.optimizers.serialize(opt))
    assert type(again) is SFA and again.get_config() == cfg


@pytest.mark.parametrize("bad", ["10", None, [3]])
def test_warmup_steps_must_be_a_number(bad):
    with pytest.raises(ValueError, match="Argument `warmup_steps` must be a number"):
        SFA(warmup_steps=bad)


def test_unknown_kwarg_is_type_error():
    with pytest.raises(TypeError, match="Unexpected keyword argument"):
        SFA(warmup=3)


# -- slots: z starts at θ₀ ----------------------------------------------------------------------
def test_momentum_slot_starts_as_a_copy_of_the_variable():
    w = ko.Variable(np.arange(6.0).reshape(3, 2).T)  # non-contiguous variable
    b = f64([0.5, -1.0])
    opt = SFA()
    opt.build([w, b])
    assert opt.get_slot_names() == ["momentum", "velocity"]
    for var in (w, b):
        z = opt.get_slot(var, "momentum")
        assert torch.equal(z, var.detach()) and z.data_ptr() != var.data_ptr()
        assert z.is_contiguous() and z.dtype == var.dtype
        assert torch.equal(opt.get_slot(var, "velocity"), torch.zeros_like(var))
        assert opt.get_slot(var, "z") is z and opt.get_slot(var, "v") is opt.get_slot(
            var, "velocity"
        )
    # Keras 3's order: momentum, velocity variable by variable.
    slots = opt.variables()[1:]
    assert slots[0] is opt.get_slot(w, "momentum") and slots[1] is opt.get_slot(w, "velocity")
    assert slots[2] is opt.get_slot(b, "momentum")
    # The slot is a copy: changing the variable leaves z alone.
    with torch.no_grad():
        b.add_(1.0)
    assert opt.get_slot(b, "momentum").tolist() == [0.5, -1.0]


def test_late_variable_gets_z_equal_to_its_value_when_first_seen():
    a, late = f64([1.0]), f64([3.0, 4.0])
    opt = SFA(0.1)
    for _ in range(2):
        opt.apply_gradients([(g64([1.0]), a)])
    with torch.no_grad():
        late.mul_(2.0)
    opt.apply_gradients([(g64([1.0]), a), (g64([0.0, 0.0]), late)])
    # Zero gradient: z never moves, so y stays θ at its first sight.
    assert opt.get_slot(late, "momentum").tolist() == [6.0, 8.0]
    assert late.tolist() == [6.0, 8.0]


def test_first_step_leaves_x_y_and_z_equal():
    # t = 1: w = 1, so x = z and y = (1 - β1) z + β1 z = z (up to rounding).
    var = f64([1.0, -2.0, 0.0])
    opt = SFA(0.1, epsilon=0.0)
    opt.apply_gradients([(g64([2.0, -4.0, 0.5]), var)])
    z = opt.get_slot(var, "momentum")
    # v / (1 - β2) = g² when both use the same float32-rounded β2, so the step is lr·sign(g).
    lr = f32(0.1)
    np.testing.assert_allclose(z.numpy(), [1.0 - lr, -2.0 + lr, -lr], rtol=1e-14)
    np.testing.assert_allclose(var.numpy(), z.numpy(), rtol=1e-15)
    np.testing.assert_allclose(opt.eval_params([var])[0].numpy(), z.numpy(), rtol=1e-14)


# -- the step, against the reference and docs/reference-behaviour.md's properties ---------------------------------------
@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_several_steps_match_spec_formulas(warmup_steps):
    cfg = {"learning_rate": 0.05, "beta_1": 0.7, "beta_2": 0.95, "warmup_steps": warmup_steps}
    theta0 = np.array([[0.3, -1.2], [2.0, 0.0]])
    var = f64(theta0)
    opt = SFA(**cfg)
    ref = REFERENCES["ScheduleFreeAdamW"](**dict(cfg, learning_rate=f32(0.05)))
    y, slots = theta0.copy(), ref.init_slots(theta0)
    # And by hand, straight from docs/reference-behaviour.md Part 2 §3.6 (float32-rounded constants, as Keras 3 on TF).
    b1, b2, eps, lr = f32(0.7), f32(0.95), f32(1e-8), f32(0.05)
    z, v, y_hand = theta0.copy(), np.zeros_like(theta0), theta0.copy()
    for t, g in enumerate(_grads(theta0.shape, 6), start=1):
        opt.apply_gradients([(g64(g), var)])
        y = ref.dense(y, g, slots, t, f32(0.05))
        lr_t = lr * min(t / warmup_steps, 1.0) if warmup_steps else lr
        z_old = z.copy()
        v = v + (g * g - v) * (1 - b2)
        z = z - lr_t * g / (np.sqrt(v / (1 - b2**t)) + eps)
        x = (1 - 1 / t) * ((y_hand - (1 - b1) * z_old) / b1) + (1 / t) * z
        y_hand = (1 - b1) * z + b1 * x
        np.testing.assert_allclose(var.numpy(), y, rtol=1e-12, atol=1e-14, err_msg=f"step {t}")
        np.testing.assert_allclose(y, y_hand, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.get_slot(var, "momentum").numpy(), z, rtol=1e-12)
        np.testing.assert_allclose(opt.get_slot(var, "velocity").numpy(), v, rtol=1e-12)


def test_warmup_scales_the_z_step_linearly():
    # The z step has |Δz| = lr_t on the first step (v̂ = g²); with warmup_steps = 4 that is lr/4.
    for warmup, factor in ((0, 1.0), (4, 0.25), (1, 1.0), (2.5, 0.4)):
        var = f64([1.0])
        opt = SFA(0.1, epsilon=0.0, warmup_steps=warmup)
        opt.apply_gradients([(g64([3.0]), var)])
        z = float(opt.get_slot(var, "momentum"))
        assert z == pytest.approx(1.0 - f32(0.1) * factor, rel=1e-14)


def test_x_is_the_uniform_average_of_the_z_iterates():
    # w = 1/t makes x_t = (z_1 + ... + z_t) / t, whatever the interpolation (docs/reference-behaviour.md Part 2 §3.6).
    var = f64([0.5, -0.25, 2.0])
    opt = SFA(0.2, beta_1=0.6, warmup_steps=2)
    zs = []
    for g in _grads((3,), 5, seed=4):
        opt.apply_gradients([(g64(g), var)])
        zs.append(opt.get_slot(var, "momentum").numpy().copy())
        np.testing.assert_allclose(opt.eval_params()[0].numpy(), np.mean(zs, axis=0), rtol=1e-12)


def test_x_old_uses_z_before_the_update_not_keras_torch_alias():
    # Keras's torch backend reads z_old through an alias of the updated z (docs/reference-behaviour.md Part 2 §3.6): that
    # variant drifts measurably; kerasopt follows the formula.
    theta0 = np.array([0.4, -0.8, 1.5])
    var, opt = f64(theta0), SFA(0.05)
    y_alias, z, v = theta0.copy(), theta0.copy(), np.zeros(3)
    b1, b2, eps, lr = f32(0.9), f32(0.999), f32(1e-8), f32(0.05)
    for t, g in enumerate(_grads((3,), 5, seed=7), start=1):
        opt.apply_gradients([(g64(g), var)])
        v = v + (g * g - v) * (1 - b2)
        z = z - lr * g / (np.sqrt(v / (1 - b2**t)) + eps)
        x = (1 - 1 / t) * ((y_alias - (1 - b1) * z) / b1) + (1 / t) * z  # z_new: the alias bug
        y_alias = (1 - b1) * z + b1 * x
    assert np.max(np.abs(var.numpy() - y_alias)) > 1e-4


def test_float64_uses_float32_rounded_constants_like_keras_on_tf():
    var = f64([1.0, -0.5])
    opt = SFA(0.1, beta_1=0.9, beta_2=0.99, epsilon=0.3)
    grads = _grads((2,), 3, seed=9)
    for g in grads:
        opt.apply_gradients([(g64(g), var)])
    exact = REFERENCES["ScheduleFreeAdamW"](beta_1=0.9, beta_2=0.99, epsilon=0.3)
    exact.beta_1, exact.beta_2, exact.epsilon = 0.9, 0.99, 0.3  # undo the float32 rounding
    y, slots = np.array([1.0, -0.5]), exact.init_slots(np.array([1.0, -0.5]))
    for t, g in enumerate(grads, start=1):
        y = exact.dense(y, g, slots, t, f32(0.1))
    assert not np.allclose(var.numpy(), y, rtol=1e-12, atol=0)
    assert np.allclose(var.numpy(), y, rtol=1e-6)


# -- weight decay: applied by the base to y ------------------------------------------------------
def test_weight_decay_is_applied_to_y_with_the_base_learning_rate():
    # Zero gradients: v = 0, z stays θ₀. Step 1 gives y = z = θ₀ (w = 1). Step 2 decays y to
    # θ₀(1 − ηλ) first, so x_old = θ₀(1 − ηλ/β1), x = θ₀(1 − ηλ/(2β1)) and y = θ₀(1 − ηλ/2),
    # with η the base rate even during warmup (Keras decays with the unwarmed rate).
    lr, wd = 0.5, 0.2
    for warmup in (0, 10):
        var = f64([2.0, -4.0])
        opt = SFA(lr, weight_decay=wd, warmup_steps=warmup)
        for _ in range(2):
            opt.apply_gradients([(g64([0.0, 0.0]), var)])
        assert opt.get_slot(var, "momentum").tolist() == [2.0, -4.0]  # z is not decayed
        expected = np.array([2.0, -4.0]) * (1 - f32(lr) * f32(wd) / 2)
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-12)


def test_weight_decay_exclusion_is_honoured():
    kept, decayed = f64([1.0]), f64([1.0])
    kept_opt = SFA(0.5, weight_decay=0.2)
    kept_opt.exclude_from_weight_decay(var_list=[kept])
    for _ in range(2):
        kept_opt.apply_gradients([(g64([0.0]), kept), (g64([0.0]), decayed)])
    assert float(kept) == 1.0 and float(decayed) < 1.0


# -- evaluation weights helpers (kerasopt addition) ----------------------------------------------
def _trained(seed=11):
    model = torch.nn.Linear(3, 2).double()
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng, dtype=torch.float64))
    opt = SFA(0.05, beta_1=0.8, weight_decay=0.01)
    for _ in range(4):
        x = torch.randn(5, 3, generator=rng, dtype=torch.float64)
        opt.minimize(lambda x=x: (model(x) ** 2).mean(), model)
    return model, opt


def _snapshot(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        [t.clone() for t in opt.variables()],
    )


def _assert_same(a, b):
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)


def test_eval_params_returns_x_and_changes_nothing():
    model, opt = _trained()
    before = _snapshot(model, opt)
    xs = opt.eval_params(model)
    _assert_same(before, _snapshot(model, opt))
    b1 = f32(0.8)
    for p, x in zip(model.parameters(), xs):
        z = opt.get_slot(p, "momentum")
        torch.testing.assert_close(x, (p.detach() - (1 - b1) * z) / b1, rtol=1e-15, atol=0)
        assert x.data_ptr() != p.data_ptr() and not x.requires_grad
    # Default: every variable seen, in first-seen order.
    for x, y in zip(opt.eval_params(), xs):
        assert torch.equal(x, y)
    # A variable never seen has z = θ implicitly: its x is a copy of it.
    fresh = f64([1.0, 2.0])
    (x,) = opt.eval_params([fresh])
    assert x.tolist() == [1.0, 2.0] and x.data_ptr() != fresh.data_ptr()


def test_swap_eval_params_puts_x_in_and_restores_y_exactly():
    model, opt = _trained()
    before = _snapshot(model, opt)
    xs = opt.eval_params(model)
    with opt.swap_eval_params(model) as swapped:
        assert all(a is b for a, b in zip(swapped, model.parameters(), strict=True))
        for p, x in zip(model.parameters(), xs):
            assert torch.equal(p.detach(), x)
    _assert_same(before, _snapshot(model, opt))
    with pytest.raises(RuntimeError, match="boom"), opt.swap_eval_params():
        raise RuntimeError("boom")
    _assert_same(before, _snapshot(model, opt))
    # Training continues exactly as without the swap.
    model2, opt2 = _trained()
    x = torch.ones(5, 3, dtype=torch.float64)
    for m, o in ((model, opt), (model2, opt2)):
        o.minimize(lambda m=m: (m(x) ** 2).mean(), m)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_half_precision_eval_params_keep_dtype():
    var = ko.Variable(torch.tensor([1.0, -1.0], dtype=torch.bfloat16))
    opt = SFA(0.1, beta_2=0.99)
    for _ in range(2):
        opt.apply_gradients([(torch.tensor([0.5, 0.5], dtype=torch.bfloat16), var)])
    (x,) = opt.eval_params()
    assert x.dtype == torch.bfloat16 and torch.isfinite(x).all()
