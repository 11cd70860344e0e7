"""Records the TensorFlow run that ``python -m kerasopt parity`` replays (no download at replay).

Run it with an interpreter that has TensorFlow and tf_keras installed — never the project's own
environment (TensorFlow is not a dependency of kerasopt or of its CI)::

    /path/to/tf-venv/bin/python tools/record_parity.py [--out src/kerasopt/_parity_data/digits_mlp.npz]

It does not import kerasopt or torch. A small MLP (64-16-10, tanh) is trained in float64 on
scikit-learn's digits (the data ships with scikit-learn) with four ``tf_keras.optimizers.legacy``
optimizers (optimizer_v2, the numerics of ``kerasopt.optimizers``). The file holds the initial
weights, the sample indices of every batch, and TensorFlow's loss and weights after every step;
``kerasopt.parity`` replays the same batches through kerasopt and through torch.optim.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.datasets import load_digits

STEPS = 50
BATCH = 32
SIZES = (64, 16, 10)
NAMES = ("W1", "b1", "W2", "b2")

# name -> (tf_keras.optimizers.legacy class, its arguments; a schedule is given as a dict)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "Adam": ("Adam", {"learning_rate": 0.01}),
    "RMSprop (momentum 0.9)": ("RMSprop", {"learning_rate": 0.001, "momentum": 0.9}),
    "SGD (momentum 0.9, ExponentialDecay)": (
        "SGD",
        {
            "learning_rate": {
                "class_name": "ExponentialDecay",
                "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5},
            },
            "momentum": 0.9,
        },
    ),
    "Adagrad": ("Adagrad", {"learning_rate": 0.1}),
}


def data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, pixels scaled to [0, 1], in float64."""
    digits = load_digits()
    return digits.data.astype(np.float64) / 16.0, digits.target.astype(np.int64)


def initial_weights() -> dict[str, np.ndarray]:
    """Glorot-uniform kernels and zero biases from a fixed NumPy seed."""
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(SIZES), start=1):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        out[f"W{i}"] = rng.uniform(-limit, limit, size=(fan_in, fan_out))
        out[f"b{i}"] = rng.uniform(-0.1, 0.1, size=(fan_out,))
    return out


def batches(n: int) -> np.ndarray:
    """The sample indices of every step's batch, shape (STEPS, BATCH)."""
    rng = np.random.default_rng(1)
    return np.stack([rng.choice(n, size=BATCH, replace=False) for _ in range(STEPS)])


def run(
    cls_name: str, args: dict[str, Any], x: np.ndarray, y: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """TF's losses and weights after every step."""
    kwargs = dict(args)
    if isinstance(kwargs["learning_rate"], dict):
        kwargs["learning_rate"] = tf_keras.optimizers.schedules.deserialize(kwargs["learning_rate"])
    opt = getattr(tf_keras.optimizers.legacy, cls_name)(**kwargs)
    weights = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in initial_weights().items()}
    variables = [weights[k] for k in NAMES]
    losses, history = [], {k: [] for k in NAMES}
    for step in range(STEPS):
        xb = tf.constant(x[idx[step]])
        yb = tf.constant(y[idx[step]])
        with tf.GradientTape() as tape:
            hidden = tf.tanh(tf.matmul(xb, weights["W1"]) + weights["b1"])
            logits = tf.matmul(hidden, weights["W2"]) + weights["b2"]
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
            )
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        losses.append(float(loss.numpy()))
        for k in NAMES:
            history[k].append(weights[k].numpy().copy())
    return np.asarray(losses), {k: np.stack(v) for k, v in history.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", default=root / "src/kerasopt/_parity_data/digits_mlp.npz")
    args = parser.parse_args()
    x, y = data()
    idx = batches(len(y))
    arrays: dict[str, np.ndarray] = {f"init/{k}": v for k, v in initial_weights().items()}
    arrays["batches"] = idx.astype(np.int16)
    for i, (label, (cls_name, kwargs)) in enumerate(RUNS.items()):
        losses, history = run(cls_name, kwargs, x, y, idx)
        arrays[f"run{i}/loss"] = losses
        for k, v in history.items():
            arrays[f"run{i}/{k}"] = v
        print(f"{label}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    meta = {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "steps": STEPS,
        "batch": BATCH,
        "sizes": list(SIZES),
        "data_sum": float(x.sum()),
        "runs": [{"label": k, "class": c, "args": a} for k, (c, a) in RUNS.items()],
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
