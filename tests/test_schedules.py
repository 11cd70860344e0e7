"""Tests of kerasopt.optimizers.schedules against closed forms written from docs/reference-behaviour.md Part 2 §4.

The references below are plain float64 Python (``math``), written from docs/reference-behaviour.md's formulas and never
from the implementation; the period of CosineDecayRestarts is found by walking the periods rather
than with the logarithm formula the implementation uses.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from kerasopt.optimizers import schedules
from kerasopt.optimizers.schedules import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PiecewiseConstantDecay,
    PolynomialDecay,
    deserialize,
    serialize,
)

STEPS = [0, 1, 3, 7, 9, 10, 11, 19, 20, 21, 25, 29, 30, 60, 100]


# ---------------------------------------------------------------------------------------------
# float64 references (docs/reference-behaviour.md Part 2 §4)
# ---------------------------------------------------------------------------------------------


def ref_exponential(s, lr0, decay_steps, decay_rate, staircase=False):
    p = s / decay_steps
    if staircase:
        p = math.floor(p)
    return lr0 * decay_rate**p


def ref_piecewise(s, boundaries, values):
    for b, v in zip(boundaries, values):
        if s <= b:
            return v
    return values[-1]


def ref_polynomial(s, lr0, decay_steps, end=0.0001, power=1.0, cycle=False):
    if cycle:
        decay_steps = decay_steps * (1 if s == 0 else math.ceil(s / decay_steps))
    else:
        s = min(s, decay_steps)
    return (lr0 - end) * (1 - s / decay_steps) ** power + end


def ref_inverse_time(s, lr0, decay_steps, decay_rate, staircase=False):
    p = s / decay_steps
    if staircase:
        p = math.floor(p)
    return lr0 / (1 + decay_rate * p)


def _cosine(x, decay_steps, alpha):
    return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * x / decay_steps)) + alpha


def ref_cosine(s, lr0, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    if warmup_target is None:
        return lr0 * _cosine(min(s, decay_steps), decay_steps, alpha)
    s = min(s, decay_steps + warmup_steps)
    if s < warmup_steps:
        return lr0 + (warmup_target - lr0) * s / warmup_steps
    return warmup_target * _cosine(s - warmup_steps, decay_steps, alpha)


def ref_restarts(s, lr0, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    start, length, i = 0.0, float(first_decay_steps), 0
    while s >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    f = (s - start) / length
    return lr0 * ((1 - alpha) * 0.5 * m_mul**i * (1 + math.cos(math.pi * f)) + alpha)


# (schedule factory, float64 reference of the step); each factory builds a fresh schedule.
CASES = [
    pytest.param(
        lambda: ExponentialDecay(0.1, 10, 0.5),
        lambda s: ref_exponential(s, 0.1, 10, 0.5),
        id="exponential",
    ),
    pytest.param(
        lambda: ExponentialDecay(0.1, 10, 0.5, staircase=True),
        lambda s: ref_exponential(s, 0.1, 10, 0.5, staircase=True),
        id="exponential-staircase",
    ),
    pytest.param(
        lambda: ExponentialDecay(0.01, 7, 0.96),
        lambda s: ref_exponential(s, 0.01, 7, 0.96),
        id="exponential-0.96",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([10, 20, 30], [1.0, 0.5, 0.1, 0.01]),
        lambda s: ref_piecewise(s, [10, 20, 30], [1.0, 0.5, 0.1, 0.01]),
        id="piecewise",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([9.0, 25.0], [0.3, 0.2, 0.1]),
        lambda s: ref_piecewise(s, [9, 25], [0.3, 0.2, 0.1]),
        id="piecewise-float-boundaries",
    ),
    pytest.param(
        lambda: PiecewiseConstantDecay([], [0.3]),
        lambda s: 0.3,
        id="piecewise-constant",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 10),
        lambda s: ref_polynomial(s, 0.1, 10),
        id="polynomial",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 20, 0.01, power=0.5),
        lambda s: ref_polynomial(s, 0.1, 20, 0.01, power=0.5),
        id="polynomial-sqrt",
    ),
    pytest.param(
        lambda: PolynomialDecay(0.1, 10, 0.01, power=2.0, cycle=True),
        lambda s: ref_polynomial(s, 0.1, 10, 0.01, power=2.0, cycle=True),
        id="polynomial-cycle",
    ),
    pytest.param(
        lambda: InverseTimeDecay(0.1, 10, 0.5),
        lambda s: ref_inverse_time(s, 0.1, 10, 0.5),
        id="inverse-time",
    ),
    pytest.param(
        lambda: InverseTimeDecay(0.1, 10, 0.5, staircase=True),
        lambda s: ref_inverse_time(s, 0.1, 10, 0.5, staircase=True),
        id="inverse-time-staircase",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, 20),
        lambda s: ref_cosine(s, 0.1, 20),
        id="cosine",
    ),
    pytest.param(
        lambda: CosineDecay(0.1, 20, alpha=0.1, warmup_steps=5),
        lambda s: ref_cosine(s, 0.1, 20, alpha=0.1),
        id="cosine-alpha-warmup-steps-ignored",
    ),
    pytest.param(
        lambda: CosineDecay(0.0, 20, alpha=0.1, warmup_target=0.1, warmup_steps=10),
        lambda s: ref_cosine(s, 0.0, 20, alpha=0.1, warmup_target=0.1, warmup_steps=10),
        id="cosine-warmup",
    ),
    pytest.param(
        lambda: CosineDecay(0.01, 20, warmup_target=0.1),
        lambda s: ref_cosine(s, 0.01, 20, warmup_target=0.1, warmup_steps=0),
        id="cosine-warmup-target-no-steps",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(1.0, 10),
        lambda s: ref_restarts(s, 1.0, 10),
        id="restarts",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 10, t_mul=1.0, m_mul=0.5, alpha=0.1),
        lambda s: ref_restarts(s, 0.1, 10, t_mul=1.0, m_mul=0.5, alpha=0.1),
        id="restarts-equal-periods",
    ),
    pytest.param(
        lambda: CosineDecayRestarts(0.1, 10, t_mul=3.0, m_mul=0.8, alpha=0.05),
        lambda s: ref_restarts(s, 0.1, 10, t_mul=3.0, m_mul=0.8, alpha=0.05),
        id="restarts-geometric",
    ),
]

# One schedule of each class, non-default arguments where there are some.
ONE_PER_CLASS = [
    pytest.param(lambda: ExponentialDecay(0.1, 10, 0.5, staircase=True), id="exponential"),
    pytest.param(lambda: PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1]), id="piecewise"),
    pytest.param(lambda: PolynomialDecay(0.1, 10, 0.01, cycle=True), id="polynomial"),
    pytest.param(lambda: InverseTimeDecay(0.1, 10, 0.5), id="inverse-time"),
    pytest.param(
        lambda: CosineDecay(0.0, 20, alpha=0.1, warmup_target=0.1, warmup_steps=10), id="cosine"
    ),
    pytest.param(lambda: CosineDecayRestarts(0.1, 10, m_mul=0.5, alpha=0.1), id="restarts"),
]


def _close(got: float, want: float) -> bool:
    # float32 evaluation: ~1 ulp relative, plus an absolute floor for values that come out of a
    # cancellation (1 + cos(πf) near the end of a cosine period).
    return abs(got - want) <= 1e-6 * abs(want) + 1e-8


# ---------------------------------------------------------------------------------------------
# Numerics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "ref"), CASES)
def test_matches_float64_closed_form(make: Callable[[], Any], ref: Callable[[int], float]):
    schedule = make()
    for s in STEPS:
        got = float(schedule(s))
        assert _close(got, ref(s)), f"step {s}: got {got!r}, want {ref(s)!r}"


@pytest.mark.parametrize(("make", "ref"), CASES)
def test_step_types_agree_and_output_is_float32(make: Callable[[], Any], ref: Any):
    schedule = make()
    for s in STEPS:
        outs = [
            schedule(s),
            schedule(float(s)),
            schedule(torch.tensor(s, dtype=torch.int64)),
            schedule(torch.tensor(s, dtype=torch.int32)),
            schedule(torch.tensor(s, dtype=torch.float32)),
            schedule(torch.tensor(s, dtype=torch.float64)),
        ]
        for out in outs:
            assert isinstance(out, torch.Tensor)
            assert out.dtype == torch.float32
            assert out.shape == ()
            assert out.device.type == "cpu"
            assert torch.equal(out, outs[0]), f"step {s}: {out} != {outs[0]}"


@pytest.mark.parametrize("make", ONE_PER_CLASS)
def test_output_on_step_device(make: Callable[[], Any]):
    # The meta device stands in for an accelerator: nothing may fall back to the CPU.
    out = make()(torch.tensor(3, dtype=torch.int64, device="meta"))
    assert out.device.type == "meta"
    assert out.dtype == torch.float32
    assert out.shape == ()


@pytest.mark.parametrize(
    ("steps", "want"),
    [((0, 10, 11, 20, 21), (0.1, 0.01, 0.0505, 0.01, 0.037))],
)
def test_spec_example_polynomial_cycle(steps: tuple[int, ...], want: tuple[float, ...]):
    schedule = PolynomialDecay(0.1, 10, end_learning_rate=0.01, power=1.0, cycle=True)
    for s, w in zip(steps, want):
        assert float(schedule(s)) == pytest.approx(w, rel=1e-6)


@pytest.mark.parametrize(
    ("step", "want", "tol"),
    [(0, 1.0, 1e-6), (9, 0.0245, 1e-4), (10, 1.0, 1e-6), (29, 0.0062, 1e-4), (30, 1.0, 1e-6)],
)
def test_spec_example_cosine_restarts(step: int, want: float, tol: float):
    schedule = CosineDecayRestarts(1.0, 10, t_mul=2.0)
    assert float(schedule(step)) == pytest.approx(want, abs=tol)


def test_restarts_alpha_not_scaled_by_m_mul():
    # Peak of period i is lr0 * ((1 - α) m_mul^i + α); α is not multiplied by m_mul^i.
    schedule = CosineDecayRestarts(1.0, 10, t_mul=1.0, m_mul=0.5, alpha=0.2)
    assert float(schedule(20)) == pytest.approx(0.8 * 0.25 + 0.2, rel=1e-6)


def test_python_floats_become_float32():
    # TF turns Python floats into float32 tensors: the value at step 0 is float32(0.1) exactly.
    assert float(ExponentialDecay(0.1, 10, 0.5)(0)) == 0.10000000149011612
    assert float(PiecewiseConstantDecay([5], [0.1, 0.2])(0)) == 0.10000000149011612


@pytest.mark.parametrize(
    ("boundary", "step", "want"),
    [
        (10, 10, 1.0),  # a step equal to a boundary takes the lower value
        (10, 11, 0.5),
        (10.5, 10, 1.0),
        (10.5, 11, 0.5),
        (10, 10.5, 0.5),  # a float step compares in float32
        (-0.5, 0, 1.0),  # float -> int cast truncates towards zero: -0.5 becomes 0
        (16777217.0, 16777217, 0.5),  # the Python float goes through float32 (2^24) first
        (16777217, 16777217, 1.0),  # an int boundary is compared exactly with an int step
    ],
)
def test_piecewise_boundary_cast_to_step_dtype(boundary: Any, step: Any, want: float):
    schedule = PiecewiseConstantDecay([boundary], [1.0, 0.5])
    assert float(schedule(step)) == want


def test_tensor_arguments():
    lr = torch.tensor(0.1)
    schedule = ExponentialDecay(lr, torch.tensor(10), torch.tensor(0.5, dtype=torch.float64))
    assert torch.equal(schedule(7), ExponentialDecay(0.1, 10, 0.5)(7))
    config = schedule.get_config()
    json.dumps(config)
    assert config["decay_steps"] == 10
    assert isinstance(config["decay_steps"], int)
    # A tensor argument is read at every call, so in-place changes take effect.
    lr.fill_(0.2)
    assert float(schedule(0)) == pytest.approx(0.2, rel=1e-7)

    piecewise = PiecewiseConstantDecay(torch.tensor([10, 20]), [torch.tensor(1.0), 0.5, 0.1])
    assert [float(piecewise(s)) for s in (10, 11, 21)] == pytest.approx([1.0, 0.5, 0.1])
    assert piecewise.get_config()["boundaries"] == [10, 20]
    json.dumps(piecewise.get_config())


# ---------------------------------------------------------------------------------------------
# Config and serialization
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "config"),
    [
        pytest.param(
            ExponentialDecay(0.1, 10, 0.5),
            {
                "initial_learning_rate": 0.1,
                "decay_steps": 10,
                "decay_rate": 0.5,
                "staircase": False,
                "name": "ExponentialDecay",
            },
            id="exponential",
        ),
        pytest.param(
            PiecewiseConstantDecay((10, 20), (1.0, 0.5, 0.1)),
            {"boundaries": [10, 20], "values": [1.0, 0.5, 0.1], "name": "PiecewiseConstant"},
            id="piecewise",
        ),
        pytest.param(
            PolynomialDecay(0.1, 10),
            {
                "initial_learning_rate": 0.1,
                "decay_steps": 10,
                "end_learning_rate": 0.0001,
                "power": 1.0,
                "cycle": False,
                "name": "PolynomialDecay",
            },
            id="polynomial",
        ),
        pytest.param(
            InverseTimeDecay(0.1, 10, 0.5),
            {
                "initial_learning_rate": 0.1,
                "decay_steps": 10,
                "decay_rate": 0.5,
                "staircase": False,
                "name": "InverseTimeDecay",
            },
            id="inverse-time",
        ),
        pytest.param(
            CosineDecay(0.1, 10),
            {
                "initial_learning_rate": 0.1,
                "decay_steps": 10,
                "alpha": 0.0,
                "name": "CosineDecay",
                "warmup_target": None,
                "warmup_steps": 0,
            },
            id="cosine",
        ),
        pytest.param(
            CosineDecayRestarts(0.1, 10),
            {
                "initial_learning_rate": 0.1,
                "first_decay_steps": 10,
                "t_mul": 2.0,
                "m_mul": 1.0,
                "alpha": 0.0,
                "name": "SGDRDecay",
            },
            id="restarts",
        ),
    ],
)
def test_get_config_defaults_and_keys(schedule: LearningRateSchedule, config: dict[str, Any]):
    assert schedule.get_config() == config
    json.dumps(schedule.get_config())


@pytest.mark.parametrize(("make", "ref"), CASES)
def test_from_config_round_trip(make: Callable[[], Any], ref: Any):
    schedule = make()
    rebuilt = type(schedule).from_config(json.loads(json.dumps(schedule.get_config())))
    assert type(rebuilt) is type(schedule)
    assert rebuilt.get_config() == schedule.get_config()
    for s in STEPS:
        assert torch.equal(rebuilt(s), schedule(s))


@pytest.mark.parametrize(("make", "ref"), CASES)
def test_serialize_deserialize_round_trip(make: Callable[[], Any], ref: Any):
    schedule = make()
    data = serialize(schedule)
    assert data == {
        "module": "kerasopt.optimizers.schedules",
        "class_name": type(schedule).__name__,
        "config": schedule.get_config(),
        "registered_name": None,
    }
    rebuilt = deserialize(json.loads(json.dumps(data)))
    assert type(rebuilt) is type(schedule)
    for s in STEPS:
        assert torch.equal(rebuilt(s), schedule(s))


def test_deserialize_tf_keras_form_and_extra_keys():
    # The TF/Keras 2 layout has no "module"; unknown keys, and any module named, are ignored and
    # never imported.
    config = {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5, "name": None}
    tf_form = deserialize({"class_name": "InverseTimeDecay", "config": config})
    assert isinstance(tf_form, InverseTimeDecay)
    assert tf_form.name is None
    extra = deserialize(
        {
            "module": "kerasopt_no_such_module",
            "class_name": "ExponentialDecay",
            "config": config,
            "registered_name": "whatever",
            "shared_object_id": 3,
        }
    )
    assert isinstance(extra, ExponentialDecay)
    assert "kerasopt_no_such_module" not in sys.modules
    assert config == {
        "initial_learning_rate": 0.1,
        "decay_steps": 10,
        "decay_rate": 0.5,
        "name": None,
    }


class _Halving(LearningRateSchedule):
    def __init__(self, initial_learning_rate: float):
        self.initial_learning_rate = initial_learning_rate

    def __call__(self, step):
        return self.initial_learning_rate * torch.pow(0.5, torch.as_tensor(step).float())

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate}


def test_custom_objects():
    data = serialize(_Halving(1.0))
    assert data["class_name"] == "_Halving"
    with pytest.raises(ValueError, match="Unknown learning rate schedule: '_Halving'"):
        deserialize(data)
    rebuilt = deserialize(data, custom_objects={"_Halving": _Halving})
    assert isinstance(rebuilt, _Halving)
    assert float(rebuilt(2)) == 0.25


_GOOD = {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5}


@pytest.mark.parametrize(
    ("data", "kwargs", "exc", "match"),
    [
        pytest.param(
            {"class_name": "NoSuchDecay", "config": {}},
            {},
            ValueError,
            "Unknown learning rate schedule: 'NoSuchDecay'",
            id="unknown-class",
        ),
        pytest.param(
            {"class_name": "os.system", "config": {}},
            {},
            ValueError,
            "Unknown learning rate schedule: 'os.system'",
            id="dotted-name",
        ),
        pytest.param(
            {"class_name": "LearningRateSchedule", "config": {}},
            {},
            ValueError,
            "Unknown learning rate schedule: 'LearningRateSchedule'",
            id="base-class",
        ),
        pytest.param("ExponentialDecay", {}, TypeError, "expects a dict", id="not-a-dict"),
        pytest.param(
            {"config": _GOOD}, {}, ValueError, "missing key 'class_name'", id="no-class-name"
        ),
        pytest.param(
            {"class_name": "ExponentialDecay"}, {}, ValueError, "missing key 'config'", id="no-cfg"
        ),
        pytest.param(
            {"class_name": 3, "config": _GOOD},
            {},
            TypeError,
            "'class_name' must be a string",
            id="class-name-not-str",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": [0.1, 10, 0.5]},
            {},
            TypeError,
            "'config' of ExponentialDecay must be a dict",
            id="config-not-dict",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": {**_GOOD, "bogus": 1}},
            {},
            TypeError,
            "Cannot build learning rate schedule ExponentialDecay.*bogus",
            id="unexpected-argument",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1}},
            {},
            TypeError,
            "Cannot build learning rate schedule ExponentialDecay.*decay_steps",
            id="missing-argument",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": {**_GOOD, "decay_steps": "10"}},
            {},
            TypeError,
            "Argument `decay_steps` must be a number",
            id="bad-argument-type",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": {**_GOOD, "decay_steps": 0}},
            {},
            ValueError,
            "Argument `decay_steps` must be > 0",
            id="bad-argument-value",
        ),
        pytest.param(
            {"class_name": "ExponentialDecay", "config": _GOOD},
            {"custom_objects": {"ExponentialDecay": print}},
            TypeError,
            "must be a LearningRateSchedule subclass",
            id="custom-object-not-a-schedule",
        ),
    ],
)
def test_deserialize_rejects(data: Any, kwargs: dict[str, Any], exc: type, match: str):
    with pytest.raises(exc, match=match):
        deserialize(data, **kwargs)


def test_serialize_rejects_non_schedule():
    with pytest.raises(TypeError, match="expects a LearningRateSchedule"):
        serialize(lambda step: 0.1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Validation and the base class
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        pytest.param(
            lambda: ExponentialDecay(0.1, 0, 0.5),
            ValueError,
            r"Argument `decay_steps` must be > 0, received: decay_steps=0",
            id="exponential-decay-steps",
        ),
        pytest.param(
            lambda: PolynomialDecay(0.1, -1),
            ValueError,
            "Argument `decay_steps` must be > 0",
            id="polynomial-decay-steps",
        ),
        pytest.param(
            lambda: InverseTimeDecay(0.1, 0.0, 0.5),
            ValueError,
            "Argument `decay_steps` must be > 0",
            id="inverse-time-decay-steps",
        ),
        pytest.param(
            lambda: CosineDecay(0.1, torch.tensor(0)),
            ValueError,
            "Argument `decay_steps` must be > 0",
            id="cosine-decay-steps-tensor",
        ),
        pytest.param(
            lambda: CosineDecayRestarts(0.1, 0),
            ValueError,
            "Argument `first_decay_steps` must be > 0",
            id="restarts-first-decay-steps",
        ),
        pytest.param(
            lambda: PiecewiseConstantDecay([10, 20], [1.0, 0.5]),
            ValueError,
            "length of boundaries should be 1 less than the length of values",
            id="piecewise-lengths",
        ),
        pytest.param(
            lambda: PiecewiseConstantDecay([], []),
            ValueError,
            "length of boundaries should be 1 less than the length of values",
            id="piecewise-empty",
        ),
        pytest.param(
            lambda: PiecewiseConstantDecay("10", [1.0, 0.5]),
            TypeError,
            "Argument `boundaries` must be a list of numbers",
            id="piecewise-boundaries-str",
        ),
        pytest.param(
            lambda: PiecewiseConstantDecay([10], [1.0, "0.5"]),
            TypeError,
            r"Argument `values\[1\]` must be a number",
            id="piecewise-value-type",
        ),
        pytest.param(
            lambda: ExponentialDecay("0.1", 10, 0.5),
            TypeError,
            "Argument `initial_learning_rate` must be a number",
            id="lr-str",
        ),
        pytest.param(
            lambda: ExponentialDecay(torch.ones(2), 10, 0.5),
            ValueError,
            "Argument `initial_learning_rate` must be a number or a 0-d tensor",
            id="lr-1d-tensor",
        ),
        pytest.param(
            lambda: InverseTimeDecay(0.1, 10, True),
            TypeError,
            "Argument `decay_rate` must be a number",
            id="decay-rate-bool",
        ),
        pytest.param(
            lambda: ExponentialDecay(0.1, 10, 0.5, staircase="yes"),
            TypeError,
            "Argument `staircase` must be a bool",
            id="staircase-str",
        ),
        pytest.param(
            lambda: PolynomialDecay(0.1, 10, cycle=1),
            TypeError,
            "Argument `cycle` must be a bool",
            id="cycle-int",
        ),
        pytest.param(
            lambda: CosineDecay(0.1, 10, warmup_target="0.2"),
            TypeError,
            "Argument `warmup_target` must be a number",
            id="warmup-target-str",
        ),
        pytest.param(
            lambda: CosineDecayRestarts(0.1, 10, name=3),
            TypeError,
            "Argument `name` must be a string or None",
            id="name-int",
        ),
    ],
)
def test_validation_errors(make: Callable[[], Any], exc: type, match: str):
    with pytest.raises(exc, match=match):
        make()


def test_call_rejects_non_numeric_step():
    with pytest.raises(TypeError, match="`step` must be a number or a tensor"):
        ExponentialDecay(0.1, 10, 0.5)("3")


def test_base_class_is_abstract():
    base = LearningRateSchedule()
    with pytest.raises(NotImplementedError, match=r"must override `__call__\(self, step\)`"):
        base(0)
    with pytest.raises(NotImplementedError, match=r"must override `get_config\(\)`"):
        base.get_config()
    with pytest.raises(NotImplementedError, match="_NoConfig"):
        serialize(_NoConfig())
    assert float(_Halving.from_config({"initial_learning_rate": 2.0})(1)) == 1.0


class _NoConfig(LearningRateSchedule):
    def __call__(self, step):
        return torch.tensor(0.1)


# Keras's constructors: argument names, order and defaults (keyword `name` included).
SIGNATURES = {
    ExponentialDecay: "(initial_learning_rate, decay_steps, decay_rate, staircase=False, "
    "name='ExponentialDecay')",
    PiecewiseConstantDecay: "(boundaries, values, name='PiecewiseConstant')",
    PolynomialDecay: "(initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, "
    "cycle=False, name='PolynomialDecay')",
    InverseTimeDecay: "(initial_learning_rate, decay_steps, decay_rate, staircase=False, "
    "name='InverseTimeDecay')",
    CosineDecay: "(initial_learning_rate, decay_steps, alpha=0.0, name='CosineDecay', "
    "warmup_target=None, warmup_steps=0)",
    CosineDecayRestarts: "(initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, "
    "alpha=0.0, name='SGDRDecay')",
}


@pytest.mark.parametrize("cls", list(SIGNATURES), ids=lambda c: c.__name__)
def test_constructor_signature_is_keras(cls: type):
    signature = inspect.signature(cls)
    plain = signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()]
    )
    assert str(plain) == SIGNATURES[cls]


@pytest.mark.parametrize("make", ONE_PER_CLASS)
def test_config_keys_follow_the_constructor(make: Callable[[], Any]):
    schedule = make()
    assert list(schedule.get_config()) == list(inspect.signature(type(schedule)).parameters)


def test_constructor_argument_errors_name_the_schedule():
    with pytest.raises(TypeError, match=r"ExponentialDecay\(\) missing .*'decay_steps'"):
        ExponentialDecay(0.1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"CosineDecay\(\) got an unexpected keyword .*'bogus'"):
        CosineDecay(0.1, 10, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"PiecewiseConstantDecay\(\) too many positional"):
        PiecewiseConstantDecay([1], [1.0, 0.5], "x", 3)  # type: ignore[call-arg]
    # Positional or keyword, as in Keras.
    a = PolynomialDecay(0.1, 10, 0.01, 2.0, True, "p")
    b = PolynomialDecay(
        name="p",
        cycle=True,
        power=2.0,
        end_learning_rate=0.01,
        decay_steps=10,
        initial_learning_rate=0.1,
    )
    assert a.get_config() == b.get_config()


def test_assignment_is_checked_and_takes_effect():
    schedule = ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(
        ValueError, match=r"Argument `decay_steps` must be > 0, received: decay_steps=0"
    ):
        schedule.decay_steps = 0
    with pytest.raises(TypeError, match="Argument `staircase` must be a bool"):
        schedule.staircase = "yes"
    assert schedule.get_config()["decay_steps"] == 10  # unchanged by the failed assignments
    schedule.decay_steps = 5
    assert torch.equal(schedule(10), ExponentialDecay(0.1, 5, 0.5)(10))
    # On the class, the attribute is the declaration.
    assert ExponentialDecay.decay_steps.name == "decay_steps"


def test_repr_shows_the_arguments():
    assert repr(CosineDecayRestarts(0.1, 10)) == (
        "CosineDecayRestarts(initial_learning_rate=0.1, first_decay_steps=10, t_mul=2.0, "
        "m_mul=1.0, alpha=0.0, name='SGDRDecay')"
    )
    assert repr(PiecewiseConstantDecay((10,), (1.0, 0.5), name=None)) == (
        "PiecewiseConstantDecay(boundaries=(10,), values=(1.0, 0.5), name=None)"
    )
    assert repr(_NoConfig()).startswith("<")  # no declarations: object's repr


def test_subclass_of_a_schedule_inherits_its_declarations():
    class Halved(ExponentialDecay):
        def __call__(self, step):
            return super().__call__(step) / 2

    schedule = Halved(0.1, 10, 0.5)
    assert schedule.get_config() == ExponentialDecay(0.1, 10, 0.5).get_config()
    assert torch.equal(schedule(3), ExponentialDecay(0.1, 10, 0.5)(3) / 2)
    with pytest.raises(ValueError, match="Argument `decay_steps` must be > 0"):
        Halved(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="Unknown learning rate schedule: 'Halved'"):
        deserialize(serialize(schedule))  # registered classes only
    rebuilt = deserialize(serialize(schedule), custom_objects={"Halved": Halved})
    assert type(rebuilt) is Halved


def test_public_names():
    assert set(schedules.__all__) == {
        "LearningRateSchedule",
        "ExponentialDecay",
        "PiecewiseConstantDecay",
        "PolynomialDecay",
        "InverseTimeDecay",
        "CosineDecay",
        "CosineDecayRestarts",
        "serialize",
        "deserialize",
    }


# ---------------------------------------------------------------------------------------------
# torch.compile / CUDA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ONE_PER_CLASS)
def test_compiles_fullgraph_without_recompiling(make: Callable[[], Any]):
    schedule = make()
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(lambda step: schedule(step) * 1.0, backend=counter, fullgraph=True)
    for s in (3, 11, 25):
        step = torch.tensor(s, dtype=torch.int64)
        assert torch.equal(compiled(step), schedule(step))
    assert counter.frame_count == 1
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", ONE_PER_CLASS)
def test_cuda_no_host_sync(make: Callable[[], Any]):
    schedule = make()
    step = torch.tensor(11, dtype=torch.int64, device="cuda")
    want = schedule(11)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = schedule(step)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert out.device == step.device
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), want, rtol=1e-6, atol=0.0)
