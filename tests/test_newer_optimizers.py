"""AdamW, Lion, Lamb and Adafactor (docs/reference-behaviour.md Part 2 §3.1–§3.4): what the table does not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.specs import BY_NAME, KERAS3_BASE_KEYS

# This file's optimizers (docs/reference-behaviour.md Part 2 §3.1–§3.4); what is known of each is in tests/specs.py.
NEWER = sorted(["AdamW", "Lion", "Lamb", "Adafactor"])


def f64(values):
    return ko.Variable(np.asarray(values, dtype=np.float64))


def g64(values):
    return torch.tensor(values, dtype=torch.float64)


# -- shared: names, registry, Keras 3 config -------------------------------------------------
@pytest.mark.parametrize("name", NEWER)
def test_get_by_name_and_default_name(name):
    opt = ko.optimizers.get(name.lower())
    assert type(opt).__name__ == name
    assert opt.name == name


@pytest.mark.parametrize("name", NEWER)
def test_config_has_keras3_base_keys_and_round_trips(name):
    opt = getattr(ko.optimizers, name)(learning_rate=0.5, clipvalue=1.0, use_ema=True)
    cfg = opt.get_config()
    assert set(cfg) == KERAS3_BASE_KEYS | BY_NAME[name].own_config_keys
    assert cfg["clipvalue"] == 1.0 and cfg["use_ema"] is True and cfg["learning_rate"] == 0.5
    assert type(opt).from_config(cfg).get_config() == cfg


@pytest.mark.parametrize("name", [n for n in NEWER if not BY_NAME[n].sparse])
def test_sparse_gradient_is_densified(name):
    dense_var = f64([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    sparse_var = f64(dense_var.numpy())
    opt_d = getattr(ko.optimizers, name)(learning_rate=0.1)
    opt_s = getattr(ko.optimizers, name)(learning_rate=0.1)
    for step in range(3):
        values = g64([[0.5 + step, -1.0], [2.0, 0.25]])
        indices = torch.tensor([2, 0])
        dense = torch.zeros(3, 2, dtype=torch.float64).index_add_(0, indices, values)
        opt_d.apply_gradients([(dense, dense_var)])
        opt_s.apply_gradients([(ko.IndexedSlices(values, indices, (3, 2)), sparse_var)])
    assert torch.equal(dense_var.detach(), sparse_var.detach())


# -- AdamW -------------------------------------------------------------------------------------
def test_adamw_weight_decay_none_is_rejected():
    with pytest.raises(ValueError) as info:
        ko.optimizers.AdamW(weight_decay=None)
    assert str(info.value) == "Argument `weight_decay` must be a float. Received: weight_decay=None"


def test_adamw_positional_order_and_epsilon_as_given():
    opt = ko.optimizers.AdamW(0.01, 0.1, 0.8, 0.99, 0.0, True, "w")
    assert (opt.weight_decay, opt.beta_1, opt.beta_2, opt.epsilon, opt.amsgrad) == (
        0.1,
        0.8,
        0.99,
        0.0,
        True,
    )
    assert opt.name == "w" and float(opt.learning_rate) == pytest.approx(0.01)
    assert isinstance(opt, ko.optimizers.Adam)  # Keras: AdamW is a thin subclass of Adam


def test_adamw_is_adam_after_decoupled_decay_bitwise():
    # Betas and rates exactly representable in float32, so Adam's float32 hyperparameters and
    # AdamW's exact floats coincide: AdamW = decay θ(1 − ηλ), then Adam's step.
    lr, wd = 0.25, 0.5
    a, b = f64([1.0, -2.0, 0.5]), f64([1.0, -2.0, 0.5])
    adamw = ko.optimizers.AdamW(lr, wd, beta_1=0.5, beta_2=0.75, epsilon=1e-3)
    adam = ko.optimizers.Adam(lr, beta_1=0.5, beta_2=0.75, epsilon=1e-3)
    for step in range(3):
        g = g64([0.3, -0.1 * step, 2.0])
        adamw.apply_gradients([(g, a)])
        with torch.no_grad():
            b.sub_(b * wd * lr)
        adam.apply_gradients([(g.clone(), b)])
        assert torch.equal(a.detach(), b.detach())


def test_adamw_first_step_closed_form_with_tf_beta_rounding():
    theta0, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.7, 2.0])
    var = f64(theta0)
    opt = ko.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1)
    opt.apply_gradients([(g64(g), var)])
    lr = float(np.float32(0.01))  # only the learning rate is float32-stored
    b1, b2, eps = 0.9, 0.999, 1e-7  # Python floats: exact in `1 - beta` and epsilon ...
    m, v = g * (1 - b1), g * g * (1 - b2)
    # ... but TF's `tf.pow(tf.cast(beta, float64), t)` rounds beta to float32 first
    alpha = lr * np.sqrt(1 - np.float32(b2).item()) / (1 - np.float32(b1).item())
    expected = theta0 * (1 - lr * float(np.float32(0.1))) - (m * alpha) / (np.sqrt(v) + eps)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-14)
    assert opt.get_slot(var, "m").numpy().tolist() == (g * (1 - b1)).tolist()


def test_adamw_slots_interleaved_then_vhat_and_keras3_aliases():
    a, b = ko.Variable([1.0, 2.0]), ko.Variable([[3.0]])
    opt = ko.optimizers.AdamW(amsgrad=True)
    opt.apply_gradients([(torch.ones(2), a), (torch.ones(1, 1), b)])
    expected = [opt.get_slot(a, "m"), opt.get_slot(a, "v"), opt.get_slot(b, "m")]
    expected += [opt.get_slot(b, "v"), opt.get_slot(a, "vhat"), opt.get_slot(b, "vhat")]
    assert all(x is y for x, y in zip(opt.variables()[1:], expected, strict=True))
    for alias, slot in (("momentum", "m"), ("velocity", "v"), ("velocity_hat", "vhat")):
        assert opt.get_slot(a, alias) is opt.get_slot(a, slot)


def test_adamw_exclude_from_weight_decay():
    kernel, bias = f64([2.0]), f64([2.0])
    opt = ko.optimizers.AdamW(learning_rate=0.5, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_list=[bias])
    opt.apply_gradients([(g64([0.0]), kernel), (g64([0.0]), bias)])
    assert float(kernel) == 2.0 * (1 - 0.25)  # zero gradient: only the decay moves it
    assert float(bias) == 2.0


# -- Lion --------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta_1", [0.0, -0.5, 1.5])
def test_lion_beta_1_outside_range_is_rejected(beta_1):
    with pytest.raises(ValueError) as info:
        ko.optimizers.Lion(beta_1=beta_1)
    assert str(info.value) == (
        "Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer degenerates "
        f"to SignSGD. Received: beta_1={beta_1}."
    )


def test_lion_beta_1_one_accepted_and_setter_validates():
    opt = ko.optimizers.Lion(0.01, 1.0, 0.5)
    assert (opt.beta_1, opt.beta_2, float(opt.learning_rate)) == (1.0, 0.5, pytest.approx(0.01))
    with pytest.raises(ValueError, match="degenerates to SignSGD"):
        opt.beta_1 = 0.0
    assert opt.beta_1 == 1.0
    assert ko.optimizers.Lion().get_config()["learning_rate"] == 0.001  # Keras 3's default


def test_lion_step_is_lr_times_sign_and_zero_stays():
    var = f64([1.0, -1.0, 0.5, 0.25])
    opt = ko.optimizers.Lion(learning_rate=0.125)
    g = g64([3.0, -1e-6, 0.0, -2.0])
    opt.apply_gradients([(g, var)])
    assert var.numpy().tolist() == [1.0 - 0.125, -1.0 + 0.125, 0.5, 0.25 + 0.125]
    assert opt.get_slot(var, "momentum") is opt.get_slot(var, "m")
    # TF's tf.cast(beta, float64) rounds the betas to float32 first
    b1, b2 = np.float32(0.9).item(), np.float32(0.99).item()
    np.testing.assert_allclose(opt.get_slot(var, "m").numpy(), (1 - b2) * g.numpy(), rtol=1e-15)
    # Second step: the sign of the interpolation, not of the gradient.
    m = (1 - b2) * g.numpy()
    g2 = np.array([-0.001, 1.0, 0.0, 0.0])
    before = var.numpy().copy()
    opt.apply_gradients([(g64(g2), var)])
    step = np.sign(b1 * m + (1 - b1) * g2) * 0.125
    np.testing.assert_array_equal(var.numpy(), before - step)


# -- Lamb ----------------------------------------------------------------------------------------
def test_lamb_zero_variable_takes_unit_trust_ratio():
    var = f64([0.0])
    ko.optimizers.Lamb(learning_rate=0.1).apply_gradients([(g64([1.0]), var)])
    # r = 1 (‖θ‖ = 0); u = m̂ / (√v̂ + 1e-7) ≈ 1, with the bias corrections' betas
    # float32-rounded as Keras 3's ops.cast on TF gives them (≈ 6.8e-6 from 1 in float64)
    b1, b2 = np.float32(0.9).item(), np.float32(0.999).item()
    u = (0.1 / (1 - b1)) / (np.sqrt((1 - 0.999) / (1 - b2)) + 1e-7)
    assert float(var) == pytest.approx(-np.float32(0.1).item() * u, rel=1e-14)
    assert float(var) == pytest.approx(-0.1, rel=1e-5)


def test_lamb_step_norm_is_lr_times_variable_norm():
    theta0 = np.array([[3.0, 0.0], [0.0, 4.0]])
    var = f64(theta0)
    opt = ko.optimizers.Lamb(learning_rate=0.125)
    opt.apply_gradients([(g64([[0.2, -1.0], [3.0, 0.5]]), var)])
    step = theta0 - var.numpy()
    assert np.linalg.norm(step) == pytest.approx(0.125 * 5.0, rel=1e-12)


def test_lamb_zero_gradient_does_not_move_or_nan():
    var = f64([1.0, 2.0])
    opt = ko.optimizers.Lamb(0.1, 0.8, 0.9, 1e-6)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.8, 0.9, 1e-6)
    opt.apply_gradients([(g64([0.0, 0.0]), var)])
    assert var.numpy().tolist() == [1.0, 2.0]
    assert sorted(opt.get_slot_names()) == ["m", "v"]
    assert opt.get_slot(var, "velocity") is opt.get_slot(var, "v")


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Lamb", "Nadam", "ScheduleFreeAdamW"])
def test_bfloat16_trains_where_tf_would_stop_or_diverge(name):
    # bfloat16(0.999) == 1: computed in bfloat16 (TF), 1 - beta_2^t = 0, so Adam/AdamW/Lamb never
    # move and Nadam/ScheduleFreeAdamW give NaN. kerasopt computes half precision in float32.
    var = ko.Variable(torch.tensor([1.0, -2.0], dtype=torch.bfloat16))
    opt = getattr(ko.optimizers, name)(learning_rate=0.1)
    for _ in range(3):
        opt.apply_gradients([(torch.tensor([0.5, -0.5], dtype=torch.bfloat16), var)])
    moved = var.detach().float() - torch.tensor([1.0, -2.0])
    assert torch.isfinite(moved).all() and (moved[0] < -0.05) and (moved[1] > 0.05), moved
    for slot in opt.variables()[1:]:
        assert torch.isfinite(slot.detach().float()).all()


def test_float16_adafactor_zero_gradient_row_stays_finite():
    # float16: epsilon_1 = 1e-30 underflows to 0 in the half type; one all-zero row then made
    # the factored second moment 0/0 = NaN over the whole tensor.
    var = ko.Variable(torch.full((3, 4), 0.5, dtype=torch.float16))
    grad = torch.ones(3, 4, dtype=torch.float16)
    grad[1] = 0
    opt = ko.optimizers.Adafactor(learning_rate=0.01)
    for _ in range(3):
        opt.apply_gradients([(grad, var)])
    assert torch.isfinite(var).all() and (var[0] < 0.5).all() and (var[1] == 0.5).all()


# -- Adafactor -----------------------------------------------------------------------------------
def test_adafactor_factored_slot_shapes_and_rank_below_two_has_only_v():
    kernel = ko.Variable(torch.ones(2, 3, 4))
    bias, scalar = ko.Variable(torch.ones(4)), ko.Variable(torch.tensor(1.0))
    opt = ko.optimizers.Adafactor()
    opt.apply_gradients(
        [(torch.ones(2, 3, 4), kernel), (torch.ones(4), bias), (torch.tensor(1.0), scalar)]
    )
    assert tuple(opt.get_slot(kernel, "r").shape) == (2, 3)
    assert tuple(opt.get_slot(kernel, "c").shape) == (2, 4)
    assert tuple(opt.get_slot(kernel, "v").shape) == (2, 3, 4)
    assert opt.get_slot(kernel, "velocity") is opt.get_slot(kernel, "v")
    for var in (bias, scalar):
        assert opt.get_slot(var, "v").shape == var.shape
        for name in ("r", "c"):
            with pytest.raises(KeyError, match=f"has no slot '{name}'"):
                opt.get_slot(var, name)
    assert opt.get_slot_names() == ["r", "c", "v"]
    # Created variable by variable: r, c, v of the kernel, then v of the bias and of the scalar.
    expected = [opt.get_slot(kernel, s) for s in ("r", "c", "v")]
    expected += [opt.get_slot(bias, "v"), opt.get_slot(scalar, "v")]
    assert all(x is y for x, y in zip(opt.variables()[1:], expected, strict=True))


def test_adafactor_rank_two_first_step_closed_form():
    theta0 = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])
    g = np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2]])
    var = f64(theta0)
    opt = ko.optimizers.Adafactor(learning_rate=0.01)
    opt.apply_gradients([(g64(g), var)])
    g2 = g * g + 1e-30
    r, c = g2.mean(axis=-1), g2.mean(axis=-2)  # beta_2_t = 1 - 1^d = 0 at t = 1
    v = (r / r.mean())[:, None] * c[None, :]
    u = g / np.sqrt(v)
    u_hat = u / max(1.0, np.sqrt(np.mean(u * u)))
    lr = float(np.float32(0.01))
    expected = theta0 - max(1e-3, np.sqrt(np.mean(theta0**2))) * min(lr, 1.0) * u_hat
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-13)
    np.testing.assert_allclose(opt.get_slot(var, "r").numpy(), r, rtol=1e-15)
    np.testing.assert_allclose(opt.get_slot(var, "c").numpy(), c, rtol=1e-15)


def test_adafactor_relative_step_has_no_numerical_effect():
    results = []
    for relative_step in (True, False):
        var = f64([[1.0, 2.0], [3.0, -4.0]])
        opt = ko.optimizers.Adafactor(5.0, relative_step=relative_step)
        for step in range(4):
            opt.apply_gradients([(g64([[1.0, -0.5], [0.25 * step, 2.0]]), var)])
        results.append(var.detach().clone())
    assert torch.equal(results[0], results[1])


def test_adafactor_step_size_is_capped_by_inverse_sqrt_step():
    # lr = 4 > 1/sqrt(t): rho_t = 1/sqrt(t); RMS(θ) = 1 and |u_hat| = 1 for a rank-1 variable.
    var = f64([1.0, -1.0])
    opt = ko.optimizers.Adafactor(learning_rate=4.0, epsilon_1=0.0)
    moved = []
    for _ in range(3):
        before = var.numpy().copy()
        opt.apply_gradients([(g64([1.0, -1.0]), var)])
        moved.append(float(np.abs(var.numpy() - before)[0]))
        var.assign(np.array([1.0, -1.0]))
    np.testing.assert_allclose(moved, [1.0, 1 / np.sqrt(2), 1 / np.sqrt(3)], rtol=1e-15)


def test_adafactor_positional_order():
    opt = ko.optimizers.Adafactor(0.01, -0.5, 1e-20, 1e-2, 0.5, False, "af")
    got = (opt.beta_2_decay, opt.epsilon_1, opt.epsilon_2, opt.clip_threshold, opt.relative_step)
    assert got == (-0.5, 1e-20, 1e-2, 0.5, False)
    assert opt.name == "af"


# -- no host synchronisation -------------------------------------------------------------------
@pytest.mark.parametrize("name", NEWER)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)])
def test_rule_never_reads_a_value_on_the_host(name, shape):
    """On the meta device any .item()/bool()/float() raises: the rule and prepare stay async."""
    opt = getattr(ko.optimizers, name)()
    meta = torch.device("meta")
    var, grad = torch.empty(shape, device=meta), torch.empty(shape, device=meta)
    opt.build([var])
    c = opt.coefficients(lr_t=torch.empty((), device=meta))
    opt.prepare(c, meta, var.dtype)
    opt.update(var, grad, c=c, **opt._rule_slots(opt._store.record_of(var)))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Lamb", "Adagrad", "RMSprop", "Nadam"])
def test_float32_slots_for_half_precision_variables(name):
    """`slot_dtype="float32"` keeps the slots of bf16 variables in float32: the rule (computed in
    float32 either way) then equals a float32 run whose variable is rounded to bf16 after each
    step, and the slots equal that run's slots exactly."""
    start = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=torch.bfloat16)
    var = ko.Variable(start.clone())
    ref = ko.Variable(start.float())
    opt = getattr(ko.optimizers, name)(learning_rate=0.05, slot_dtype="float32")
    ref_opt = getattr(ko.optimizers, name)(learning_rate=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        g = torch.randn(2, 2, generator=gen).to(torch.bfloat16)
        opt.apply_gradients([(g, var)])
        ref_opt.apply_gradients([(g.float(), ref)])
        with torch.no_grad():
            ref.copy_(ref.to(torch.bfloat16).float())  # what storing in bf16 does
        assert torch.equal(var.float(), ref)
    for slot in opt.get_slot_names():
        assert opt.get_slot(var, slot).dtype == torch.float32
        assert torch.equal(opt.get_slot(var, slot), ref_opt.get_slot(ref, slot)), slot
    assert opt.get_config()["slot_dtype"] == "float32"
    again = type(opt).from_config(opt.get_config())
    assert again.slot_dtype == "float32"
    with pytest.raises(ValueError, match="`slot_dtype` must be None"):
        getattr(ko.optimizers, name)(slot_dtype="float16")
