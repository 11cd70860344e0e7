"""kerasopt.optim step time beside the Keras API and torch.optim, measured in the same run.

``kerasopt.optim.<Name>.step()`` runs the Keras optimizer's own ``apply_gradients`` per param
group; this prints what the torch.optim protocol adds on top (reading ``.grad``, syncing the
group values, per-parameter bookkeeping) and both against torch.optim's foreach / fused steps.

    python benchmarks/bench_optim.py                      # default optimizers, all workloads
    python benchmarks/bench_optim.py --optimizers Adam --impls foreach compiled --scale 1

The front ends are timed **interleaved** (one step of each in turn, every round), so load from
other processes skews them alike; medians over the rounds. Workloads are bench_step.py's
(``--scale 0.1`` by default: ~5M parameters in 148 tensors, 200 small tensors) plus ``tiny``
(20 tensors of 64: the per-step overhead). Compare ratios within one run, never lone times.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_step as b

import kerasopt as ko


def _engine(impl: str) -> dict[str, Any]:
    return {"implementation": impl} if impl != "compiled" else {"jit_compile": True}


def front_ends(name: str, impls: list[str], w: b.Workload) -> dict[str, Callable[[], Any]]:
    """One zero-argument step per front end, each on its own copy of the parameters."""
    steps: dict[str, Callable[[], Any]] = {}
    if name in b.TORCH_EQUIVALENT:
        cls_name, kw = b.TORCH_EQUIVALENT[name]
        for mode in ["foreach"] + (["fused"] if name in b.FUSED else []):
            params, grads = b.make_params(w)
            for p, g in zip(params, grads):
                p.grad = g
            steps[f"torch.optim {mode}"] = getattr(torch.optim, cls_name)(
                params, **kw, **{mode: True}
            ).step
    for impl in impls:
        params, grads = b.make_params(w)
        keras = getattr(ko.optimizers, name)(**_engine(impl))
        pairs = list(zip(grads, params))
        steps[f"Keras API ({impl})"] = lambda keras=keras, pairs=pairs: keras.apply_gradients(pairs)
        params, grads = b.make_params(w)
        for p, g in zip(params, grads):
            p.grad = g
        steps[f"kerasopt.optim ({impl})"] = getattr(ko.optim, name)(params, **_engine(impl)).step
    return steps


def interleaved(
    steps: dict[str, Callable[[], Any]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", nargs="*", default=["SGD", "Adam", "AdamW", "Adagrad"])
    parser.add_argument("--workloads", nargs="*", default=["transformer", "many_small", "tiny"])
    parser.add_argument("--impls", nargs="*", default=["auto", "flat"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stat",
        choices=["median", "min"],
        default="median",
        help="what the ratios compare (min is steadier on a loaded machine)",
    )
    args = parser.parse_args(argv)
    pick = statistics.median if args.stat == "median" else min
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads; ratios of the {args.stat} "
        f"of {args.steps} rounds"
    )
    wl = b.workloads(args.scale)
    wl["tiny"] = b.Workload("tiny (20 tensors of 64)", [(64,)] * 20)
    for key in args.workloads:
        w = wl[key]
        print(f"\n## {w.name}: {w.params / 1e6:.2f}M params")
        print(
            f"{'optimizer':<10} {'front end':<24} {'median ms (min-max)':<24} {'vs Keras API':>12} "
            f"{'vs torch foreach':>16} {'vs torch fused':>14}"
        )
        for name in args.optimizers:
            times = interleaved(front_ends(name, args.impls, w), args.steps, args.warmup)
            med = {label: pick(t) for label, t in times.items()}
            for label, t in times.items():
                impl = label[label.find("(") + 1 : -1] if "(" in label else ""
                keras = med.get(f"Keras API ({impl})")
                vs_keras = f"{med[label] / keras:.2f}x" if keras and "optim (" in label else "-"
                ratios = [
                    f"{med[label] / med[m]:.2f}x" if m in med else "-"
                    for m in ("torch.optim foreach", "torch.optim fused")
                ]
                print(
                    f"{name:<10} {label:<24} {b.fmt_ms(t):<24} {vs_keras:>12} {ratios[0]:>16} "
                    f"{ratios[1]:>14}"
                )
            gc.collect()
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
