"""Writes tests/golden/tf_golden.json: TensorFlow/Keras optimizer outputs that CI replays without TF.

Run it with an interpreter that has TensorFlow, tf_keras and (optionally) Keras 3 installed — never
the project's own environment (TensorFlow is not a dependency of kerasopt or of its CI)::

    /path/to/tf-venv/bin/python tools/make_tf_golden.py [--out tests/golden/tf_golden.json]

It does not import kerasopt or torch. Every case stores its exact inputs (initial values,
gradients, configuration) and TensorFlow's variables and slots after every step;
``tests/test_tf_golden.py`` replays the inputs through kerasopt and compares.

Sources:

* ``legacy``: ``tf_keras.optimizers.legacy.<Name>`` (optimizer_v2: docs/reference-behaviour.md Part 1, kerasopt's
  numerics for the legacy family), dense and ``tf.IndexedSlices`` gradients (duplicate indices),
  float32, float64 and mixed-dtype variable lists, clipping, legacy ``decay``, schedules;
* ``tfk``: tf_keras's newer optimizers (``AdamW``, ``Lion``, ``Adafactor``);
* ``k3``: Keras 3 (``Lamb``, ``Muon``, and the newer base features whose semantics docs/reference-behaviour.md takes
  from Keras 3: EMA, gradient accumulation, ``loss_scale_factor``, weight-decay exclusion);
* ``lso``: ``tf_keras.mixed_precision.LossScaleOptimizer`` around a legacy optimizer;
* schedules evaluated on their own at steps 0..60, ``get_config()`` of default instances.

Numbers are JSON floats: float64 values with ``repr`` (exact round trip), float32 values with the
shortest decimal that rounds back to the same float32 (so read them back through float32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Deterministic, non-oneDNN kernels (matters for Muon's matmuls only).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import tensorflow as tf
import tf_keras

tf.get_logger().setLevel("ERROR")

try:
    import keras

    HAVE_K3 = int(keras.__version__.split(".")[0]) >= 3
except ImportError:  # pragma: no cover - depends on the TF environment
    keras = None
    HAVE_K3 = False

STEPS = 4
DENSE_SHAPES: list[tuple[int, ...]] = [(), (3,), (4, 5)]
SPARSE_SHAPE = (6, 3)

# -- encoding ----------------------------------------------------------------------------------


def enc(x: Any, dtype: str) -> list[float]:
    """A flat list of JSON floats that reads back exactly in ``dtype``."""
    arr = np.asarray(x, dtype=np.float64 if dtype == "float64" else np.float32).ravel()
    if dtype == "float64":
        return [float(v) for v in arr.tolist()]
    out = [float(str(v)) if np.isfinite(v) else float(v) for v in arr]
    back = np.asarray(out, dtype=np.float64).astype(np.float32)
    assert np.array_equal(back, arr, equal_nan=True), "float32 round trip"
    return out


def plain(value: Any) -> Any:
    """Config values as plain JSON (NumPy scalars → Python numbers)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- inputs ------------------------------------------------------------------------------------


def make_inputs(dtype: str, seed: int, shapes, steps: int, sparse: bool, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    variables = [rng.uniform(-1, 1, size=s).astype(dtype) for s in shapes]
    grads = [
        [(scale * rng.uniform(-1, 1, size=s)).astype(dtype) for s in shapes] for _ in range(steps)
    ]
    out = {
        "dtype": dtype,
        "variables": [{"shape": list(s), "init": enc(v, dtype)} for s, v in zip(shapes, variables)],
        "grads": [[{"dense": enc(g, dtype)} for g in step] for step in grads],
    }
    if sparse:
        svar = rng.uniform(-1, 1, size=SPARSE_SHAPE).astype(dtype)
        out["variables"].append({"shape": list(SPARSE_SHAPE), "init": enc(svar, dtype)})
        for step in out["grads"]:
            idx = rng.integers(0, SPARSE_SHAPE[0], size=5)
            idx[3] = idx[0]  # a duplicate index every step: TF sums the rows first
            vals = (scale * rng.uniform(-1, 1, size=(5, SPARSE_SHAPE[1]))).astype(dtype)
            step.append({"indices": [int(i) for i in idx], "values": enc(vals, dtype)})
    return out


def mixed_inputs(first: str, second: str, seed: int) -> dict[str, Any]:
    """Two variables of different dtypes in one optimizer (coefficients per (device, dtype))."""
    a = make_inputs(first, seed, [(3,)], STEPS, sparse=False)
    b = make_inputs(second, seed + 1, [(4, 5)], STEPS, sparse=False)
    return {
        "dtype": f"{first}+{second}",
        "variables": [
            {**a["variables"][0], "dtype": first},
            {**b["variables"][0], "dtype": second},
        ],
        "grads": [sa + sb for sa, sb in zip(a["grads"], b["grads"])],
    }


def var_dtype(inputs: dict[str, Any], i: int) -> str:
    return inputs["variables"][i].get("dtype", inputs["dtype"])


# -- building TF objects -----------------------------------------------------------------------


def tf_schedule(spec: dict[str, Any], module: Any) -> Any:
    return getattr(module, spec["class_name"])(**spec["config"])


def tf_config(config: dict[str, Any], schedules_module: Any) -> dict[str, Any]:
    out = dict(config)
    if isinstance(out.get("learning_rate"), dict):
        out["learning_rate"] = tf_schedule(out["learning_rate"], schedules_module)
    return out


def tf_grads(step: list[dict[str, Any]], variables: list[Any], inputs: dict[str, Any]) -> list:
    out = []
    for i, (g, v) in enumerate(zip(step, variables)):
        dt = var_dtype(inputs, i)
        if g is None:
            out.append(None)
        elif "dense" in g:
            out.append(tf.constant(np.asarray(g["dense"], dtype=dt).reshape(v.shape)))
        else:
            rows = np.asarray(g["values"], dtype=dt).reshape(-1, *v.shape[1:])
            out.append(
                tf.IndexedSlices(
                    tf.constant(rows),
                    tf.constant(np.asarray(g["indices"], dtype=np.int64)),
                    tf.constant(list(v.shape), dtype=tf.int64),
                )
            )
    return out


# -- reading slots -----------------------------------------------------------------------------


def legacy_slots(opt: Any, var: Any) -> dict[str, Any]:
    out = {}
    for name in opt.get_slot_names():
        with contextlib.suppress(KeyError):  # a slot the variable lacks (SGD without momentum)
            out[name] = opt.get_slot(var, name).numpy()
    return out


def tfk_slots(opt: Any, var_names: list[str]) -> list[dict[str, Any]]:
    """tf_keras's newer optimizers name slots ``<Opt>/<slot>/<var>:0``."""
    out: list[dict[str, Any]] = [{} for _ in var_names]
    for w in opt.variables:
        parts = w.name.split(":")[0].split("/")
        if len(parts) < 3:
            continue
        slot, vname = parts[-2], parts[-1]
        if vname in var_names:
            out[var_names.index(vname)][slot] = w.numpy()
    return out


def k3_slots(opt: Any, var_names: list[str]) -> list[dict[str, Any]]:
    """Keras 3 names slots ``<var>_<slot>``."""
    out: list[dict[str, Any]] = [{} for _ in var_names]
    for w in opt.variables:
        for i, vname in enumerate(var_names):
            if w.name.startswith(vname + "_"):
                out[i][w.name[len(vname) + 1 :]] = w.numpy()
    return out


# -- running a case ----------------------------------------------------------------------------


def run_case(case: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    api, name = case["api"], case["optimizer"]
    config = case["config"]
    n = len(inputs["variables"])
    names = case.get("names") or [f"w{i}" for i in range(n)]
    if api == "k3":
        sched_mod = keras.optimizers.schedules
        opt = getattr(keras.optimizers, name)(**tf_config(config, sched_mod))
        variables = [
            keras.Variable(
                np.asarray(v["init"], dtype=var_dtype(inputs, i)).reshape(v["shape"]),
                name=names[i],
                dtype=var_dtype(inputs, i),
            )
            for i, v in enumerate(inputs["variables"])
        ]
        if case.get("exclude_names"):
            opt.exclude_from_weight_decay(var_names=case["exclude_names"])
    else:
        sched_mod = tf_keras.optimizers.schedules
        if api == "legacy" or api == "lso":
            cls = getattr(tf_keras.optimizers.legacy, name)
        else:
            cls = getattr(tf_keras.optimizers, name)
        opt = cls(**tf_config(config, sched_mod))
        variables = [
            tf.Variable(
                np.asarray(v["init"], dtype=var_dtype(inputs, i)).reshape(v["shape"]),
                name=names[i],
            )
            for i, v in enumerate(inputs["variables"])
        ]
    lso = None
    if api == "lso":
        lso = tf_keras.mixed_precision.LossScaleOptimizer(opt, **case["loss_scale"])
    steps = []
    for step in inputs["grads"]:
        grads = tf_grads(step, variables, inputs)
        if lso is not None:
            grads = lso.get_unscaled_gradients(grads)
            lso.apply_gradients(zip(grads, variables))
        else:
            opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        if api == "legacy" or api == "lso":
            slots = [legacy_slots(opt, v) for v in variables]
        elif api == "tfk":
            slots = tfk_slots(opt, names)
        else:
            slots = k3_slots(opt, names)
        rec: dict[str, Any] = {
            "iterations": int(opt.iterations.numpy()),
            "vars": [enc(v.numpy(), var_dtype(inputs, i)) for i, v in enumerate(variables)],
            "slots": [
                {s: enc(val, var_dtype(inputs, i)) for s, val in sl.items()}
                for i, sl in enumerate(slots)
            ],
        }
        if lso is not None:
            rec["loss_scale"] = float(lso.loss_scale.numpy())
            rec["dynamic_counter"] = int(lso.dynamic_counter.numpy())
        steps.append(rec)
    out = dict(case)
    out["names"] = names
    out["steps"] = steps
    if api in ("legacy", "lso", "tfk"):
        weights = opt.get_weights() if api != "tfk" else [w.numpy() for w in opt.variables]
        out["weights"] = [
            {
                "shape": list(np.shape(w)),
                "dtype": str(np.asarray(w).dtype),
                "values": np.asarray(w).ravel().tolist()
                if np.asarray(w).dtype.kind == "i"
                else enc(w, str(np.asarray(w).dtype)),
            }
            for w in weights
        ]
    if api == "legacy":
        out["slot_names"] = list(opt.get_slot_names())
    # The config of a fresh instance (legacy: hyperparameters not yet float32 variables).
    if api == "k3":
        fresh = getattr(keras.optimizers, name)(**tf_config(config, sched_mod))
    else:
        fresh = cls(**tf_config(config, sched_mod))
    out["tf_config"] = plain(fresh.get_config())
    if lso is not None:
        lso_config = plain(lso.get_config())
        lso_config["inner_optimizer"] = {
            k: v for k, v in lso_config["inner_optimizer"].items() if k in ("class_name", "config")
        }
        out["tf_lso_config"] = lso_config
    return out


# -- the table ---------------------------------------------------------------------------------

LEGACY_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "SGD": [
        {"learning_rate": 0.1},
        {"learning_rate": 0.05, "momentum": 0.9},
        {"learning_rate": 0.05, "momentum": 0.7, "nesterov": True},
    ],
    "Adam": [
        {"learning_rate": 0.01},
        {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
        {"learning_rate": 0.01, "amsgrad": True},
    ],
    "Adagrad": [
        {"learning_rate": 0.1},
        {"learning_rate": 0.05, "initial_accumulator_value": 0.0, "epsilon": 1e-3},
        {"learning_rate": 0.02, "initial_accumulator_value": 0.5, "epsilon": None},
    ],
    "Adadelta": [
        {"learning_rate": 1.0, "epsilon": 1e-2},
        {"learning_rate": 0.5, "rho": 0.9, "epsilon": 1e-3},
    ],
    "Adamax": [
        {"learning_rate": 0.01},
        {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
    ],
    "Nadam": [
        {},
        {"learning_rate": 0.01, "beta_2": 0.99},
        {
            "learning_rate": 0.02,
            "beta_1": 0.8,
            "beta_2": 0.99,
            "epsilon": 1e-3,
            "schedule_decay": 0.01,
        },
    ],
    "RMSprop": [
        {"learning_rate": 0.01},
        {"learning_rate": 0.01, "rho": 0.8, "epsilon": 1e-3, "centered": True},
        {"learning_rate": 0.01, "momentum": 0.9},
        {"learning_rate": 0.02, "rho": 0.95, "momentum": 0.5, "centered": True},
    ],
    "Ftrl": [
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
        {"learning_rate": 0.1, "l2_regularization_strength": 0.1, "beta": 0.5},
    ],
}


def sched(class_name: str, **config: Any) -> dict[str, Any]:
    return {"class_name": class_name, "config": config}


# Base-class features on the legacy family (clipping, legacy decay, schedules).
LEGACY_FEATURES: list[tuple[str, str, dict[str, Any]]] = [
    ("clipnorm", "SGD", {"learning_rate": 0.1, "momentum": 0.9, "clipnorm": 0.5}),
    ("clipvalue", "Adam", {"learning_rate": 0.01, "clipvalue": 0.3}),
    ("global_clipnorm", "Adam", {"learning_rate": 0.01, "global_clipnorm": 0.7}),
    ("clipvalue+clipnorm", "SGD", {"learning_rate": 0.1, "clipvalue": 0.4, "clipnorm": 0.5}),
    ("decay", "Adagrad", {"learning_rate": 0.1, "decay": 0.1}),
    ("decay", "Adam", {"learning_rate": 0.01, "decay": 0.05}),
    ("decay", "RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "decay": 0.3}),
    (
        "ExponentialDecay",
        "SGD",
        {
            "learning_rate": sched(
                "ExponentialDecay", initial_learning_rate=0.1, decay_steps=3, decay_rate=0.7
            )
        },
    ),
    (
        "PiecewiseConstantDecay",
        "Adam",
        {
            "learning_rate": sched(
                "PiecewiseConstantDecay", boundaries=[1, 3], values=[0.05, 0.02, 0.01]
            )
        },
    ),
    (
        "PolynomialDecay-cycle",
        "SGD",
        {
            "learning_rate": sched(
                "PolynomialDecay",
                initial_learning_rate=0.1,
                decay_steps=2,
                end_learning_rate=0.01,
                power=1.5,
                cycle=True,
            ),
            "momentum": 0.9,
        },
    ),
    (
        "CosineDecay-warmup",
        "Adam",
        {
            "learning_rate": sched(
                "CosineDecay",
                initial_learning_rate=0.01,
                decay_steps=3,
                alpha=0.1,
                warmup_target=0.05,
                warmup_steps=2,
            )
        },
    ),
    (
        "CosineDecayRestarts",
        "RMSprop",
        {
            "learning_rate": sched(
                "CosineDecayRestarts", initial_learning_rate=0.02, first_decay_steps=2, alpha=0.1
            )
        },
    ),
    (
        "InverseTimeDecay+decay",
        "Adamax",
        {
            "learning_rate": sched(
                "InverseTimeDecay", initial_learning_rate=0.05, decay_steps=2, decay_rate=0.5
            ),
            "decay": 0.1,
        },
    ),
    (
        "ExponentialDecay",
        "Ftrl",
        {
            "learning_rate": sched(
                "ExponentialDecay",
                initial_learning_rate=0.2,
                decay_steps=2,
                decay_rate=0.5,
                staircase=True,
            ),
            "l1_regularization_strength": 0.05,
            "beta": 0.2,
        },
    ),
]

TFK_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "AdamW": [
        {"learning_rate": 0.01},
        {
            "learning_rate": 0.02,
            "weight_decay": 0.1,
            "beta_1": 0.8,
            "beta_2": 0.99,
            "epsilon": 1e-3,
        },
        {"learning_rate": 0.01, "weight_decay": 0.0, "amsgrad": True},
        {"learning_rate": 0.01, "clipnorm": 0.5},
    ],
    "Lion": [
        {"learning_rate": 0.01},
        {"learning_rate": 0.02, "beta_1": 0.5, "beta_2": 0.9, "weight_decay": 0.05},
        {"learning_rate": 0.01, "beta_1": 1.0},
        {"learning_rate": 0.01, "global_clipnorm": 0.5},
    ],
    "Adafactor": [
        {"learning_rate": 0.01},
        {
            "learning_rate": 2.0,
            "beta_2_decay": -0.5,
            "epsilon_1": 1e-20,
            "epsilon_2": 1e-2,
            "clip_threshold": 0.5,
            "relative_step": False,
            "weight_decay": 0.05,
        },
        {
            "learning_rate": sched(
                "ExponentialDecay", initial_learning_rate=0.5, decay_steps=2, decay_rate=0.5
            )
        },
    ],
}

K3_CONFIGS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    # (label, optimizer, config, case extras)
    ("", "Lamb", {"learning_rate": 0.01, "beta_2": 0.99}, {}),
    (
        "",
        "Lamb",
        {
            "learning_rate": 0.02,
            "beta_1": 0.8,
            "beta_2": 0.99,
            "epsilon": 1e-3,
            "weight_decay": 0.1,
        },
        {},
    ),
    ("", "Muon", {"learning_rate": 0.01}, {}),
    (
        "",
        "Muon",
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
        {},
    ),
    (
        "",
        "Muon",
        {
            "learning_rate": 0.01,
            "adam_weight_decay": None,
            "weight_decay": 0.1,
            "exclude_layers": ["^out_"],
            "exclude_embeddings": True,
            "muon_a": 2.0,
            "muon_b": -1.5,
            "muon_c": 0.5,
            "rms_rate": 0.5,
        },
        {"names": ["w0", "w1", "hidden_kernel", "out_kernel", "tok_embedding"], "muon": True},
    ),
    # features with Keras 3 semantics (docs/reference-behaviour.md Part 2 §1.4-§1.8)
    ("ema", "SGD", {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.9}, {}),
    (
        "ema-overwrite",
        "AdamW",
        {
            "learning_rate": 0.02,
            "weight_decay": 0.05,
            "use_ema": True,
            "ema_momentum": 0.8,
            "ema_overwrite_frequency": 3,
        },
        {},
    ),
    ("ema-wd", "Lion", {"learning_rate": 0.01, "weight_decay": 0.1, "use_ema": True}, {}),
    (
        "wd-exclude",
        "AdamW",
        {"learning_rate": 0.02, "weight_decay": 0.2},
        # Keras 3 on TF matches the pattern against the tf.Variable name ("w1:0"), so no "$".
        {"exclude_names": ["w1"]},
    ),
    (
        "accumulation",
        "AdamW",
        {"learning_rate": 0.01, "gradient_accumulation_steps": 2, "clipnorm": 0.3},
        {"steps": 6},
    ),
    (
        "accumulation-ema",
        "SGD",
        {
            "learning_rate": 0.1,
            "gradient_accumulation_steps": 3,
            "use_ema": True,
            "ema_momentum": 0.5,
        },
        {"steps": 6},
    ),
    (
        "loss_scale_factor",
        "Lion",
        {"learning_rate": 0.01, "loss_scale_factor": 4.0},
        {"scale": 4.0},
    ),
    ("global_clipnorm", "Lamb", {"learning_rate": 0.01, "global_clipnorm": 0.5}, {}),
]

LSO_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], list[str | None]]] = [
    # (label, inner optimizer, inner config, LSO kwargs, per-step poison: None / "inf" / "nan")
    (
        "adam",
        "Adam",
        {"learning_rate": 0.1},
        {"initial_scale": 8.0, "dynamic_growth_steps": 2},
        [None, None, "inf", None, "nan", None, None],
    ),
    (
        "sgd-momentum",
        "SGD",
        {"learning_rate": 0.1, "momentum": 0.9},
        {"initial_scale": 2.0, "dynamic_growth_steps": 3},
        [None, "nan", "nan", None, None, None, "inf"],
    ),
]

SCHEDULES: list[dict[str, Any]] = [
    sched("ExponentialDecay", initial_learning_rate=0.1, decay_steps=7, decay_rate=0.5),
    sched(
        "ExponentialDecay", initial_learning_rate=0.1, decay_steps=7, decay_rate=0.5, staircase=True
    ),
    sched("PiecewiseConstantDecay", boundaries=[5, 20, 40], values=[0.1, 0.05, 0.01, 0.001]),
    sched(
        "PolynomialDecay",
        initial_learning_rate=0.1,
        decay_steps=10,
        end_learning_rate=0.01,
        power=1.0,
        cycle=True,
    ),
    sched(
        "PolynomialDecay",
        initial_learning_rate=0.1,
        decay_steps=25,
        end_learning_rate=0.001,
        power=2.0,
    ),
    sched(
        "PolynomialDecay",
        initial_learning_rate=0.3,
        decay_steps=7,
        end_learning_rate=0.02,
        power=0.5,
        cycle=True,
    ),
    sched("InverseTimeDecay", initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5),
    sched(
        "InverseTimeDecay", initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5, staircase=True
    ),
    sched("CosineDecay", initial_learning_rate=0.1, decay_steps=30),
    sched("CosineDecay", initial_learning_rate=0.1, decay_steps=30, alpha=0.2),
    sched(
        "CosineDecay",
        initial_learning_rate=0.01,
        decay_steps=30,
        alpha=0.1,
        warmup_target=0.5,
        warmup_steps=10,
    ),
    sched("CosineDecay", initial_learning_rate=0.05, decay_steps=20, warmup_target=0.2),
    sched("ExponentialDecay", initial_learning_rate=0.01, decay_steps=3, decay_rate=0.96),
    sched(
        "PolynomialDecay",
        initial_learning_rate=1.0,
        decay_steps=9,
        end_learning_rate=0.0,
        power=3.0,
        cycle=True,
    ),
    sched("CosineDecay", initial_learning_rate=0.3, decay_steps=45, alpha=0.01),
    sched("CosineDecayRestarts", initial_learning_rate=0.1, first_decay_steps=10),
    sched(
        "CosineDecayRestarts",
        initial_learning_rate=0.05,
        first_decay_steps=3,
        t_mul=2.0,
        m_mul=0.8,
        alpha=0.01,
    ),
    sched(
        "CosineDecayRestarts",
        initial_learning_rate=1.0,
        first_decay_steps=10,
        t_mul=1.0,
        m_mul=0.5,
        alpha=0.1,
    ),
    sched(
        "CosineDecayRestarts",
        initial_learning_rate=0.2,
        first_decay_steps=7,
        t_mul=1.5,
        m_mul=0.9,
        alpha=0.05,
    ),
]

NEWER = ("AdamW", "Lion", "Adafactor", "Lamb", "Muon")


def build() -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for dt, seed in (("float32", 0), ("float64", 0)):
        inputs[f"legacy-{dt}"] = make_inputs(dt, seed, DENSE_SHAPES, STEPS, sparse=True)
        inputs[f"newer-{dt}"] = make_inputs(dt, seed + 1, DENSE_SHAPES, STEPS, sparse=False)
        inputs[f"adafactor-{dt}"] = make_inputs(
            dt, seed + 2, [*DENSE_SHAPES, (2, 3, 4)], STEPS, sparse=False
        )
        inputs[f"muon-{dt}"] = make_inputs(
            dt, seed + 3, [(), (3,), (4, 5), (6, 4), (5, 3)], STEPS, sparse=False
        )
        inputs[f"accum-{dt}"] = make_inputs(dt, seed + 4, DENSE_SHAPES, 6, sparse=False)
        inputs[f"clip-{dt}"] = make_inputs(
            dt, seed + 5, DENSE_SHAPES, STEPS, sparse=True, scale=2.0
        )
        inputs[f"lsf-{dt}"] = make_inputs(
            dt, seed + 6, DENSE_SHAPES, STEPS, sparse=False, scale=4.0
        )
    inputs["mixed-float32+float64"] = mixed_inputs("float32", "float64", 7)
    inputs["mixed-float64+float32"] = mixed_inputs("float64", "float32", 9)
    for label, _, _, _, poison in LSO_CASES:
        for dt in ("float32", "float64"):
            inp = make_inputs(dt, 11, [(), (3,)], len(poison), sparse=False, scale=8.0)
            for step, p in zip(inp["grads"], poison):
                if p is not None:
                    step[1]["dense"][1] = float(p)
            inputs[f"lso-{label}-{dt}"] = inp

    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    def add(case_id: str, api: str, name: str, config: dict[str, Any], key: str, **extra: Any):
        case = {"id": case_id, "api": api, "optimizer": name, "config": config, "inputs": key}
        case.update(extra)
        try:
            cases.append(run_case(case, inputs[key]))
        except (tf.errors.OpError, TypeError, ValueError) as e:
            # e.g. Keras 3's Muon cannot run float64 variables with rms_rate set (it multiplies
            # by a float32 sqrt): recorded, not replayed.
            skipped.append({"id": case_id, "error": f"{type(e).__name__}: {str(e)[:200]}"})

    for name, configs in LEGACY_CONFIGS.items():
        for i, config in enumerate(configs):
            for dt, short in (("float32", "f32"), ("float64", "f64")):
                add(f"legacy-{name}-{i}-{short}", "legacy", name, config, f"legacy-{dt}")
    for label, name, config in LEGACY_FEATURES:
        for dt, short in (("float32", "f32"), ("float64", "f64")):
            key = f"clip-{dt}" if "clip" in label else f"legacy-{dt}"
            add(f"legacy-{label}-{name}-{short}", "legacy", name, config, key)
    for name, config in (
        ("Adam", {"learning_rate": 0.01}),
        ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
        ("Nadam", {"learning_rate": 0.01}),
        ("RMSprop", {"learning_rate": 0.01, "centered": True}),
        ("Ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.05}),
    ):
        for key, short in (
            ("mixed-float32+float64", "f32f64"),
            ("mixed-float64+float32", "f64f32"),
        ):
            add(f"legacy-mixed-{name}-{short}", "legacy", name, config, key)
    for name, configs in TFK_CONFIGS.items():
        for i, config in enumerate(configs):
            for dt, short in (("float32", "f32"), ("float64", "f64")):
                key = f"adafactor-{dt}" if name == "Adafactor" else f"newer-{dt}"
                add(f"tfk-{name}-{i}-{short}", "tfk", name, config, key)
    if HAVE_K3:
        counters: dict[str, int] = {}
        for label, name, config, extra in K3_CONFIGS:
            extra = dict(extra)
            is_muon = extra.pop("muon", False) or name == "Muon"
            steps = extra.pop("steps", STEPS)
            scale = extra.pop("scale", None)
            base = label or str(counters.setdefault(name, 0))
            if not label:
                counters[name] += 1
            for dt, short in (("float32", "f32"), ("float64", "f64")):
                if is_muon:
                    key = f"muon-{dt}"
                    extra.setdefault("names", ["w0", "w1", "w2", "w3", "tok_embedding"])
                elif steps != STEPS:
                    key = f"accum-{dt}"
                elif scale is not None:
                    key = f"lsf-{dt}"
                else:
                    key = f"newer-{dt}"
                add(f"k3-{name}-{base}-{short}", "k3", name, config, key, **extra)
    for label, name, config, lso_kwargs, _ in LSO_CASES:
        for dt, short in (("float32", "f32"), ("float64", "f64")):
            add(
                f"lso-{label}-{short}",
                "lso",
                name,
                config,
                f"lso-{label}-{dt}",
                loss_scale=lso_kwargs,
            )

    # schedules on their own, steps 0..60, float32 values
    schedules = []
    for spec in SCHEDULES:
        s = tf_schedule(spec, tf_keras.optimizers.schedules)
        values = [float(s(step).numpy()) for step in range(61)]
        entry = {
            "class_name": spec["class_name"],
            "config": spec["config"],
            "tf_config": plain(s.get_config()),
            "values": enc(values, "float32"),
        }
        if HAVE_K3:
            k = tf_schedule(spec, keras.optimizers.schedules)
            kv = [float(np.asarray(k(step))) for step in range(61)]
            if kv != values:
                entry["k3_values"] = enc(kv, "float32")
        schedules.append(entry)

    # get_config() of default instances
    default_configs = {}
    for name in LEGACY_CONFIGS:
        default_configs[f"legacy-{name}"] = plain(
            getattr(tf_keras.optimizers.legacy, name)().get_config()
        )
    for name in TFK_CONFIGS:
        default_configs[f"tfk-{name}"] = plain(getattr(tf_keras.optimizers, name)().get_config())
    if HAVE_K3:
        for name in NEWER:
            default_configs[f"k3-{name}"] = plain(getattr(keras.optimizers, name)().get_config())

    return {
        "meta": {
            "generator": "tools/make_tf_golden.py",
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "keras": keras.__version__ if keras is not None else None,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "steps": STEPS,
            "float32_encoding": "shortest decimal that rounds back to the float32 value",
        },
        "inputs": inputs,
        "cases": cases,
        "skipped": skipped,
        "schedules": schedules,
        "default_configs": default_configs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root / "tests" / "golden" / "tf_golden.json")
    args = parser.parse_args()
    golden = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(golden, separators=(",", ":"))
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}: {len(golden['cases'])} cases, {len(text) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
