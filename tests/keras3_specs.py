"""KERAS3: the table test_keras3.py runs over, one entry per ``kerasopt.keras3`` optimizer.

Each entry names the class, the configurations the reference tests run (constructor keywords;
several hyperparameters, dyadic and not) and what the tests may assume. Keras 3's default
``get_config()`` is not restated here: it is read from tests/golden/keras3_golden.json, which
tools/make_keras3_golden.py writes from Keras 3 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class K3Spec:
    name: str
    configs: tuple[dict[str, Any], ...]
    # whole-tensor rules (norms, factored moments) compare at a looser float32 bound
    elementwise: bool = True
    # False: the float64 NumPy reference has no rule for it (Muon: checked against Keras only)
    reference: bool = True

    def ids(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(len(self.configs))]


KERAS3: list[K3Spec] = [
    K3Spec(
        "SGD",
        (
            {"learning_rate": 0.1},
            {"learning_rate": 0.05, "momentum": 0.9},
            {"learning_rate": 0.05, "momentum": 0.7, "nesterov": True},
        ),
    ),
    K3Spec(
        "Adam",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-3},
            {"learning_rate": 0.01, "amsgrad": True},
            {"learning_rate": 0.01, "weight_decay": 0.1},
        ),
    ),
    K3Spec("AdamW", ({"learning_rate": 0.01}, {"learning_rate": 0.02, "weight_decay": 0.3})),
    K3Spec(
        "Adamax",
        ({"learning_rate": 0.01}, {"learning_rate": 0.02, "beta_1": 0.7, "beta_2": 0.9}),
    ),
    K3Spec(
        "Adagrad",
        (
            {"learning_rate": 0.1},
            {"learning_rate": 0.2, "initial_accumulator_value": 0.3, "epsilon": 1e-3},
            {"learning_rate": 0.2, "initial_accumulator_value": 0.0},
        ),
    ),
    K3Spec(
        "Adadelta",
        ({"learning_rate": 1.0}, {"learning_rate": 0.5, "rho": 0.8, "epsilon": 1e-4}),
    ),
    K3Spec(
        "RMSprop",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5},
            {"learning_rate": 0.01, "centered": True},
            {"learning_rate": 0.01, "momentum": 0.3, "centered": True, "epsilon": 1e-3},
        ),
    ),
    K3Spec(
        "Nadam",
        ({"learning_rate": 0.01}, {"learning_rate": 0.02, "beta_1": 0.7, "beta_2": 0.9}),
    ),
    K3Spec(
        "Ftrl",
        (
            {"learning_rate": 0.1},
            {
                "learning_rate": 0.1,
                "learning_rate_power": -0.3,
                "initial_accumulator_value": 0.2,
                "l1_regularization_strength": 0.01,
                "l2_regularization_strength": 0.02,
                "l2_shrinkage_regularization_strength": 0.05,
                "beta": 0.1,
            },
        ),
    ),
    K3Spec("Lion", ({"learning_rate": 0.01}, {"learning_rate": 0.02, "beta_1": 0.5})),
    K3Spec(
        "Lamb",
        ({"learning_rate": 0.01}, {"learning_rate": 0.02, "beta_1": 0.8, "epsilon": 1e-4}),
        elementwise=False,
    ),
    K3Spec(
        "Adafactor",
        ({"learning_rate": 0.01}, {"learning_rate": 0.05, "beta_2_decay": -0.6}),
        elementwise=False,
    ),
    K3Spec(
        "ScheduleFreeAdamW",
        ({"learning_rate": 0.01}, {"learning_rate": 0.02, "beta_1": 0.8, "warmup_steps": 2}),
    ),
    K3Spec("Muon", ({"learning_rate": 0.01},), elementwise=False, reference=False),
]

BY_NAME = {spec.name: spec for spec in KERAS3}


def cases(with_reference: bool = True) -> list[tuple[K3Spec, dict[str, Any]]]:
    return [
        (spec, config)
        for spec in KERAS3
        if spec.reference or not with_reference
        for config in spec.configs
    ]


def case_ids(with_reference: bool = True) -> list[str]:
    return [i for spec in KERAS3 if spec.reference or not with_reference for i in spec.ids()]
