"""Writes tests/golden/keras3_golden.json: Keras 3's own numbers for kerasopt.keras3's tests.

Run it with a Python that has Keras 3 and TensorFlow (never a dependency of kerasopt or its CI;
use a scratch virtual environment outside the repository):

    python3 -m venv /tmp/k3 && /tmp/k3/bin/pip install "keras==3.15.*" tensorflow-cpu
    KERAS_BACKEND=tensorflow /tmp/k3/bin/python tools/make_keras3_golden.py

For every case of ``CASES`` it builds the Keras optimizer on two float64 variables, applies three
dense steps and then two steps whose first gradient is a ``tf.IndexedSlices`` with a duplicate
index (Keras 3 on TensorFlow is what TF >= 2.16 runs), and records after every step the
variables and every optimizer variable in ``optimizer.variables`` order (name, value). It also
records ``get_config()`` of each default-constructed optimizer, and the golden values of
Keras's own tests (``test_single_step*``, ``test_correctness_with_golden`` of
``keras/src/optimizers/*_test.py``, read from the installed package's sources). Hyperparameters are dyadic where
a case says so, so float64 agreement can be asked for at rtol 1e-9; the other cases keep Keras's
defaults and so check which constants Keras rounds through float32.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

# (optimizer, constructor keywords); the first case of each uses Keras's defaults (but lr).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"learning_rate": 0.125}),
    ("SGD", {"learning_rate": 0.125, "momentum": 0.5}),
    ("SGD", {"learning_rate": 0.125, "momentum": 0.75, "nesterov": True}),
    ("SGD", {"learning_rate": 0.125, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.125}),
    ("Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 2**-10}),
    ("Adam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "amsgrad": True}),
    ("Adam", {"learning_rate": 0.125, "weight_decay": 0.25, "clipnorm": 1.0}),
    ("AdamW", {"learning_rate": 0.125}),
    ("AdamW", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "weight_decay": 0.25}),
    ("Adamax", {"learning_rate": 0.125}),
    ("Adamax", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 2**-10}),
    ("Adagrad", {"learning_rate": 0.125}),
    ("Adagrad", {"learning_rate": 0.125, "initial_accumulator_value": 0.25, "epsilon": 2**-10}),
    ("Adadelta", {"learning_rate": 0.125}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.75, "epsilon": 2**-10}),
    ("RMSprop", {"learning_rate": 0.125}),
    ("RMSprop", {"learning_rate": 0.125, "rho": 0.75, "epsilon": 2**-10}),
    ("RMSprop", {"learning_rate": 0.125, "rho": 0.75, "momentum": 0.5}),
    ("RMSprop", {"learning_rate": 0.125, "rho": 0.75, "momentum": 0.5, "centered": True}),
    ("RMSprop", {"learning_rate": 0.125, "rho": 0.75, "centered": True}),
    ("Nadam", {"learning_rate": 0.125}),
    ("Nadam", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 2**-10}),
    ("Ftrl", {"learning_rate": 0.125}),
    (
        "Ftrl",
        {
            "learning_rate": 0.125,
            "learning_rate_power": -0.25,
            "initial_accumulator_value": 0.25,
            "l1_regularization_strength": 0.0625,
            "l2_regularization_strength": 0.125,
            "l2_shrinkage_regularization_strength": 0.25,
            "beta": 0.5,
        },
    ),
    ("Ftrl", {"learning_rate": 0.125, "l1_regularization_strength": 0.1}),
    ("Lion", {"learning_rate": 0.125}),
    ("Lion", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75}),
    ("Lamb", {"learning_rate": 0.125}),
    ("Lamb", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75, "epsilon": 2**-10}),
    ("Adafactor", {"learning_rate": 0.125}),
    ("Adafactor", {"learning_rate": 0.125, "beta_2_decay": -0.5, "clip_threshold": 0.5}),
    ("Muon", {"learning_rate": 0.125}),
    ("Muon", {"learning_rate": 0.125, "momentum": 0.5, "adam_beta_1": 0.5, "adam_beta_2": 0.75}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.125}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.125, "beta_1": 0.5, "beta_2": 0.75}),
    # the base features around the rules (EMA, accumulation, clipping, weight decay)
    (
        "Adam",
        {
            "learning_rate": 0.125,
            "use_ema": True,
            "ema_momentum": 0.5,
            "ema_overwrite_frequency": 2,
        },
    ),
    ("SGD", {"learning_rate": 0.125, "momentum": 0.5, "gradient_accumulation_steps": 2}),
    ("Nadam", {"learning_rate": 0.125, "gradient_accumulation_steps": 2}),
    ("Adagrad", {"learning_rate": 0.125, "gradient_accumulation_steps": 2}),
    ("RMSprop", {"learning_rate": 0.125, "global_clipnorm": 1.0}),
    ("Adagrad", {"learning_rate": 0.125, "clipvalue": 0.25}),
    ("Adamax", {"learning_rate": 0.125, "clipnorm": 0.5}),
    ("Lion", {"learning_rate": 0.125, "weight_decay": 0.5}),
    # a learning-rate schedule (legacy Nadam refuses one; Keras 3's takes it)
    (
        "Nadam",
        {
            "schedule": [
                "ExponentialDecay",
                {"initial_learning_rate": 0.125, "decay_steps": 2, "decay_rate": 0.5},
            ]
        },
    ),
    ("Adam", {"schedule": ["CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 4}]}),
]

OPTIMIZERS = sorted({name for name, _ in CASES})

W0 = np.linspace(-1.0, 1.0, 12).reshape(4, 3) + 0.0625
B0 = np.array([0.5, -0.25, 0.75])


def dense_grads(step: int) -> tuple[np.ndarray, np.ndarray]:
    gw = np.cos(np.arange(12, dtype=np.float64) * (step + 1)).reshape(4, 3) * 0.5
    gb = np.sin(np.arange(3, dtype=np.float64) + step) * 0.25
    return gw, gb


# rows 0 and 2 of w, row 0 twice (Keras 3 on TF squares each entry before rows meet)
SPARSE_INDICES = [0, 2, 0]


def sparse_values(step: int) -> np.ndarray:
    return np.array(
        [[0.5, -0.25, 0.125], [0.75, 0.5, -1.0], [0.25, 0.375, -0.5]], dtype=np.float64
    ) * (step + 1)


def run_case(keras: Any, tf: Any, name: str, config: dict[str, Any]) -> dict[str, Any]:
    cls = getattr(keras.optimizers, name)
    kwargs = dict(config)
    if "schedule" in kwargs:  # [class name, keywords] of a keras.optimizers.schedules class
        schedule, schedule_kwargs = kwargs.pop("schedule")
        kwargs["learning_rate"] = getattr(keras.optimizers.schedules, schedule)(**schedule_kwargs)
    opt = cls(**kwargs)
    # Keras 3.15's Muon fails in float64 on TF (float32 `rms_rate` factor meets a float64 tensor)
    dtype = "float32" if name == "Muon" else "float64"
    w = keras.Variable(W0.copy(), dtype=dtype, name="w")
    b = keras.Variable(B0.copy(), dtype=dtype, name="b")
    steps = []

    def record() -> None:
        optvars = []
        for v in opt.variables:
            value = np.asarray(v.numpy())
            if v.name in ("iteration", "learning_rate") or not np.issubdtype(
                value.dtype, np.floating
            ):
                continue  # the counter and the learning rate are checked on their own
            optvars.append([v.name, value.astype(np.float64).tolist()])
        steps.append(
            {
                "w": np.asarray(w.numpy()).tolist(),
                "b": np.asarray(b.numpy()).tolist(),
                "iterations": int(opt.iterations.numpy()),
                "optimizer_variables": optvars,
            }
        )

    for step in range(3):
        gw, gb = dense_grads(step)
        opt.apply_gradients([(tf.constant(gw, dtype), w), (tf.constant(gb, dtype), b)])
        record()
    for step in range(2):
        gw = tf.IndexedSlices(
            tf.constant(sparse_values(step), dtype),
            tf.constant(SPARSE_INDICES, dtype=tf.int64),
            tf.constant([4, 3], dtype=tf.int64),
        )
        _, gb = dense_grads(step + 3)
        try:
            opt.apply_gradients([(gw, w), (tf.constant(gb, dtype), b)])
        except tf.errors.InvalidArgumentError as e:
            # Keras 3.15 fails in some sparse divisions (see docs/keras3.md): no number to compare.
            print(
                f"{name} {config}: sparse step failed in Keras: {e.message[:80]}", file=sys.stderr
            )
            return {
                "optimizer": name,
                "config": config,
                "dtype": dtype,
                "steps": steps,
                "sparse_error": True,
            }
        record()
    return {"optimizer": name, "config": config, "dtype": dtype, "steps": steps}


# ---------------------------------------------------------------------------------------------
# Keras's own golden values: `test_single_step*` and `test_correctness_with_golden` of
# keras/src/optimizers/<name>_test.py, read (not run) from the installed Keras's sources.
# ---------------------------------------------------------------------------------------------
TEST_FILES = {
    "SGD": "sgd_test.py",
    "Adam": "adam_test.py",
    "AdamW": "adamw_test.py",
    "Adamax": "adamax_test.py",
    "Adagrad": "adagrad_test.py",
    "Adadelta": "adadelta_test.py",
    "RMSprop": "rmsprop_test.py",
    "Nadam": "nadam_test.py",
    "Ftrl": "ftrl_test.py",
    "Lion": "lion_test.py",
    "Lamb": "lamb_test.py",
    "Adafactor": "adafactor_test.py",
}


def _keras_tests(keras_dir: str) -> list[dict[str, Any]]:
    import ast

    out: list[dict[str, Any]] = []
    for name, filename in TEST_FILES.items():
        path = os.path.join(keras_dir, "src", "optimizers", filename)
        with open(path) as f:
            tree = ast.parse(f.read())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            if not (
                fn.name.startswith("test_single_step") or fn.name == "test_correctness_with_golden"
            ):
                continue
            case: dict[str, Any] = {"optimizer": name, "test": f"{filename}::{fn.name}"}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    target, value = node.targets[0].id, node.value
                    if target == "optimizer" and isinstance(value, ast.Call):
                        case["config"] = {k.arg: ast.literal_eval(k.value) for k in value.keywords}
                    elif target == "golden":
                        src = ast.unparse(value)
                        case["golden"] = np.asarray(eval(src, {"np": np})).tolist()
                    elif (
                        target in ("grads", "vars")
                        and isinstance(value, ast.Call)
                        and value.args
                        and isinstance(value.args[0], ast.List)
                    ):
                        case[target] = ast.literal_eval(value.args[0])
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "assertAllClose"
                ):
                    tol = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                    case["rtol"], case["atol"] = tol.get("rtol", 1e-6), tol.get("atol", 1e-6)
                    if fn.name.startswith("test_single_step"):
                        case["expected"] = ast.literal_eval(node.args[1])
            if "golden" in case or "expected" in case:
                out.append(case)
    return out


def jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in config.items() if isinstance(v, (int, float, str, bool, list, type(None)))
    }


def main() -> None:
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        sys.exit("run with KERAS_BACKEND=tensorflow")
    out: dict[str, Any] = {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "initial": {"w": W0.tolist(), "b": B0.tolist()},
        "sparse_indices": SPARSE_INDICES,
        "cases": [run_case(keras, tf, name, config) for name, config in CASES],
        "default_configs": {
            name: jsonable(getattr(keras.optimizers, name)().get_config()) for name in OPTIMIZERS
        },
    }
    out["keras_tests"] = _keras_tests(os.path.dirname(keras.__file__))
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "keras3_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()
