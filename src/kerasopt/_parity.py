"""``python -m kerasopt parity``: replay a TensorFlow training run recorded in the package.

``tools/record_parity.py`` trained a small MLP (64-16-10, tanh) in float64 on scikit-learn's
digits with four ``tf_keras.optimizers.legacy`` optimizers and stored TensorFlow's weights after
every step in ``_parity_data/digits_mlp.npz``. This module replays the same batches from the same
initial weights through ``kerasopt.optimizers`` and through the closest ``torch.optim`` settings
(the same hyperparameter values under torch's names), and reports, per step, the largest
absolute difference of any weight from TensorFlow's. Nothing is downloaded: the digits ship with
scikit-learn.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch

NAMES = ("W1", "b1", "W2", "b2")


@dataclass
class ParityRun:
    """One optimizer's replay: per step, the largest weight difference from TensorFlow.

    Example:
        >>> run = ParityRun("Adam", kerasopt=[3e-15], torch_optim=[3e-3], tf_loss=[2.59])
        >>> run.torch_optim[0] > 1e9 * run.kerasopt[0]
        True
    """

    label: str
    kerasopt: list[float] = field(default_factory=list)
    torch_optim: list[float] = field(default_factory=list)
    tf_loss: list[float] = field(default_factory=list)


def load_record() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The recorded run: its metadata and arrays.

    Example:
        >>> meta, arrays = load_record()
        >>> meta["steps"], arrays["init/W1"].shape
        (50, (64, 16))
    """
    path = resources.files("kerasopt") / "_parity_data" / "digits_mlp.npz"
    with path.open("rb") as f, np.load(f) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    return meta, arrays


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit(
            f"The parity demo needs the demo extra: pip install 'kerasopt[demo]' ({e})"
        ) from e
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float64) / 16.0
    return x, torch.tensor(digits.target, dtype=torch.int64)


def _loss(w: Mapping[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    hidden = torch.tanh(xb @ w["W1"] + w["b1"])
    return torch.nn.functional.cross_entropy(hidden @ w["W2"] + w["b2"], yb)


def _keras_optimizer(cls_name: str, args: dict[str, Any]) -> Any:
    import kerasopt as ko

    kwargs = dict(args)
    if isinstance(kwargs.get("learning_rate"), dict):
        kwargs["learning_rate"] = ko.optimizers.schedules.deserialize(kwargs["learning_rate"])
    return getattr(ko.optimizers, cls_name)(**kwargs)


def _torch_optimizer(
    cls_name: str, args: dict[str, Any], params: list[torch.Tensor]
) -> tuple[torch.optim.Optimizer, Callable[[], None]]:
    """The closest torch.optim settings: the same values under torch's names (Keras defaults
    filled in), a Keras schedule as a ``LambdaLR`` with the same formula."""
    lr = args["learning_rate"]
    factor: Callable[[int], float] | None = None
    if isinstance(lr, dict):
        cfg = lr["config"]
        lr = cfg["initial_learning_rate"]
        steps, rate = cfg["decay_steps"], cfg["decay_rate"]
        factor = lambda s: rate ** (s / steps)  # noqa: E731 - ExponentialDecay, staircase=False
    opt: torch.optim.Optimizer
    if cls_name == "Adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7)
    elif cls_name == "RMSprop":
        opt = torch.optim.RMSprop(
            params, lr=lr, alpha=0.9, eps=1e-7, momentum=args.get("momentum", 0.0)
        )
    elif cls_name == "SGD":
        opt = torch.optim.SGD(params, lr=lr, momentum=args.get("momentum", 0.0))
    elif cls_name == "Adagrad":
        opt = torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=0.1, eps=1e-7)
    else:  # pragma: no cover - the recorder writes only these
        raise ValueError(f"no torch.optim mapping for {cls_name}")
    if factor is None:
        return opt, lambda: None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched.step


def replay(steps: int | None = None) -> list[ParityRun]:
    """Replays the recorded TensorFlow run with kerasopt and with torch.optim.

    Args:
        steps: how many of the recorded steps to replay (default: all of them).

    Returns:
        One ``ParityRun`` per recorded optimizer, with the largest absolute weight difference
        from TensorFlow after each step, for kerasopt and for torch.optim.

    Example:
        >>> runs = replay(steps=3)
        >>> [r.label for r in runs][:2]
        ['Adam', 'RMSprop (momentum 0.9)']
        >>> max(runs[0].kerasopt) < 1e-12 < 1e-9 < runs[0].torch_optim[-1]
        True
    """
    import kerasopt as ko

    meta, arrays = load_record()
    x, y = _digits()
    if abs(float(x.sum()) - meta["data_sum"]) > 1e-6:
        raise RuntimeError("scikit-learn's digits differ from the data the run was recorded on")
    n = meta["steps"] if steps is None else min(steps, meta["steps"])
    batches = torch.as_tensor(arrays["batches"].astype(np.int64))
    out: list[ParityRun] = []
    for i, spec in enumerate(meta["runs"]):
        run = ParityRun(spec["label"], tf_loss=arrays[f"run{i}/loss"][:n].tolist())
        ko_w = {k: ko.Variable(arrays[f"init/{k}"], name=k) for k in NAMES}
        th_w = {
            k: torch.nn.Parameter(torch.tensor(arrays[f"init/{k}"], dtype=torch.float64))
            for k in NAMES
        }
        ko_opt = _keras_optimizer(spec["class"], spec["args"])
        th_opt, th_sched = _torch_optimizer(spec["class"], spec["args"], list(th_w.values()))
        for step in range(n):
            xb, yb = x[batches[step]], y[batches[step]]
            ko_opt.minimize(lambda xb=xb, yb=yb, w=ko_w: _loss(w, xb, yb), list(ko_w.values()))
            th_opt.zero_grad()
            _loss(th_w, xb, yb).backward()
            th_opt.step()
            th_sched()
            for weights, diffs in ((ko_w, run.kerasopt), (th_w, run.torch_optim)):
                diffs.append(
                    max(
                        float(
                            np.abs(weights[k].detach().numpy() - arrays[f"run{i}/{k}"][step]).max()
                        )
                        for k in NAMES
                    )
                )
        out.append(run)
    return out


def _arguments(args: dict[str, Any]) -> str:
    """``learning_rate=0.01, momentum=0.9``, a schedule written as its class and config."""
    out = []
    for key, value in args.items():
        if isinstance(value, dict):
            config = ", ".join(f"{k}={v}" for k, v in value["config"].items())
            value = f"{value['class_name']}({config})"
        out.append(f"{key}={value}")
    return ", ".join(out)


def plot(runs: list[ParityRun], out: str) -> None:
    """Writes the picture: difference from TensorFlow per step, log scale, one panel per
    optimizer, one line per library.

    Args:
        runs: what ``replay`` returned.
        out: the PNG file to write.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "parity.png")
        >>> plot(replay(steps=1), path)
        >>> os.path.getsize(path) > 1000
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.2), sharey=True)
    floor = 1e-18  # a difference of exactly 0 has no logarithm
    for ax, run in zip(np.atleast_1d(axes), runs):
        steps = range(1, len(run.kerasopt) + 1)
        ax.plot(steps, [max(d, floor) for d in run.kerasopt], label="kerasopt")
        ax.plot(steps, [max(d, floor) for d in run.torch_optim], label="torch.optim")
        ax.set_yscale("log")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, which="major", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("max |weight - TF weight| (float64)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Replaying a TensorFlow training run (MLP on scikit-learn digits)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def parity(steps: int | None = None, out: str | None = "parity.png") -> list[ParityRun]:
    """Replays the recorded run, prints the differences per step and writes the picture.

    Args:
        steps: how many recorded steps to replay (default: all).
        out: where to write the PNG (``None``: no picture).

    Returns:
        The runs, as ``replay`` returns them.

    Example:
        >>> runs = parity(steps=2, out=None)  # doctest: +ELLIPSIS
        Largest |weight - TensorFlow's weight| after each step (float64)...
    """
    runs = replay(steps)
    meta, _ = load_record()
    print(
        "Largest |weight - TensorFlow's weight| after each step (float64), recorded with "
        f"TensorFlow {meta['tensorflow']} / tf_keras {meta['tf_keras']}"
    )
    short = [spec["class"] for spec in meta["runs"]]
    for spec in meta["runs"]:
        print(f"  {spec['class']}({_arguments(spec['args'])})")
    print(("\n step" + "".join(f"{name:^20}" for name in short)).rstrip())
    print(("     " + "  kerasopt    torch " * len(runs)).rstrip())
    for step in range(len(runs[0].kerasopt)):
        cells = "".join(f"  {r.kerasopt[step]:8.1e} {r.torch_optim[step]:8.1e} " for r in runs)
        print(f" {step + 1:4d}{cells}".rstrip())
    print()
    for name, run in zip(short, runs):
        print(
            f"{name:>8}: kerasopt at most {max(run.kerasopt):.1e} from TensorFlow over "
            f"{len(run.kerasopt)} steps; torch.optim {run.torch_optim[-1]:.1e} at the end"
        )
    if out is not None:
        plot(runs, out)
        print(f"\npicture written to {out}")
    return runs
