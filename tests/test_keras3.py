"""kerasopt.keras3: Keras 3's optimizers, checked against

- the float64 NumPy references of tests/reference/keras3.py (every config of the KERAS3 table,
  float64 and float32, dense and sparse steps with duplicate indices, variables and every slot);
- Keras 3.15 itself on TensorFlow (tests/golden/keras3_golden.json, written by
  tools/make_keras3_golden.py): every optimizer variable after every step, float64 at rtol 1e-9;
- the golden values of Keras's own tests, at Keras's tolerances;

plus Keras 3's get_config keys and defaults, argument errors, variables order, LossScaleOptimizer,
the torch.optim front end and the ``kerasopt.optimizers.legacy`` alias.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.keras3_specs import BY_NAME, KERAS3, case_ids, cases
from tests.reference.keras3 import KERAS3_REFERENCES

GOLDEN = json.loads((Path(__file__).parent / "golden" / "keras3_golden.json").read_text())

SHAPES = [(5, 3), (3,), ()]
SPARSE_INDICES = [0, 3, 0, 4]  # row 0 twice; rows 1 and 2 never indexed
DENSE_STEPS, SPARSE_STEPS = 4, 2

# float64: the reference and kerasopt compute the same operations; only their order (and numpy's
# pow vs torch's) differs, a few ulps over six steps.
# float32: kerasopt computes in float32 and the reference in float64 from the same float32
# inputs; the rules divide by square roots of small accumulators, which amplifies float32
# rounding (~6e-8) by up to ~1e2 over six steps.
TOL = {torch.float64: (1e-10, 1e-13), torch.float32: (1e-4, 1e-6)}
TOL_WHOLE_TENSOR32 = (5e-4, 5e-6)  # norms / factored means over the tensor: more terms rounded


def _default(cls: type, arg: str) -> Any:
    return inspect.signature(cls.__init__).parameters[arg].default


def _inputs(dtype: torch.dtype) -> tuple[list[np.ndarray], list[list[Any]]]:
    rng = np.random.default_rng(1234)
    init = [rng.normal(size=s) for s in SHAPES]
    grads: list[list[Any]] = []
    for step in range(DENSE_STEPS + SPARSE_STEPS):
        row: list[Any] = [rng.normal(size=s) * 0.5 for s in SHAPES]
        if step >= DENSE_STEPS:
            row[0] = (np.array(SPARSE_INDICES), rng.normal(size=(len(SPARSE_INDICES), 3)))
        grads.append(row)
    if dtype == torch.float32:  # both sides start from the same float32 numbers
        init = [x.astype(np.float32).astype(np.float64) for x in init]
        grads = [
            [
                (g[0], g[1].astype(np.float32).astype(np.float64))
                if isinstance(g, tuple)
                else g.astype(np.float32).astype(np.float64)
                for g in row
            ]
            for row in grads
        ]
    return init, grads


def _torch_grad(g: Any, shape: tuple[int, ...], dtype: torch.dtype) -> Any:
    if isinstance(g, tuple):
        return ko.IndexedSlices(torch.tensor(g[1], dtype=dtype), torch.tensor(g[0]), shape)
    return torch.tensor(g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_matches_reference(spec: Any, config: dict[str, Any], dtype: torch.dtype) -> None:
    cls = getattr(ko.keras3, spec.name)
    init, grads = _inputs(dtype)
    variables = [
        ko.Variable(torch.tensor(x, dtype=dtype), name=f"v{i}") for i, x in enumerate(init)
    ]
    opt = cls(**config)
    ref = KERAS3_REFERENCES[spec.name](**config)
    ref_vars = [np.array(x, dtype=np.float64) for x in init]
    ref_slots = [ref.init_slots(v) for v in ref_vars]
    lr = float(np.float32(config.get("learning_rate", _default(cls, "learning_rate"))))
    wd = config.get("weight_decay", _default(cls, "weight_decay") if spec.name == "AdamW" else None)
    rtol, atol = TOL[dtype] if spec.elementwise or dtype == torch.float64 else TOL_WHOLE_TENSOR32
    for t, row in enumerate(grads, start=1):
        opt.apply_gradients(
            [(_torch_grad(g, s, dtype), v) for g, s, v in zip(row, SHAPES, variables)]
        )
        ref.begin_step(t)
        for i, g in enumerate(row):
            if wd is not None:
                ref_vars[i] = ref_vars[i] - ref_vars[i] * float(np.float32(wd)) * lr
            if isinstance(g, tuple):
                ref_vars[i] = ref.sparse(ref_vars[i], g[0], g[1], ref_slots[i], t, lr)
            else:
                ref_vars[i] = ref.step(ref_vars[i], g, ref_slots[i], t, lr)
        for i, var in enumerate(variables):
            what = f"step {t} ({'sparse' if t > DENSE_STEPS else 'dense'}), variable {i}"
            got = var.detach().double().numpy()
            np.testing.assert_allclose(got, ref_vars[i], rtol=rtol, atol=atol, err_msg=what)
            assert sorted(ref_slots[i]) == sorted(opt._store.by_id[id(var)].slots), what
            for name, expected in ref_slots[i].items():
                slot = opt.get_slot(var, name).detach().double().numpy()
                np.testing.assert_allclose(
                    slot, expected, rtol=rtol, atol=atol, err_msg=f"{what}, slot {name!r}"
                )


# -- Keras 3.15 itself -------------------------------------------------------------------------
def _golden_inputs() -> tuple[dict[str, Any], Any]:
    import importlib.util

    path = Path(__file__).parent.parent / "tools" / "make_keras3_golden.py"
    spec = importlib.util.spec_from_file_location("make_keras3_golden", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return GOLDEN, module


_GEN = _golden_inputs()[1]
KERAS_CASES = GOLDEN["cases"]


def _keras_case_id(i: int) -> str:
    return f"{KERAS_CASES[i]['optimizer']}-{i}"


@pytest.mark.parametrize("index", range(len(KERAS_CASES)), ids=_keras_case_id)
def test_matches_keras(index: int) -> None:
    """Every variable and optimizer variable, in ``optimizer.variables`` order, after every
    step of Keras 3.15 on TensorFlow: three dense steps, then two with a sparse gradient whose
    indices repeat a row."""
    case = KERAS_CASES[index]
    dtype = torch.float64 if case["dtype"] == "float64" else torch.float32
    config = dict(case["config"])
    if "schedule" in config:
        schedule, schedule_kwargs = config.pop("schedule")
        config["learning_rate"] = getattr(ko.optimizers.schedules, schedule)(**schedule_kwargs)
    opt = getattr(ko.keras3, case["optimizer"])(**config)
    w = ko.Variable(torch.tensor(_GEN.W0, dtype=dtype), name="w")
    b = ko.Variable(torch.tensor(_GEN.B0, dtype=dtype), name="b")
    for i, step in enumerate(case["steps"]):
        if i < 3:
            gw, gb = _GEN.dense_grads(i)
            gw_t: Any = torch.tensor(gw, dtype=dtype)
        else:
            _, gb = _GEN.dense_grads(i)
            gw_t = ko.IndexedSlices(
                torch.tensor(_GEN.sparse_values(i - 3), dtype=dtype),
                torch.tensor(_GEN.SPARSE_INDICES),
                (4, 3),
            )
        opt.apply_gradients([(gw_t, w), (torch.tensor(gb, dtype=dtype), b)])
        assert int(opt.iterations) == step["iterations"]
        ours = [
            v
            for v in opt.variables
            if v.dtype.is_floating_point and getattr(v, "name", None) != "learning_rate"
        ]
        theirs = step["optimizer_variables"]
        assert len(ours) == len(theirs), [n for n, _ in theirs]
        pairs = [("w", w, step["w"]), ("b", b, step["b"])]
        pairs += [(n, o, v) for o, (n, v) in zip(ours, theirs)]
        for name, got, expected in pairs:
            what = f"step {i}: {name}"
            if name not in ("w", "b") and not name.startswith("variable"):
                # a slot: Keras '<var>_<slot>' (Adafactor's r and c: '<var>'), ours '<var>/<slot>'
                assert got.name.replace("/", "_") == name or got.name.split("/")[0] == name, what
            if dtype == torch.float64:
                np.testing.assert_allclose(
                    got.detach().double().numpy(), expected, rtol=1e-9, atol=0, err_msg=what
                )
            else:
                # Keras 3.15 runs Muon on TF in float32 only (float64 raises in its rms_rate
                # product). Newton-Schulz's matmuls round in another order there (oneDNN);
                # kerasopt's own float32 run is ~3.3 float32 eps from its float64 run, Keras's
                # within 3.5 eps of kerasopt's: bound 8 eps of max(1, |x|).
                expected_arr = np.asarray(expected)
                bound = 8 * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(expected_arr))
                diff = np.abs(got.detach().double().numpy() - expected_arr)
                assert np.all(diff <= bound), (what, float(np.max(diff / bound)))


def test_keras_cases_cover_every_optimizer() -> None:
    names = {case["optimizer"] for case in KERAS_CASES}
    assert names == {spec.name for spec in KERAS3}
    failed = [c for c in KERAS_CASES if c.get("sparse_error")]
    # Keras 3.15 fails (GatherV2 out of range) on centered RMSprop's sparse division; those
    # cases compare their dense steps only.
    assert {c["optimizer"] for c in failed} <= {"RMSprop"}


# -- Keras's own tests' golden values ---------------------------------------------------------
KERAS_TESTS = GOLDEN["keras_tests"]


@pytest.mark.parametrize("case", KERAS_TESTS, ids=[c["test"] for c in KERAS_TESTS])
def test_keras_own_golden_values(case: dict[str, Any]) -> None:
    opt = getattr(ko.keras3, case["optimizer"])(**case["config"])
    rtol, atol = case["rtol"], case["atol"]
    if "golden" in case:  # test_correctness_with_golden: ones(10), 0.01, then arange(.1, 1.1, .1)
        x = ko.Variable(torch.ones(10))
        first = torch.full((10,), 0.01)
        grads = torch.arange(0.1, 1.1, 0.1, dtype=torch.float64).float()
        opt.apply_gradients([(first, x)])
        for expected in case["golden"]:
            np.testing.assert_allclose(x.detach().numpy(), expected, rtol=rtol, atol=atol)
            opt.apply_gradients([(grads, x)])
    else:  # test_single_step: one step of lr 0.5
        var = ko.Variable(torch.tensor(case["vars"]))
        opt.apply_gradients([(torch.tensor(case["grads"]), var)])
        np.testing.assert_allclose(var.detach().numpy(), case["expected"], rtol=rtol, atol=atol)


def test_sgd_single_step_variables() -> None:
    """keras/src/optimizers/sgd_test.py::test_single_step's assertions on ``variables``."""
    opt = ko.keras3.SGD(learning_rate=0.5)
    assert len(opt.variables) == 2
    var = ko.Variable([1.0, 2.0, 3.0, 4.0])
    opt.build([var])
    opt.apply_gradients([(torch.tensor([1.0, 6.0, 7.0, 2.0]), var)])
    assert len(opt.variables) == 2
    assert int(opt.variables[0]) == 1 and float(opt.variables[1]) == 0.5


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOLDEN["default_configs"]))
def test_default_config_is_keras(name: str) -> None:
    expected = dict(GOLDEN["default_configs"][name])
    got = getattr(ko.keras3, name)().get_config()
    # Keras uniquifies auto names with a global counter ("adam_3"); kerasopt does not
    assert got.pop("name") == re.sub(r"_\d+$", "", expected.pop("name"))
    if name == "Muon":  # Keras keeps exclude_layers=None as given; kerasopt serialises a list
        assert got.pop("exclude_layers") in ([], None) and expected.pop("exclude_layers") in (
            [],
            None,
        )
    assert got == expected


@pytest.mark.parametrize(("spec", "config"), cases(False), ids=case_ids(False))
def test_config_round_trip(spec: Any, config: dict[str, Any]) -> None:
    cls = getattr(ko.keras3, spec.name)
    opt = cls(**config)
    again = cls.from_config(opt.get_config())
    assert type(again) is cls and again.get_config() == opt.get_config()
    assert "decay" not in opt.get_config()


def test_decay_is_ignored_with_keras_warning() -> None:
    with pytest.warns(UserWarning, match="`decay` is no longer supported"):
        opt = ko.keras3.Adam(learning_rate=0.5, decay=0.5)
    var = ko.Variable([1.0])
    opt.apply_gradients([(torch.tensor([1.0]), var)])
    opt.apply_gradients([(torch.tensor([1.0]), var)])
    plain = ko.keras3.Adam(learning_rate=0.5)
    var2 = ko.Variable([1.0])
    plain.apply_gradients([(torch.tensor([1.0]), var2)])
    plain.apply_gradients([(torch.tensor([1.0]), var2)])
    assert torch.equal(var, var2)


ERRORS = [
    (lambda: ko.keras3.Adam(foo=1), "Argument\\(s\\) not recognized: \\{'foo': 1\\}"),
    (lambda: ko.keras3.SGD(lr=0.1), "Argument\\(s\\) not recognized"),
    (lambda: ko.keras3.SGD(momentum=1), "`momentum` must be a float between \\[0, 1\\]"),
    (lambda: ko.keras3.SGD(momentum=1.5), "`momentum` must be a float between \\[0, 1\\]"),
    (lambda: ko.keras3.SGD(momentum=lambda: 0.5), "`momentum` must be a float"),
    (lambda: ko.keras3.Adam(clipnorm=1.0, clipvalue=1.0), "Only one of `clipnorm`, `clipvalue`"),
    (lambda: ko.keras3.Adam(global_clipnorm=1.0, clipvalue=1.0), "Only one of"),
    (lambda: ko.keras3.Adam(learning_rate=1), "Argument `learning_rate` should be float"),
    (lambda: ko.keras3.AdamW(weight_decay=None), "Argument `weight_decay` must be a float"),
    (lambda: ko.keras3.Lion(beta_1=0.0), "Argument `beta_1` must be in the \\[0, 1\\] range"),
    (
        lambda: ko.keras3.Ftrl(initial_accumulator_value=-0.1),
        "`initial_accumulator_value` needs to be positive or zero",
    ),
    (
        lambda: ko.keras3.Ftrl(learning_rate_power=0.5),
        "`learning_rate_power` needs to be negative or zero",
    ),
    (
        lambda: ko.keras3.Ftrl(l2_shrinkage_regularization_strength=-1.0),
        "`l2_shrinkage_regularization_strength` needs to be positive or zero",
    ),
    (lambda: ko.keras3.Adam(gradient_accumulation_steps=1), "must be an integer >= 2"),
    (lambda: ko.keras3.Adam(use_ema=True, ema_momentum=2.0), "`ema_momentum` must be in"),
    (
        lambda: ko.keras3.LossScaleOptimizer(ko.keras3.SGD(), dynamic=False),
        "no longer supports `dynamic=False`",
    ),
    (
        lambda: ko.keras3.LossScaleOptimizer(ko.keras3.SGD(), clipnorm=1.0),
        "LossScaleOptimizer does not support `clipnorm`",
    ),
    (
        lambda: ko.keras3.LossScaleOptimizer(ko.keras3.SGD(), foo=1),
        "LossScaleOptimizer does not support arguments: `foo`",
    ),
]


@pytest.mark.parametrize(("make", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_constructor_errors_are_value_errors(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_keras3_does_not_check_what_legacy_checks() -> None:
    # Keras 3 validates neither RMSprop's momentum nor a negative Adagrad accumulator
    assert ko.keras3.RMSprop(momentum=1.5).momentum == 1.5
    assert ko.keras3.Adagrad(initial_accumulator_value=-0.1).initial_accumulator_value == -0.1
    with pytest.raises(ValueError):
        ko.optimizers.Adagrad(initial_accumulator_value=-0.1)


@pytest.mark.parametrize("name", [spec.name for spec in KERAS3])
def test_failed_step_changes_nothing(name: str) -> None:
    opt = getattr(ko.keras3, name)()
    w = ko.Variable(torch.ones(3, 2), name="w")
    b = ko.Variable(torch.ones(2), name="b")
    opt.apply_gradients([(torch.full((3, 2), 0.5), w), (torch.full((2,), 0.5), b)])
    before = [t.detach().clone() for t in (w, b, *opt.variables)]
    with pytest.raises(ValueError):
        opt.apply_gradients([(torch.ones(3, 2), w), (torch.ones(5), b)])  # wrong shape for b
    after = [w, b, *opt.variables]
    assert len(after) == len(before)
    for x, y in zip(before, after):
        assert torch.equal(x, y.detach())


# -- variables -----------------------------------------------------------------------------------
def test_variables_order_is_keras() -> None:
    """``[iteration, learning_rate, averages, accumulators, slots by add_optimizer_variables
    call (interleaved within one), optimizer-level variables]``."""
    w, b = ko.Variable(torch.ones(2), name="w"), ko.Variable(torch.ones(3), name="b")
    opt = ko.keras3.Adam(use_ema=True, gradient_accumulation_steps=2, amsgrad=True)
    opt.build([w, b])
    names = [v.name for v in opt.variables]
    assert names == [
        "iter",
        "learning_rate",
        "w/average",
        "b/average",
        "w/gradient_accumulator",
        "b/gradient_accumulator",
        "w/momentum",
        "w/velocity",
        "b/momentum",
        "b/velocity",
        "w/velocity_hat",
        "b/velocity_hat",
    ]
    assert opt.variables() == opt.variables  # TF's method form too
    rms = ko.keras3.RMSprop(momentum=0.5, centered=True)
    rms.build([w, b])
    assert [v.name for v in rms.variables][2:] == [
        "w/velocity",
        "b/velocity",
        "w/momentum",
        "b/momentum",
        "w/average_gradient",
        "b/average_gradient",
    ]
    nadam = ko.keras3.Nadam()
    nadam.build([w, b])
    assert nadam.variables[-1] is nadam._store.opt_weights[0][1]
    assert nadam._store.opt_weights[0][0] == "u_product"
    schedule = ko.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    scheduled = ko.keras3.SGD(learning_rate=schedule)
    assert [v.name for v in scheduled.variables] == ["iter"]


def test_slot_names_are_keras3() -> None:
    expected = {
        "SGD": [],
        "Adam": ["momentum", "velocity"],
        "AdamW": ["momentum", "velocity"],
        "Adamax": ["momentum", "norm"],
        "Adagrad": ["accumulator"],
        "Adadelta": ["accumulated_grad", "accumulated_delta_var"],
        "RMSprop": ["velocity"],
        "Nadam": ["momentum", "velocity"],
        "Ftrl": ["accumulator", "linear"],
        "Lion": ["momentum"],
        "Lamb": ["momentum", "velocity"],
        "Adafactor": ["r", "c", "velocity"],
        "Muon": ["momentum"],
        "ScheduleFreeAdamW": ["momentum", "velocity"],
    }
    assert set(expected) == set(BY_NAME)
    for name, slots in expected.items():
        opt = getattr(ko.keras3, name)()
        opt.build([ko.Variable(torch.ones(2, 2), name="kernel")])
        assert opt.get_slot_names() == slots, name


def test_names_default_to_snake_case() -> None:
    assert ko.keras3.Adam().name == "adam"
    assert ko.keras3.AdamW().name == "adam_w"
    assert ko.keras3.RMSprop().name == "rm_sprop"
    assert ko.keras3.ScheduleFreeAdamW().name == "schedule_free_adam_w"
    assert ko.keras3.Adam(name="mine").name == "mine"


# -- where Keras 3 and legacy differ (a sanity check on the namespaces) ---------------------------
@pytest.mark.parametrize("name", ["RMSprop", "Adagrad", "Nadam"])
def test_keras3_and_legacy_numbers_differ(name: str) -> None:
    updates = []
    for namespace in (ko.keras3, ko.optimizers):
        var = ko.Variable(torch.tensor([1.0, -2.0], dtype=torch.float64))
        kw = {"initial_accumulator_value": 0.0} if name == "Adagrad" else {}
        opt = getattr(namespace, name)(learning_rate=0.1, **kw)
        for _ in range(3):
            opt.apply_gradients([(torch.tensor([0.3, 1e-4], dtype=torch.float64), var)])
        updates.append(var.detach() - torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert not torch.allclose(updates[0], updates[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Adamax"])
def test_keras3_and_legacy_agree_where_keras_does(name: str) -> None:
    results = []
    for namespace in (ko.keras3, ko.optimizers):
        var = ko.Variable(torch.tensor([1.0, -2.0], dtype=torch.float64))
        kw = {"momentum": 0.5} if name == "SGD" else {"beta_1": 0.5, "beta_2": 0.75}
        opt = getattr(namespace, name)(learning_rate=0.125, **kw)
        for _ in range(3):
            opt.apply_gradients([(torch.tensor([0.3, -0.7], dtype=torch.float64), var)])
        results.append(var.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=0)


def test_sparse_squares_entries_before_rows_meet() -> None:
    """Keras 3 on TF: an accumulator gets g1^2 + g2^2 for a row indexed twice (legacy: (g1+g2)^2)."""
    var = ko.Variable(torch.zeros(3, 1, dtype=torch.float64))
    grad = ko.IndexedSlices(
        torch.tensor([[1.0], [2.0]], dtype=torch.float64), torch.tensor([0, 0]), (3, 1)
    )
    opt = ko.keras3.Adagrad(initial_accumulator_value=0.0)
    opt.apply_gradients([(grad, var)])
    assert opt.get_slot(var, "accumulator").flatten().tolist() == [5.0, 0.0, 0.0]
    legacy = ko.optimizers.Adagrad(initial_accumulator_value=0.0)
    var2 = ko.Variable(torch.zeros(3, 1, dtype=torch.float64))
    legacy.apply_gradients([(grad, var2)])
    assert legacy.get_slot(var2, "accumulator").flatten().tolist() == [9.0, 0.0, 0.0]


def test_ftrl_sets_never_indexed_rows_to_zero() -> None:
    var = ko.Variable(torch.ones(3, 1, dtype=torch.float64))
    grad = ko.IndexedSlices(torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([1]), (3, 1))
    ko.keras3.Ftrl().apply_gradients([(grad, var)])
    assert var[0].item() == 0.0 and var[2].item() == 0.0 and var[1].item() != 1.0


# -- LossScaleOptimizer --------------------------------------------------------------------------
def test_loss_scale_optimizer_keras3_rule() -> None:
    """Scaled gradients in, unscaled inside; a skip halves S (no floor) and does not count.

    The expected sequence is Keras 3.15's on TensorFlow for the same calls."""
    var = ko.Variable(torch.tensor(0.0, dtype=torch.float64))
    opt = ko.keras3.LossScaleOptimizer(
        ko.keras3.SGD(learning_rate=1.0), initial_scale=2.0, dynamic_growth_steps=2
    )
    inf, nan = float("inf"), float("nan")
    seen = []
    for g in (1.0, 1.0, inf, nan, nan, 1.0):
        scaled = opt.scale_loss(torch.tensor(g, dtype=torch.float64))
        opt.apply_gradients([(scaled, var)])
        seen.append((float(var), float(opt.loss_scale), int(opt.iterations)))
    assert seen == [
        (-1.0, 2.0, 1),
        (-2.0, 4.0, 2),  # c == N - 1: doubles after the inner step
        (-2.0, 2.0, 2),
        (-2.0, 1.0, 2),
        (-2.0, 0.5, 2),  # no floor at 1
        (-3.0, 0.5, 3),
    ]
    assert not hasattr(opt, "get_scaled_loss") and not hasattr(opt, "get_unscaled_gradients")
    # Keras: iteration, learning_rate (its own, unused), step_counter, dynamic_scale, inner's
    own = [float(v) for v in opt.variables[:4]]
    assert own == [0.0, 0.0, 1.0, 0.5] and len(opt.variables) == 6
    opt.set_weights(opt.get_weights())
    config = opt.get_config()
    assert sorted(config) == ["dynamic_growth_steps", "initial_scale", "inner_optimizer", "name"]
    again = ko.keras3.LossScaleOptimizer.from_config(config)
    assert type(again.inner_optimizer) is ko.keras3.SGD


def test_loss_scale_optimizer_minimize() -> None:
    var = ko.Variable(torch.tensor(2.0))
    opt = ko.keras3.LossScaleOptimizer(ko.keras3.SGD(learning_rate=1.0))
    opt.minimize(lambda: 3 * var, [var])
    assert float(var) == -1.0


# -- the torch.optim front end -------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "config"), cases(False), ids=case_ids(False))
def test_torch_front_end_is_the_keras_api(spec: Any, config: dict[str, Any]) -> None:
    torch_cls = getattr(ko.keras3.optim, spec.name)
    keras_cls = getattr(ko.keras3, spec.name)
    init, grads = _inputs(torch.float64)
    params = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    variables = [ko.Variable(torch.tensor(x)) for x in init]
    group = {("lr" if k == "learning_rate" else k): v for k, v in config.items()}
    topt = torch_cls(params, **group)
    kopt = keras_cls(**config)
    for row in grads:
        dense = [np.asarray(g) if not isinstance(g, tuple) else None for g in row]
        dense[0] = dense[0] if dense[0] is not None else np.zeros(SHAPES[0])
        if isinstance(row[0], tuple):
            np.add.at(dense[0], row[0][0], row[0][1])
        for p, g in zip(params, dense):
            p.grad = torch.tensor(g)
        topt.step()
        kopt.apply_gradients([(torch.tensor(g), v) for g, v in zip(dense, variables)])
    for p, v in zip(params, variables):
        assert torch.equal(p.detach(), v.detach())
    first = topt.state[params[0]]
    assert set(first) - {"step", "u_product"} == set(kopt.get_slot_names()) or spec.name in (
        "SGD",
        "Muon",
        "Adafactor",
    )


# -- namespaces ------------------------------------------------------------------------------------
def test_legacy_alias() -> None:
    from kerasopt.optimizers import legacy

    for name in legacy.__all__:
        assert getattr(legacy, name) is getattr(ko.optimizers, name)


def test_keras3_exports_every_keras_optimizer() -> None:
    keras_exports = {  # keras.optimizers of Keras 3.15 (its __init__), less the base Optimizer
        "SGD",
        "Adam",
        "AdamW",
        "Adadelta",
        "Adagrad",
        "Adamax",
        "Adafactor",
        "Ftrl",
        "Lion",
        "Lamb",
        "Nadam",
        "RMSprop",
        "Muon",
        "LossScaleOptimizer",
        "MultiOptimizer",
        "OptimizerMap",
        "ScheduleFreeAdamW",
    }
    assert keras_exports <= set(ko.keras3.__all__)
    for name in keras_exports - {"LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"}:
        assert issubclass(getattr(ko.keras3, name), ko.keras3.Keras3Base)
        assert hasattr(ko.keras3.optim, name)


def test_no_legacy_numerics_flag_in_the_base() -> None:
    """Keras 3 numerics are chosen by namespace (classes), never by a flag the base reads."""
    base_source = inspect.getsource(ko.Optimizer)
    assert "keras3" not in re.sub(r"keras3_config", "", base_source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ko.keras3.Adam()


def test_multi_optimizer_over_keras3_optimizers() -> None:
    """Keras 3's MultiOptimizer: each group steps as its optimizer alone would; configs come
    back as kerasopt.keras3 classes."""
    w = ko.Variable(torch.tensor([1.0, -2.0], dtype=torch.float64), name="kernel")
    b = ko.Variable(torch.tensor([0.5], dtype=torch.float64), name="bias")
    opt = ko.keras3.MultiOptimizer(
        ko.keras3.OptimizerMap(ko.keras3.SGD(0.5), {"bias": ko.keras3.RMSprop(0.1)})
    )
    alone_w, alone_b = w.detach().clone(), b.detach().clone()
    sgd, rms = ko.keras3.SGD(0.5), ko.keras3.RMSprop(0.1)
    for _ in range(2):
        gw, gb = (
            torch.tensor([0.3, 0.1], dtype=torch.float64),
            torch.tensor([0.2], dtype=torch.float64),
        )
        opt.apply_gradients([(gw, w), (gb, b)])
        sgd.apply_gradients([(gw, alone_w)])
        rms.apply_gradients([(gb, alone_b)])
    assert torch.equal(w.detach(), alone_w) and torch.equal(b.detach(), alone_b)
    assert opt.name == "multi_optimizer" and len(opt.variables) == len(opt.variables())
    again = ko.keras3.MultiOptimizer.from_config(opt.get_config())
    assert [type(o) for o in again.optimizers] == [ko.keras3.RMSprop, ko.keras3.SGD]


# -- engines ---------------------------------------------------------------------------------------
def _run_engine(name: str, implementation: str) -> list[torch.Tensor]:
    spec = BY_NAME[name]
    torch.manual_seed(0)
    init = [torch.randn(s) for s in [(5, 3), (3,), (), (2, 2)]]
    variables = [ko.Variable(x.clone()) for x in init]
    opt = getattr(ko.keras3, name)(**spec.configs[-1], implementation=implementation)
    for _ in range(3):
        opt.apply_gradients([(torch.randn(v.shape) * 0.5, v) for v in variables])
    slots = [opt.get_slot(v, s) for v in variables for s in opt._store.by_id[id(v)].slots]
    return [v.detach().clone() for v in variables] + [s.detach().clone() for s in slots]


@pytest.mark.parametrize("name", [spec.name for spec in KERAS3 if spec.elementwise])
def test_foreach_and_per_tensor_are_bit_identical(name: str) -> None:
    for a, b in zip(_run_engine(name, "per_tensor"), _run_engine(name, "foreach")):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Nadam", "Adadelta"])
def test_compiled_engine_matches_eager(name: str) -> None:
    # the rules Keras 3 has of its own, under torch.compile: a few float32 ulps from eager
    for a, b in zip(_run_engine(name, "compiled"), _run_engine(name, "foreach")):
        torch.testing.assert_close(a, b, rtol=4e-7, atol=1e-7)
