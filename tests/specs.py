"""OPTIMIZERS: the one table every parametrised test runs over.

Each entry names a kerasopt optimizer class, the configurations to test (constructor keywords),
which of its arguments TensorFlow stores as float32 hyperparameter variables (the reference gets
those values float32-rounded, as TF computes with them), and what the table's tests may assume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEGACY_HYPERS = frozenset(
    {
        "learning_rate",
        "decay",
        "beta_1",
        "beta_2",
        "momentum",
        "rho",
        "learning_rate_power",
        "l1_regularization_strength",
        "l2_regularization_strength",
        "beta",
    }
)
KERAS3_HYPERS = frozenset({"learning_rate"})


@dataclass(frozen=True)
class OptSpec:
    name: str
    configs: tuple[dict[str, Any], ...]
    float32_hypers: frozenset[str] = LEGACY_HYPERS
    sparse: bool = True  # has sparse semantics to test (others densify)
    elementwise: bool = True
    default_weight_decay: float | None = None
    # relative tolerance in float32 for this optimizer (rules with divisions amplify rounding)
    rtol32: float = 2e-5
    extra: dict[str, Any] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(len(self.configs))]

    def reference_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config the float64 reference receives: float32-stored hyperparameters rounded."""
        import inspect

        from tests.reference import REFERENCES

        params = inspect.signature(REFERENCES[self.name].__init__).parameters
        out = {k: p.default for k, p in params.items() if p.default is not p.empty}
        out.update(config)
        for key in self.float32_hypers:
            if key in out and isinstance(out[key], (int, float)) and not isinstance(out[key], bool):
                out[key] = float(np.float32(out[key]))
        return out


OPTIMIZERS: list[OptSpec] = [
    OptSpec(
        "SGD",
        (
            {"learning_rate": 0.1},
            {"learning_rate": 0.05, "momentum": 0.9},
            {"learning_rate": 0.05, "momentum": 0.7, "nesterov": True},
        ),
    ),
    OptSpec(
        "Adam",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
            {"learning_rate": 0.01, "amsgrad": True},
        ),
    ),
]

BY_NAME = {spec.name: spec for spec in OPTIMIZERS}


def cases() -> list[tuple[OptSpec, dict[str, Any]]]:
    return [(spec, config) for spec in OPTIMIZERS for config in spec.configs]


def case_ids() -> list[str]:
    return [i for spec in OPTIMIZERS for i in spec.ids()]
