"""``python -m kerasopt demo``: train a small MLP on scikit-learn's digits with SGD and Adam;
``python -m kerasopt parity``: replay a TensorFlow training run recorded in the package with kerasopt
and with torch.optim, and draw how far each is from TensorFlow's weights, step by step;
``python -m kerasopt bench``: step time against torch.optim, as ratios in the same run.

The data ships with scikit-learn (no download). Each optimizer trains the same initial model through
``minimize``; the script prints test accuracy and writes a PNG with both loss curves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def demo(epochs: int = 30, out: str = "demo_loss.png") -> dict[str, float]:
    """Trains the demo model with SGD and Adam and returns their test accuracies."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from tqdm import tqdm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit(
            f"The demo needs the demo extra: pip install 'kerasopt[demo]' ({e})"
        ) from e
    import torch

    import kerasopt as ko

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        range(len(y)), test_size=0.25, random_state=0, stratify=y
    )
    x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]

    def make_model() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    runs = {
        "SGD (momentum 0.9)": ko.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        "Adam": ko.optimizers.Adam(learning_rate=0.003),
    }
    curves: dict[str, list[float]] = {}
    accuracy: dict[str, float] = {}
    batch = 64
    for label, opt in runs.items():
        model = make_model()
        losses: list[float] = []
        start = time.perf_counter()
        bar = tqdm(range(epochs), desc=f"{label:>18}", file=sys.stdout)
        for _ in bar:
            perm = torch.randperm(len(x_train))
            total = 0.0
            for i in range(0, len(perm), batch):
                xb, yb = x_train[perm[i : i + batch]], y_train[perm[i : i + batch]]
                step_loss: list[torch.Tensor] = []

                def loss_fn(
                    xb: torch.Tensor = xb,
                    yb: torch.Tensor = yb,
                    model: torch.nn.Module = model,
                    step_loss: list[torch.Tensor] = step_loss,
                ) -> torch.Tensor:
                    loss = torch.nn.functional.cross_entropy(model(xb), yb)
                    step_loss.append(loss.detach())
                    return loss

                opt.minimize(loss_fn, model)
                total += float(step_loss[0]) * len(xb)
            losses.append(total / len(x_train))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        accuracy[label] = acc
        curves[label] = losses
        print(
            f"{label}: test accuracy {acc:.3f} ({time.perf_counter() - start:.1f}s, {int(opt.iterations)} steps)"
        )

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_yscale("log")
    ax.set_title("kerasopt on scikit-learn digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"loss curves written to {Path(out).resolve()}")
    return accuracy


def bench(tensors: int = 148, numel: int = 20_000, rounds: int = 30) -> dict[str, float]:
    """Step time of Adam and SGD (momentum) on ``tensors`` float32 tensors: the Keras API, the
    torch.optim protocol and torch.optim (foreach, fused), interleaved round by round so that
    machine load skews them alike; printed as ratios to torch.optim foreach in the same run.
    (``benchmarks/`` has the full tables: engines, memory, many small tensors, distributed.)"""
    import torch

    import kerasopt as ko

    def make() -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(0)
        return [torch.nn.Parameter(torch.randn(numel, generator=gen)) for _ in range(tensors)]

    ratios: dict[str, float] = {}
    cases: list[tuple[str, Any, Any, dict[str, Any]]] = [
        ("Adam", ko.optimizers.Adam(1e-3), torch.optim.Adam, {"lr": 1e-3}),
        (
            "SGD",
            ko.optimizers.SGD(0.01, momentum=0.9),
            torch.optim.SGD,
            {"lr": 0.01, "momentum": 0.9},
        ),
    ]
    for name, keras, torch_cls, kwargs in cases:
        runs: dict[str, Any] = {}
        keys = ("keras", "keras flat", "kerasopt.optim", "optim flat", "foreach", "fused")
        params = {k: make() for k in keys}
        for p in (q for ps in params.values() for q in ps):
            p.grad = torch.full_like(p, 1e-3)
        keras_flat = type(keras).from_config({**keras.get_config(), "implementation": "flat"})
        for key, opt in (("keras", keras), ("keras flat", keras_flat)):
            runs[key] = lambda ps=params[key], opt=opt: opt.apply_gradients(
                [(p.grad, p) for p in ps]
            )
        optim = getattr(ko.optim, name)(params["kerasopt.optim"], **kwargs)
        runs["kerasopt.optim"] = optim.step
        # (flat: `.grad` stays a view of the gradient buffer, as under zero_grad(set_to_none=False))
        flat = getattr(ko.optim, name)(params["optim flat"], implementation="flat", **kwargs)
        runs["optim flat"] = flat.step
        runs["foreach"] = torch_cls(params["foreach"], foreach=True, **kwargs).step
        runs["fused"] = torch_cls(params["fused"], fused=True, **kwargs).step
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for key, step in runs.items():
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
        best = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        print(f"{name}: {tensors} tensors x {numel} float32, median of {rounds} interleaved steps")
        for key, t in best.items():
            ratio = t / best["foreach"]
            ratios[f"{name}/{key}"] = ratio
            print(f"  {key:15} {t * 1e3:8.2f} ms  {ratio:5.2f}x torch.optim foreach")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasopt")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="train a small MLP with SGD and Adam")
    p_demo.add_argument("--epochs", type=int, default=30)
    p_demo.add_argument("--out", default="demo_loss.png")
    p_parity = sub.add_parser(
        "parity", help="replay a recorded TensorFlow run with kerasopt and torch.optim"
    )
    p_parity.add_argument("--steps", type=int, default=None)
    p_parity.add_argument("--out", default="parity.png")
    p_bench = sub.add_parser("bench", help="step time against torch.optim, as ratios")
    p_bench.add_argument("--tensors", type=int, default=148)
    p_bench.add_argument("--numel", type=int, default=20_000)
    p_bench.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.epochs, args.out)
    elif args.command == "parity":
        from ._parity import parity

        parity(args.steps, args.out)
    elif args.command == "bench":
        bench(args.tensors, args.numel, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
