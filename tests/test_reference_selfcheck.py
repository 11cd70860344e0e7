"""Self-checks of the NumPy references on hand-computed cases (no kerasopt, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import REFERENCES
from tests.specs import BY_NAME, OPTIMIZERS


def make(name, **config):
    return REFERENCES[name](**config)


def step(ref, var, grad, t=1, lr=0.1, slots=None):
    var = np.asarray(var, np.float64)
    slots = ref.init_slots(var) if slots is None else slots
    return ref.dense(var, np.asarray(grad, np.float64), slots, t, lr), slots


def test_all_registered():
    assert set(REFERENCES) == {
        *("SGD", "Adam", "Adamax", "Adagrad", "Adadelta", "RMSprop", "Nadam", "Ftrl"),
        *("AdamW", "Lion", "Lamb", "Adafactor", "Muon", "ScheduleFreeAdamW"),
    }


def test_sgd_quadratic():
    # loss = 3*v1^2 + 2*v2^2 at (2, 5): grads (12, 20); lr=0.1 -> (0.8, 3.0)
    var, _ = step(make("SGD"), [2.0, 5.0], [12.0, 20.0])
    np.testing.assert_allclose(var, [0.8, 3.0], rtol=0, atol=1e-15)


def test_sgd_momentum_and_nesterov():
    ref = make("SGD", momentum=0.9)
    var, slots = step(ref, [1.0], [1.0])
    var, slots = step(ref, var, [1.0], slots=slots)
    np.testing.assert_allclose(slots["momentum"], [-0.19])  # -0.1*0.9 - 0.1
    np.testing.assert_allclose(var, [1.0 - 0.1 - 0.19])
    var, _ = step(make("SGD", momentum=0.9, nesterov=True), [1.0], [1.0])
    np.testing.assert_allclose(var, [1.0 + (-0.1 * 0.9 - 0.1)])


def test_adam_first_step_is_lr_sign():
    g = np.array([3.0, -0.5, 1.0, -200.0])
    var, _ = step(make("Adam"), np.zeros(4), g, lr=0.01)
    np.testing.assert_allclose(var, -0.01 * np.sign(g), rtol=1e-5)


def test_adam_amsgrad_uses_vhat():
    ref = make("Adam", amsgrad=True)
    assert ref.slot_names == ("m", "v", "vhat")
    var, slots = step(ref, [0.0], [10.0])
    step(ref, var, [0.0], t=2, slots=slots)
    assert slots["vhat"][0] > slots["v"][0]


def f32(x):
    """A Python float as TF's ``tf.cast`` hands it to a float64 variable: float32-rounded."""
    return float(np.float32(x))


def test_lamb_zero_var_step():
    var, _ = step(make("Lamb"), [0.0], [1.0], lr=0.1)
    # trust ratio 1 (||var|| = 0): the step is lr * u, u = m_hat / (sqrt(v_hat) + eps), ~1;
    # the bias corrections use float32-rounded betas (Keras 3's ops.cast on TF)
    u = (0.1 / (1 - f32(0.9))) / (np.sqrt((1 - 0.999) / (1 - f32(0.999))) + 1e-7)
    np.testing.assert_allclose(var, [-0.1 * u], rtol=1e-14)
    np.testing.assert_allclose(var, [-0.1], rtol=1e-5)


def test_lion_step_is_lr_sign():
    ref = make("Lion")
    var, slots = step(ref, [1.0, 1.0, 1.0], [2.0, -3.0, 0.0], lr=0.1)
    np.testing.assert_allclose(var, [0.9, 1.1, 1.0], atol=1e-15)
    # betas float32-rounded, as TF's tf.cast gives them
    np.testing.assert_allclose(slots["m"], (1 - f32(0.99)) * np.array([2.0, -3.0, 0.0]), rtol=1e-15)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_epsilon_placement(centered):
    # rho=0.9, g=1, eps=1: rms = 0.1 (mg = 0.1 if centered)
    denom = 0.1 - (0.01 if centered else 0.0)
    outside, _ = step(make("RMSprop", epsilon=1.0, centered=centered), [0.0], [1.0])
    np.testing.assert_allclose(outside, [-0.1 / (np.sqrt(denom) + 1.0)])
    inside, _ = step(make("RMSprop", epsilon=1.0, momentum=0.5, centered=centered), [0.0], [1.0])
    np.testing.assert_allclose(inside, [-0.1 / np.sqrt(denom + 1.0)])


def test_conditional_slot_names():
    assert make("SGD").slot_names == ()
    assert make("SGD", momentum=0.5).slot_names == ("momentum",)
    assert make("RMSprop").slot_names == ("rms",)
    assert make("RMSprop", momentum=0.1, centered=True).slot_names == ("rms", "momentum", "mg")
    assert make("Ftrl").slot_names == ("accumulator", "linear")
    assert make("AdamW", amsgrad=True).slot_names == ("m", "v", "vhat")


def test_epsilon_none_or_zero_becomes_1e7():
    for eps in (None, 0, 0.0):
        assert make("Adam", epsilon=eps).epsilon == 1e-7
        assert make("RMSprop", epsilon=eps).epsilon == 1e-7


@pytest.mark.parametrize("name", ["Adagrad", "Ftrl"])
def test_accumulator_starts_at_0_1(name):
    slots = make(name).init_slots(np.zeros((2, 3)))
    np.testing.assert_array_equal(slots["accumulator"], np.full((2, 3), 0.1))


def test_adagrad_first_step():
    var, _ = step(make("Adagrad"), [0.0], [1.0])
    np.testing.assert_allclose(var, [-0.1 / (np.sqrt(1.1) + 1e-7)])


def test_ftrl_first_step_closed_form():
    # var=0, no regularisation, p=0.5: linear = g, var = -g*lr/sqrt(0.1 + g^2)
    var, slots = step(make("Ftrl"), [0.0, 0.0], [1.0, -2.0])
    np.testing.assert_allclose(var, [-0.1 / np.sqrt(1.1), 0.2 / np.sqrt(4.1)])
    np.testing.assert_allclose(slots["accumulator"], [1.1, 4.1])
    var, _ = step(make("Ftrl", l1_regularization_strength=1.5), [0.0, 0.0], [1.0, -2.0])
    assert var[0] == 0.0 and var[1] != 0.0
    # learning_rate_power=0: the sigma term vanishes, quad = 1/lr
    var, slots = step(make("Ftrl", learning_rate_power=0.0), [1.0], [1.0])
    np.testing.assert_allclose(slots["linear"], [1.0])
    np.testing.assert_allclose(var, [-0.1])


# Reference configs for the sparse self-checks. Which are lazy (a sparse step changes only the
# indexed rows of the variable and its slots) is the table's statement: OptSpec.lazy_rows.
SPARSE_CASES = [
    ("SGD", {}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("Adagrad", {}),
    ("Adadelta", {}),
    ("Adamax", {}),
    ("Ftrl", {"l1_regularization_strength": 0.01, "l2_shrinkage_regularization_strength": 0.1}),
    ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adam", {"amsgrad": True}),
    ("RMSprop", {"centered": True}),
    ("Nadam", {}),
    ("AdamW", {}),
    ("Lion", {}),
    ("Lamb", {}),
    ("Adafactor", {}),
]
LAZY = [(name, config) for name, config in SPARSE_CASES if BY_NAME[name].lazy_rows_for(config)]
# Own sparse rules that are not lazy (by default): the moments decay over every row.
DENSE_DECAY = sorted(s.name for s in OPTIMIZERS if s.sparse and not s.lazy_rows_for({}))


def _rand_state(ref, rng, shape=(5, 3)):
    var = rng.normal(size=shape)
    slots = ref.init_slots(var)
    for k in slots:  # non-trivial, valid slot values (positive; mg*mg < rms)
        low, high = (-0.2, 0.2) if k == "mg" else (0.1, 1.0)
        slots[k] = slots[k] + rng.uniform(low, high, size=slots[k].shape)
    return var, slots


@pytest.mark.parametrize(("name", "config"), LAZY)
def test_lazy_sparse_matches_dense_on_rows(name, config):
    rng = np.random.default_rng(0)
    ref = make(name, **config)
    var, slots = _rand_state(ref, rng)
    idx, vals = np.array([3, 0]), rng.normal(size=(2, 3))
    sslots = {k: v.copy() for k, v in slots.items()}
    new = ref.sparse(var, idx, vals, sslots, 2, 0.1)
    assert np.all(np.isfinite(new))
    rows = {k: v[[0, 3]].copy() for k, v in slots.items()}
    expect = ref.dense(var[[0, 3]], vals[::-1], rows, 2, 0.1)
    np.testing.assert_allclose(new[[0, 3]], expect, rtol=1e-14)
    untouched = [1, 2, 4]
    np.testing.assert_array_equal(new[untouched], var[untouched])
    for k in slots:
        np.testing.assert_array_equal(sslots[k][untouched], slots[k][untouched])
        np.testing.assert_allclose(sslots[k][[0, 3]], rows[k], rtol=1e-14)


@pytest.mark.parametrize(("name", "config"), SPARSE_CASES)
def test_duplicate_indices_are_summed(name, config):
    rng = np.random.default_rng(1)
    ref_a, ref_b = make(name, **config), make(name, **config)
    var, slots = _rand_state(ref_a, rng)
    a, b = rng.normal(size=(2, 3))
    sa = {k: v.copy() for k, v in slots.items()}
    sb = {k: v.copy() for k, v in slots.items()}
    out_a = ref_a.sparse(var, np.array([2, 4, 2]), np.stack([a, b, a]), sa, 3, 0.05)
    out_b = ref_b.sparse(var, np.array([4, 2]), np.stack([b, 2 * a]), sb, 3, 0.05)
    assert np.all(np.isfinite(out_a))
    np.testing.assert_allclose(out_a, out_b, rtol=1e-14)
    for k in slots:
        np.testing.assert_allclose(sa[k], sb[k], rtol=1e-14)


@pytest.mark.parametrize("name", DENSE_DECAY)
def test_dense_decay_sparse(name):
    """m/v/rms decay over all rows; Adam moves every row, Nadam/RMSprop only the indexed ones."""
    rng = np.random.default_rng(2)
    ref, dref = make(name), make(name)
    var, slots = _rand_state(ref, rng, (4, 2))
    dslots = {k: v.copy() for k, v in slots.items()}
    vals = rng.normal(size=(1, 2))
    out = ref.sparse(var, np.array([1]), vals, slots, 2, 0.1)
    grad = np.zeros_like(var)
    grad[1] = vals[0]
    dense = dref.dense(var, grad, dslots, 2, 0.1)
    for k in slots:  # state equals the dense rule's with zero gradient rows
        np.testing.assert_allclose(slots[k], dslots[k], rtol=1e-14)
    np.testing.assert_allclose(out[1], dense[1], rtol=1e-14)
    if name == "Adam":
        np.testing.assert_allclose(out, dense, rtol=1e-14)
    else:
        np.testing.assert_array_equal(out[[0, 2, 3]], var[[0, 2, 3]])


def test_nadam_momentum_cache_advances_once_per_step():
    ref = make("Nadam")
    assert ref.momentum_cache == 1.0
    s1, s2 = ref.init_slots(np.zeros(2)), ref.init_slots(np.zeros(3))
    mu = [0.9 * (1 - 0.5 * f32(0.96) ** (0.004 * t)) for t in (1, 2, 3)]
    ref.begin_step(1)
    ref.dense(np.zeros(2), np.ones(2), s1, 1, 0.001)
    ref.dense(np.zeros(3), np.ones(3), s2, 1, 0.001)
    assert ref.momentum_cache == pytest.approx(mu[0], rel=1e-15)
    ref.begin_step(2)
    ref.sparse(np.zeros(2), np.array([0]), np.ones((1,)), s1, 2, 0.001)
    assert ref.momentum_cache == pytest.approx(mu[0] * mu[1], rel=1e-15)
    assert make("Nadam", decay=0.01).schedule_decay == 0.01
    assert make("Nadam", schedule_decay=0.02, decay=0.01).schedule_decay == 0.02


def test_nadam_first_step_by_hand():
    ref = make("Nadam")
    ref.begin_step(1)
    mu1, mu2 = (0.9 * (1 - 0.5 * f32(0.96) ** (0.004 * t)) for t in (1, 2))
    g = 2.0
    m_bar = (1 - mu1) * g / (1 - mu1) + mu2 * (0.1 * g) / (1 - mu1 * mu2)
    var, _ = step(ref, [0.0], [g], lr=0.001)
    np.testing.assert_allclose(var, [-0.001 * m_bar / (g + 1e-7)], rtol=1e-12)


def test_adafactor_factored_shapes_and_first_step():
    ref = make("Adafactor")
    var = np.random.default_rng(3).normal(size=(2, 3, 4))
    slots = ref.init_slots(var)
    assert {k: v.shape for k, v in slots.items()} == {"r": (2, 3), "c": (2, 4), "v": (2, 3, 4)}
    assert set(ref.init_slots(np.zeros(5))) == {"v"}
    # a rank-1 gradient of constant magnitude: v = g^2 (beta2_hat = 0 at t=1), |u| = 1
    new, _ = step(ref, np.full(4, 2.0), [1.0, -1.0, 1.0, -1.0], lr=0.5)
    np.testing.assert_allclose(new, 2.0 - 2.0 * 0.5 * np.array([1, -1, 1, -1]), rtol=1e-14)
    # rank 2, rank-one g^2: the factored v reproduces g^2 exactly
    g = np.outer([1.0, 2.0], [1.0, 3.0, 0.5])
    new, slots = step(ref, np.zeros((2, 3)), g, t=1, lr=0.01)
    np.testing.assert_allclose(slots["v"], g * g, rtol=1e-12)
    # alpha = max(epsilon_2, RMS(0)) * lr, epsilon_2 float32-rounded (tf_keras's tf.cast)
    np.testing.assert_allclose(new, -f32(1e-3) * 0.01 * np.sign(g), rtol=1e-12)


def test_muon_routing_and_orthogonalisation():
    ref = make("Muon", exclude_layers=["out_"])
    w = np.zeros((4, 6))
    assert ref.adamw_path(w, "tok_embedding/embeddings")
    assert ref.adamw_path(w, "out_dense/kernel")
    assert ref.adamw_path(np.zeros(6), "out_dense/bias")
    assert not ref.adamw_path(w, "hidden/kernel")
    assert set(ref.init_slots(w, name="hidden/kernel")) == {"momentum"}
    assert set(ref.init_slots(w, name="tok_embedding")) == {"momentum", "velocity"}
    assert not make("Muon", exclude_embeddings=False).adamw_path(w, "embedding")
    g = np.random.default_rng(4).normal(size=(6, 4))  # rows > cols: transposed inside
    o = ref.newton_schulz(g)
    assert o.shape == g.shape
    sv = np.linalg.svd(o, compute_uv=False)
    assert np.all((sv > 0.5) & (sv < 1.5))
    slots = ref.init_slots(np.zeros((6, 4)), name="hidden/kernel")
    expected = -0.1 * ref.newton_schulz(g + 0.95 * g) * np.sqrt(6) * 0.2
    np.testing.assert_allclose(ref.dense(np.zeros((6, 4)), g, slots, 1, 0.1), expected)
    # AdamW path: first step is lr*adam_lr_ratio*sign(g)
    ref2 = make("Muon", adam_lr_ratio=0.5)
    new = ref2.dense(np.zeros(3), np.array([1.0, -2.0, 3.0]), ref2.init_slots(np.zeros(3)), 1, 0.1)
    np.testing.assert_allclose(new, [-0.05, 0.05, -0.05], rtol=1e-5)
