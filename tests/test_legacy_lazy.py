"""Adagrad, Adadelta, Adamax and Ftrl: constructors, validation, slots, lazy sparse rows, quirks.

The table-driven tests (numerics, engines, errors, config) cover the update rules against the
float64 references; this file checks what is specific to these four (docs/reference-behaviour.md Part 1 §1.4, §1.10).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.specs import BY_NAME, LEGACY_BASE_KEYS


def _opt(name, **kw):
    return getattr(ko.optimizers, name)(**kw)


# -- constructors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "defaults"),
    [(name, BY_NAME[name].default_config) for name in ("Adagrad", "Adadelta", "Adamax")],
)
def test_defaults_and_name(name, defaults):
    opt = _opt(name)
    assert opt.name == name
    cfg = opt.get_config()
    for key, value in defaults.items():
        assert cfg[key] == value
    assert type(ko.optimizers.get(name.lower())).__name__ == name


def test_positional_order():
    assert ko.optimizers.Adagrad(0.1, 0.2, 1e-3, "a").get_config() == {
        "name": "a",
        "learning_rate": 0.1,
        "decay": 0.0,
        "initial_accumulator_value": 0.2,
        "epsilon": 1e-3,
    }
    assert ko.optimizers.Adadelta(0.1, 0.8, 1e-3, "d").get_config()["rho"] == 0.8
    cfg = ko.optimizers.Adamax(0.1, 0.7, 0.8, 1e-3, "x").get_config()
    assert (cfg["beta_1"], cfg["beta_2"], cfg["epsilon"], cfg["name"]) == (0.7, 0.8, 1e-3, "x")
    # Ftrl: `name` comes before l2_shrinkage_regularization_strength and beta.
    cfg = ko.optimizers.Ftrl(0.1, -0.6, 0.3, 0.01, 0.02, "f", 0.03, 0.04).get_config()
    assert cfg == {
        "name": "f",
        "learning_rate": 0.1,
        "decay": 0.0,
        "initial_accumulator_value": 0.3,
        "learning_rate_power": -0.6,
        "l1_regularization_strength": 0.01,
        "l2_regularization_strength": 0.02,
        "beta": 0.04,
        "l2_shrinkage_regularization_strength": 0.03,
    }


def test_ftrl_config_keys_exactly():
    expected = LEGACY_BASE_KEYS | BY_NAME["Ftrl"].own_config_keys
    assert set(ko.optimizers.Ftrl().get_config()) == expected


@pytest.mark.parametrize("name", ["Adagrad", "Adadelta", "Adamax"])
@pytest.mark.parametrize("epsilon", [None, 0, 0.0])
def test_epsilon_or_default_quirk(name, epsilon):
    assert _opt(name, epsilon=epsilon).get_config()["epsilon"] == 1e-7


# -- validation -----------------------------------------------------------------------------
VALIDATION = [
    (
        lambda: ko.optimizers.Adagrad(initial_accumulator_value=-0.1),
        "initial_accumulator_value must be non-negative: -0.1",
    ),
    (
        lambda: ko.optimizers.Ftrl(initial_accumulator_value=-1.0),
        "`initial_accumulator_value` needs to be positive or zero. "
        "Received: initial_accumulator_value=-1.0.",
    ),
    (
        lambda: ko.optimizers.Ftrl(learning_rate_power=0.5),
        "`learning_rate_power` needs to be negative or zero. Received: learning_rate_power=0.5.",
    ),
    (
        lambda: ko.optimizers.Ftrl(l1_regularization_strength=-0.2),
        "`l1_regularization_strength` needs to be positive or zero. "
        "Received: l1_regularization_strength=-0.2.",
    ),
    (
        lambda: ko.optimizers.Ftrl(l2_regularization_strength=-0.3),
        "`l2_regularization_strength` needs to be positive or zero. "
        "Received: l2_regularization_strength=-0.3.",
    ),
    (
        lambda: ko.optimizers.Ftrl(l2_shrinkage_regularization_strength=-0.4),
        "`l2_shrinkage_regularization_strength` needs to be positive or zero. "
        "Received: l2_shrinkage_regularization_strength=-0.4.",
    ),
]


@pytest.mark.parametrize(("make", "message"), VALIDATION, ids=[m[:40] for _, m in VALIDATION])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_zero_values_are_valid():
    ko.optimizers.Adagrad(initial_accumulator_value=0.0)
    ko.optimizers.Ftrl(
        learning_rate_power=0.0,
        initial_accumulator_value=0.0,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
    )


def test_ftrl_assignment_is_validated():
    opt = ko.optimizers.Ftrl()
    with pytest.raises(ValueError, match="`learning_rate_power` needs to be negative or zero"):
        opt.learning_rate_power = 0.1
    with pytest.raises(ValueError, match="`l1_regularization_strength` needs to be positive"):
        opt.l1_regularization_strength = -1.0
    opt.learning_rate_power = -1.0
    assert float(opt.learning_rate_power) == -1.0


# -- slots ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adagrad_accumulator_starts_at_initial_value_exactly(dtype):
    var = ko.Variable(torch.zeros(3, dtype=dtype))
    opt = ko.optimizers.Adagrad(initial_accumulator_value=0.3)
    opt.build([var])
    acc = opt.get_slot(var, "accumulator")
    assert acc.dtype == dtype
    assert torch.equal(acc, torch.full((3,), 0.3, dtype=dtype))  # 0.3 exact, not float32-rounded


def test_slot_creation_order():
    a, b = ko.Variable([1.0, 2.0], name="a"), ko.Variable([3.0], name="b")
    opt = ko.optimizers.Ftrl(initial_accumulator_value=0.5)
    opt.build([a, b])
    # Ftrl creates accumulator, linear for each variable in turn.
    shapes_and_values = [(tuple(w.shape), w.flatten()[0].item()) for w in opt.weights[1:]]
    assert shapes_and_values == [((2,), 0.5), ((2,), 0.0), ((1,), 0.5), ((1,), 0.0)]
    assert opt.get_slot_names() == ["accumulator", "linear"]
    opt = ko.optimizers.Adadelta()
    opt.build([a, b])
    ws = opt.weights[1:]
    # Others create one slot name for every variable, then the next name.
    expected = _pairs(a, b, "accum_grad", "accum_var")
    assert len(ws) == 4
    assert all(w is opt.get_slot(v, s) for w, (v, s) in zip(ws, expected))


def _pairs(a, b, first, second):
    return [(a, first), (b, first), (a, second), (b, second)]


# -- Ftrl numerics ------------------------------------------------------------------------------
def _ftrl_by_hand(var, grad, acc, linear, *, lr, power, l1, l2, beta, shrinkage, use_sqrt):
    """One Ftrl step in the given dtype, TF's kernel order (l1/l2/beta/power as given)."""
    lr_t = torch.tensor(lr, dtype=var.dtype)
    l2_adj = torch.tensor(l2, dtype=var.dtype) + torch.tensor(beta, dtype=var.dtype) / (2.0 * lr_t)
    g_s = grad + 2 * torch.tensor(shrinkage, dtype=var.dtype) * var if shrinkage > 0 else grad
    acc_new = acc + grad * grad
    f = (
        (lambda x: x.sqrt())
        if use_sqrt
        else (lambda x: x.pow(torch.tensor(power, dtype=var.dtype)))
    )
    linear = linear + (g_s - (f(acc_new) - f(acc)) / lr_t * var)
    quad = f(acc_new) / lr_t + 2 * l2_adj
    l1_t = torch.tensor(l1, dtype=var.dtype)
    new = torch.where(linear.abs() > l1_t, (linear.sign() * l1_t - linear) / quad, 0.0)
    return new, acc_new, linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"learning_rate_power": 0.0},
        {"learning_rate_power": -0.75, "l1_regularization_strength": 0.25},
        {
            "l2_regularization_strength": 0.125,
            "beta": 0.5,
            "l2_shrinkage_regularization_strength": 0.1,
        },
    ],
    ids=["sqrt", "power0", "pow", "l2-beta-shrinkage"],
)
def test_ftrl_step_is_tf_kernel_bit_for_bit(kw, dtype):
    start = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=dtype)
    grad = torch.tensor([0.3, -0.2, 1.5, 0.0], dtype=dtype)
    var = ko.Variable(start.clone())
    opt = ko.optimizers.Ftrl(learning_rate=0.5, **kw)
    opt.apply_gradients([(grad, var)])
    power = float(np.float32(-kw.get("learning_rate_power", -0.5)))
    new, acc, linear = _ftrl_by_hand(
        start,
        grad,
        torch.full((4,), 0.1, dtype=dtype),
        torch.zeros(4, dtype=dtype),
        lr=0.5,
        power=power,
        l1=float(np.float32(kw.get("l1_regularization_strength", 0.0))),
        l2=float(np.float32(kw.get("l2_regularization_strength", 0.0))),
        beta=float(np.float32(kw.get("beta", 0.0))),
        # a plain attribute, but TF's `tf.cast(shrinkage, dtype)` goes through float32 too
        shrinkage=float(np.float32(kw.get("l2_shrinkage_regularization_strength", 0.0))),
        use_sqrt=power == 0.5,
    )
    assert torch.equal(var.detach(), new)
    assert torch.equal(opt.get_slot(var, "accumulator"), acc)
    assert torch.equal(opt.get_slot(var, "linear"), linear)


def test_ftrl_power_zero_has_no_sigma_term():
    var = ko.Variable([2.0])
    opt = ko.optimizers.Ftrl(learning_rate=0.5, learning_rate_power=0.0)
    opt.apply_gradients([(torch.tensor([1.0]), var)])
    # acc^0 == 1 before and after: linear = g, quad = 1 / lr, var = -linear * lr.
    assert opt.get_slot(var, "linear").item() == 1.0
    assert var.item() == -0.5


def test_ftrl_shrinkage_only_in_linear_and_l1_zeroes():
    var = ko.Variable([1.0, 1.0])
    opt = ko.optimizers.Ftrl(
        learning_rate=1.0,
        learning_rate_power=0.0,
        initial_accumulator_value=0.0,
        l1_regularization_strength=1.5,
        l2_shrinkage_regularization_strength=0.5,
    )
    opt.apply_gradients([(torch.tensor([1.0, -1.0]), var)])
    # g_s = g + 2 * 0.5 * var = [2, 0]; the accumulator sees the plain gradient.
    assert opt.get_slot(var, "linear").tolist() == [2.0, 0.0]
    assert opt.get_slot(var, "accumulator").tolist() == [1.0, 1.0]
    # |linear| > l1 only for the first: (sign * l1 - linear) / quad = (1.5 - 2) / 1.
    assert var.tolist() == [-0.5, 0.0]


@pytest.mark.parametrize("power", [-0.5, -0.7])
def test_ftrl_callable_learning_rate_power_matches_number(power):
    a, b = ko.Variable([1.0, -2.0, 0.5]), ko.Variable([1.0, -2.0, 0.5])
    opt_a = ko.optimizers.Ftrl(learning_rate=0.3, learning_rate_power=power)
    opt_b = ko.optimizers.Ftrl(learning_rate=0.3, learning_rate_power=lambda: power)
    for step in range(3):
        g = torch.tensor([0.5, -0.25, 1.0]) * (step + 1)
        opt_a.apply_gradients([(g, a)])
        opt_b.apply_gradients([(g, b)])
    assert torch.equal(a.detach(), b.detach())


def test_ftrl_plain_shrinkage_is_tf_cast_in_float64():
    opt = ko.optimizers.Ftrl(l2_shrinkage_regularization_strength=0.1, beta=0.1)
    var = ko.Variable(torch.ones(2, dtype=torch.float64))
    opt.apply_gradients([(torch.ones(2, dtype=torch.float64), var)])
    c = opt._fallback_apply_state(var.device, var.dtype)
    # a plain attribute (get_config gives 0.1), but TF's `_prepare_local` applies
    # `tf.cast(0.1, float64)`, which rounds through float32 (tests/test_tf_golden.py)
    assert opt.l2_shrinkage_regularization_strength == 0.1
    assert c.two_l2_shrinkage.item() == 2 * float(np.float32(0.1))
    assert float(opt.beta) == float(np.float32(0.1))  # hyperparameter: float32-stored


# -- Adamax sparse rounding -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamax_sparse_uses_the_weighted_sum_line(dtype):
    rng = np.random.default_rng(0)
    start = torch.tensor(rng.uniform(-1, 1, (5, 3)), dtype=dtype)
    rows = torch.tensor([3, 0])
    steps = [torch.tensor(rng.uniform(-1, 1, (2, 3)), dtype=dtype) for _ in range(3)]
    var = ko.Variable(start.clone())
    opt = ko.optimizers.Adamax(learning_rate=0.05, beta_1=0.8, beta_2=0.9)
    m, v, expected = torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype), start[rows]
    b1, b2 = torch.tensor(0.8, dtype=torch.float32).to(dtype), torch.tensor(0.9).to(dtype)
    lr, eps = torch.tensor(0.05).to(dtype), torch.tensor(1e-7, dtype=dtype)
    for t, g in enumerate(steps, start=1):
        opt.apply_gradients([(ko.IndexedSlices(g, rows, (5, 3)), var)])
        m = m * b1 + g * (1 - b1)
        v = torch.maximum(v * b2, g.abs())
        expected = expected + (-lr / (1 - b1**t)) * (m / (v + eps))
    assert torch.equal(var.detach()[rows], expected)
    assert torch.equal(opt.get_slot(var, "m")[rows], m)
    assert torch.equal(opt.get_slot(var, "v")[rows], v)
    untouched = torch.tensor([1, 2, 4])
    assert torch.equal(var.detach()[untouched], start[untouched])


# -- lazy sparse semantics ----------------------------------------------------------------------
# A config per optimizer of this file for the sparse tests; which of them are lazy (only the
# indexed rows of the variable and its slots change) is the table's statement, OptSpec.lazy_rows.
LAZY_CONFIGS = {
    "Adagrad": {"learning_rate": 0.1},
    "Adadelta": {"learning_rate": 1.0, "epsilon": 1e-2},
    "Adamax": {"learning_rate": 0.05},
    "Ftrl": {"learning_rate": 0.1, "l1_regularization_strength": 0.05},
}
LAZY = [name for name, config in LAZY_CONFIGS.items() if BY_NAME[name].lazy_rows_for(config)]


@pytest.mark.parametrize("name", LAZY)
def test_sparse_touches_only_indexed_rows(name):
    start = torch.tensor(np.random.default_rng(1).uniform(-1, 1, (6, 2)), dtype=torch.float32)
    var = ko.Variable(start.clone())
    opt = _opt(name, **LAZY_CONFIGS[name])
    opt.build([var])
    slots_before = {s: opt.get_slot(var, s).clone() for s in opt.get_slot_names()}
    g = ko.IndexedSlices(torch.ones(3, 2), torch.tensor([1, 4, 1]), (6, 2))
    opt.apply_gradients([(g, var)])
    untouched = torch.tensor([0, 2, 3, 5])
    assert torch.equal(var.detach()[untouched], start[untouched])
    assert not torch.equal(var.detach()[1], start[1])
    for s, before in slots_before.items():
        assert torch.equal(opt.get_slot(var, s)[untouched], before[untouched]), s


@pytest.mark.parametrize("name", ["Adagrad", "Adadelta", "Ftrl"])
def test_sparse_rows_equal_dense_rule_on_those_rows(name):
    """'Lazy rows, same lines': a sparse step is the dense step of the indexed rows, bit for bit."""
    rng = np.random.default_rng(2)
    start = torch.tensor(rng.uniform(-1, 1, (5, 3)), dtype=torch.float32)
    rows = torch.tensor([4, 1])
    var = ko.Variable(start.clone())
    part = ko.Variable(start[rows].clone())
    opt_s, opt_d = _opt(name, **LAZY_CONFIGS[name]), _opt(name, **LAZY_CONFIGS[name])
    for _ in range(3):
        g = torch.tensor(rng.uniform(-1, 1, (2, 3)), dtype=torch.float32)
        opt_s.apply_gradients([(ko.IndexedSlices(g, rows, (5, 3)), var)])
        opt_d.apply_gradients([(g, part)])
    assert torch.equal(var.detach()[rows], part.detach())
    for s in opt_s.get_slot_names():
        assert torch.equal(opt_s.get_slot(var, s)[rows], opt_d.get_slot(part, s))


@pytest.mark.parametrize("name", LAZY)
def test_duplicate_indices_are_summed_first(name):
    a, b = ko.Variable(torch.ones(4, 2)), ko.Variable(torch.ones(4, 2))
    opt_a, opt_b = _opt(name, **LAZY_CONFIGS[name]), _opt(name, **LAZY_CONFIGS[name])
    dup = ko.IndexedSlices(torch.tensor([[0.5, 1.0], [0.25, -1.0]]), torch.tensor([2, 2]), (4, 2))
    once = ko.IndexedSlices(torch.tensor([[0.75, 0.0]]), torch.tensor([2]), (4, 2))
    opt_a.apply_gradients([(dup, a)])
    opt_b.apply_gradients([(once, b)])
    assert torch.equal(a.detach(), b.detach())
