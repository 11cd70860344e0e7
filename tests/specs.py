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
# get_config() keys every legacy (Keras 2) optimizer reports (the clipping keys only when set)
LEGACY_BASE_KEYS = {"name", "learning_rate", "decay"}
# get_config() keys every Keras 3 optimizer reports (docs/reference-behaviour.md Part 2 §1.9)
KERAS3_BASE_KEYS = {
    "name",
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "global_clipnorm",
    "clipvalue",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
}


@dataclass(frozen=True)
class OptSpec:
    name: str
    configs: tuple[dict[str, Any], ...]
    float32_hypers: frozenset[str] = LEGACY_HYPERS
    # What the table states and tests hold the classes to (test_engines checks the classes'
    # `sparse_mode` / `elementwise` say the same):
    # - sparse: an own sparse rule, as TF's `_resource_apply_sparse` (class sparse_mode "lazy");
    #   False: a sparse gradient is densified first, as Keras 3 does (sparse_mode "dense").
    sparse: bool = True
    # - elementwise: False where the rule needs the whole tensor (Lamb's trust ratio, Adafactor's
    #   factored moments, Muon's Newton-Schulz): it has no multi-tensor engine.
    elementwise: bool = True
    # Whether the sparse rule touches only the indexed rows of the variable and of every slot (TF's
    # ResourceSparseApply* kernels), where Adam and Nadam decay the moments of every row. A string
    # names the argument that must be non-zero for it (RMSprop: "momentum", the fused kernel; with
    # momentum 0 rms decays over every row). False for the densifying rules. See lazy_rows_for().
    lazy_rows: bool | str = False
    # The config (an index into `configs`) on which test_numerics shows that the half-precision
    # bound rejects a learning rate 2% (float16) / 10% (bfloat16) off; None: no such case (Lamb,
    # Adafactor: their steps scale with |x|, an ulp or so of it, and are caught only at larger
    # errors; Adadelta: none chosen, though both its configs are rejected too).
    wrong_step_config: int | None = None
    default_weight_decay: float | None = None
    # relative tolerance in float32 for this optimizer (rules with divisions amplify rounding)
    rtol32: float = 2e-5
    # get_config() of a default-constructed optimizer, exactly as TensorFlow returns it
    default_config: dict[str, Any] | None = None
    # False where TF rejects a LearningRateSchedule learning rate (Nadam)
    schedules: bool = True
    # extra lower-case names kerasopt.optimizers.get() must accept
    aliases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(len(self.configs))]

    @property
    def own_config_keys(self) -> frozenset[str]:
        """The optimizer's own get_config() keys: default_config's (the one statement of them),
        less the base keys of its generation (Keras 3: only learning_rate float32-stored)."""
        assert self.default_config is not None, self.name
        base = KERAS3_BASE_KEYS if self.float32_hypers == KERAS3_HYPERS else LEGACY_BASE_KEYS
        return frozenset(self.default_config) - base

    def lazy_rows_for(self, config: dict[str, Any]) -> bool:
        """Whether, in ``config``, a sparse step touches only the indexed rows (``lazy_rows``)."""
        if isinstance(self.lazy_rows, str):
            return bool(config.get(self.lazy_rows))  # every such argument defaults to 0
        return self.lazy_rows

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
        lazy_rows=True,
        wrong_step_config=1,
        default_config={
            "name": "SGD",
            "learning_rate": 0.01,
            "decay": 0.0,
            "momentum": 0.0,
            "nesterov": False,
        },
    ),
    OptSpec(
        "Adam",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
            {"learning_rate": 0.01, "amsgrad": True},
        ),
        lazy_rows=False,  # m and v decay on every row, and every row moves
        wrong_step_config=1,
        default_config={
            "name": "Adam",
            "learning_rate": 0.001,
            "decay": 0.0,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
            "amsgrad": False,
        },
    ),
    OptSpec(
        "Adagrad",
        (
            {"learning_rate": 0.1},
            {"learning_rate": 0.05, "initial_accumulator_value": 0.0, "epsilon": 1e-3},
            {"learning_rate": 0.02, "initial_accumulator_value": 0.5, "epsilon": None},
        ),
        lazy_rows=True,
        wrong_step_config=0,
        default_config={
            "name": "Adagrad",
            "learning_rate": 0.001,
            "decay": 0.0,
            "initial_accumulator_value": 0.1,
            "epsilon": 1e-07,
        },
    ),
    OptSpec(
        "Adadelta",
        (
            {"learning_rate": 1.0, "epsilon": 1e-2},
            {"learning_rate": 0.5, "rho": 0.9, "epsilon": 1e-3},
        ),
        lazy_rows=True,
        default_config={
            "name": "Adadelta",
            "learning_rate": 0.001,
            "decay": 0.0,
            "rho": 0.95,
            "epsilon": 1e-07,
        },
    ),
    OptSpec(
        "Adamax",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
        ),
        lazy_rows=True,
        wrong_step_config=0,
        default_config={
            "name": "Adamax",
            "learning_rate": 0.001,
            "decay": 0.0,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
        },
    ),
    OptSpec(
        "Ftrl",
        (
            {"learning_rate": 0.1},
            {
                "learning_rate": 0.05,
                "learning_rate_power": -0.7,
                "initial_accumulator_value": 0.5,
                "l1_regularization_strength": 0.2,
                "l2_regularization_strength": 0.02,
            },
            {
                "learning_rate": 0.1,
                "learning_rate_power": 0.0,
                "l1_regularization_strength": 0.2,
                "l2_shrinkage_regularization_strength": 0.05,
                "beta": 0.3,
            },
        ),
        lazy_rows=True,
        wrong_step_config=1,
        default_config={
            "name": "Ftrl",
            "learning_rate": 0.001,
            "decay": 0.0,
            "initial_accumulator_value": 0.1,
            "learning_rate_power": -0.5,
            "l1_regularization_strength": 0.0,
            "l2_regularization_strength": 0.0,
            "beta": 0.0,
            "l2_shrinkage_regularization_strength": 0.0,
        },
    ),
    # -- newer generation (docs/reference-behaviour.md Part 2 §3.1-§3.4): only learning_rate is float32-stored --------
    OptSpec(
        "AdamW",
        (
            {"learning_rate": 0.01},
            {
                "learning_rate": 0.02,
                "weight_decay": 0.1,
                "beta_1": 0.8,
                "beta_2": 0.99,
                "epsilon": 1e-3,
            },
            {"learning_rate": 0.01, "weight_decay": 0.0, "amsgrad": True},
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        default_weight_decay=0.004,
        wrong_step_config=1,
        default_config={
            "name": "AdamW",
            "learning_rate": 0.001,
            "weight_decay": 0.004,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
            "amsgrad": False,
        },
    ),
    OptSpec(
        "Lion",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.02, "beta_1": 0.5, "beta_2": 0.9, "weight_decay": 0.05},
            {"learning_rate": 0.01, "beta_1": 1.0},  # step = sign(m): 0 on the first step
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        wrong_step_config=1,
        default_config={
            "name": "Lion",
            "learning_rate": 0.001,
            "weight_decay": None,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "beta_1": 0.9,
            "beta_2": 0.99,
        },
    ),
    OptSpec(
        "Lamb",
        (
            # beta_2 = 0.99, not the default 0.999: bfloat16 rounds 0.999 to 1, so Keras's Lamb
            # divides v by 1 - 1^t = 0 and stops moving (test_newer_optimizers checks that),
            # which the half-precision harness (config rounded, then float64) cannot model.
            {"learning_rate": 0.01, "beta_2": 0.99},
            {
                "learning_rate": 0.02,
                "beta_1": 0.8,
                "beta_2": 0.99,
                "epsilon": 1e-3,
                "weight_decay": 0.1,
            },
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        elementwise=False,
        default_config={
            "name": "Lamb",
            "learning_rate": 0.001,
            "weight_decay": None,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
        },
    ),
    OptSpec(
        "Adafactor",
        (
            {"learning_rate": 0.01},  # rho_t = lr
            {  # rho_t = 1/sqrt(t); update clipping active
                "learning_rate": 2.0,
                "beta_2_decay": -0.5,
                "epsilon_1": 1e-20,
                "epsilon_2": 1e-2,
                "clip_threshold": 0.5,
                "relative_step": False,
                "weight_decay": 0.05,
            },
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        elementwise=False,
        default_config={
            "name": "Adafactor",
            "learning_rate": 0.001,
            "weight_decay": None,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "beta_2_decay": -0.8,
            "epsilon_1": 1e-30,
            "epsilon_2": 0.001,
            "clip_threshold": 1.0,
            "relative_step": True,
        },
    ),
    # Muon (docs/reference-behaviour.md Part 2 §3.5): the table's variables are unnamed ("variable_<i>"), so routing is
    # by rank only (rank 2 -> Muon path); name-based routing is tested in tests/test_muon.py.
    OptSpec(
        "Muon",
        (
            {"learning_rate": 0.01},  # nesterov, rms_rate scaling, both weight decays
            {
                "learning_rate": 0.02,
                "adam_beta_1": 0.8,
                "adam_beta_2": 0.99,
                "adam_weight_decay": 0.01,
                "epsilon": 1e-3,
                "weight_decay": None,
                "adam_lr_ratio": 0.1,
                "momentum": 0.9,
                "ns_steps": 3,
                "nesterov": False,
                "rms_rate": None,
            },
            {
                "learning_rate": 0.01,
                "adam_weight_decay": None,
                "weight_decay": 0.1,
                "exclude_layers": ["^out_"],  # matches no "variable_<i>"
                "exclude_embeddings": False,
                "muon_a": 2.0,
                "muon_b": -1.5,
                "muon_c": 0.5,
                "rms_rate": 0.5,
            },
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        elementwise=False,
        default_weight_decay=0.004,
        wrong_step_config=1,
        default_config={
            "name": "Muon",
            "learning_rate": 0.001,
            "weight_decay": 0.004,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "adam_beta_1": 0.9,
            "adam_beta_2": 0.999,
            "adam_weight_decay": 0.004,
            "epsilon": 1e-07,
            "exclude_layers": [],
            "exclude_embeddings": True,
            "muon_a": 3.4445,
            "muon_b": -4.775,
            "muon_c": 2.0315,
            "adam_lr_ratio": 1,
            "momentum": 0.95,
            "ns_steps": 5,
            "nesterov": True,
            "rms_rate": 0.2,
        },
    ),
    # ScheduleFreeAdamW (docs/reference-behaviour.md Part 2 §3.6). beta_2 < 1 in bfloat16 in every config: 0.999 rounds
    # to 1 there, and v / (1 - 1^t) = 0/0 is NaN (in Keras too), which the half-precision
    # harness cannot compare.
    OptSpec(
        "ScheduleFreeAdamW",
        (
            {"learning_rate": 0.01, "beta_2": 0.99},  # no warmup
            {  # warmup over the first 3 of the 4 tested steps, weight decay on y
                "learning_rate": 0.02,
                "beta_1": 0.8,
                "beta_2": 0.95,
                "epsilon": 1e-3,
                "warmup_steps": 3,
                "weight_decay": 0.05,
            },
            {"learning_rate": 0.05, "beta_1": 0.5, "beta_2": 0.99, "warmup_steps": 10},
        ),
        float32_hypers=KERAS3_HYPERS,
        sparse=False,
        wrong_step_config=1,
        default_config={
            "name": "ScheduleFreeAdamW",
            "learning_rate": 0.0025,
            "weight_decay": None,
            "clipnorm": None,
            "global_clipnorm": None,
            "clipvalue": None,
            "use_ema": False,
            "ema_momentum": 0.99,
            "ema_overwrite_frequency": None,
            "loss_scale_factor": None,
            "gradient_accumulation_steps": None,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-08,
            "warmup_steps": 0,
        },
    ),
    OptSpec(
        "RMSprop",
        (
            {"learning_rate": 0.01},
            {"learning_rate": 0.01, "rho": 0.8, "epsilon": 1e-3, "centered": True},
            {"learning_rate": 0.01, "momentum": 0.9},
            {"learning_rate": 0.02, "rho": 0.95, "momentum": 0.5, "centered": True},
        ),
        lazy_rows="momentum",
        wrong_step_config=1,
        default_config={
            "name": "RMSprop",
            "learning_rate": 0.001,
            "decay": 0.0,
            "rho": 0.9,
            "momentum": 0.0,
            "epsilon": 1e-07,
            "centered": False,
        },
    ),
    OptSpec(
        "Nadam",
        (
            # beta_2 < 1 in bfloat16 (0.999 rounds to 1 there: v' = 0/0, NaN in TF as here, and
            # the engine test's torch.equal fails on NaN)
            {"learning_rate": 0.01, "beta_2": 0.99},
            {
                "learning_rate": 0.02,
                "beta_1": 0.8,
                "beta_2": 0.99,
                "epsilon": 1e-3,
                "schedule_decay": 0.01,
            },
        ),
        lazy_rows=False,  # m and v decay on every row (only the indexed rows move)
        wrong_step_config=1,
        default_config={
            "name": "Nadam",
            "learning_rate": 0.001,
            "decay": 0.004,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-07,
        },
        schedules=False,  # Nadam rejects LearningRateSchedule learning rates (docs/reference-behaviour.md Part 1 §1.10)
    ),
]

BY_NAME = {spec.name: spec for spec in OPTIMIZERS}


def cases() -> list[tuple[OptSpec, dict[str, Any]]]:
    return [(spec, config) for spec in OPTIMIZERS for config in spec.configs]


def case_ids() -> list[str]:
    return [i for spec in OPTIMIZERS for i in spec.ids()]
