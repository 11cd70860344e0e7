"""An optimizer step under ``torch.compile(fullgraph=True)``: kerasopt's traced step (the Keras
API's ``apply_gradients`` and ``kerasopt.optim``'s ``step()``) against torch.optim's compiled
step (torch's recommended "compiled optimizer", which ``fullgraph=True`` refuses: torch.optim
breaks the graph around its step to set the grad mode), as ratios measured in the same run.

Prints, per optimizer: the first call (trace and compile; a warm inductor cache makes later
processes faster), the median steady step, its ratio to torch.optim's compiled step, and the
graphs and graph breaks dynamo reports (a traced step is one graph, no break).

    python benchmarks/bench_compiled_step.py
    python benchmarks/bench_compiled_step.py --optimizers Adam SGD --scale 0.25

Numbers on a shared machine are noisy: compare ratios within one run, never lone times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo.utils as dynamo_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step

import kerasopt as ko

TORCH = {  # torch.optim's class and kerasopt's learning rate keyword for each optimizer
    "Adam": ("Adam", {"lr": 1e-3}),
    "AdamW": ("AdamW", {"lr": 1e-3}),
    "SGD": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "Adagrad": ("Adagrad", {"lr": 1e-3}),
    "RMSprop": ("RMSprop", {"lr": 1e-3}),
}


def _compiled_step(
    make: Callable[[], Callable[[], Any]], steps: int, warmup: int
) -> tuple[float, list[float], int, int]:
    """(first call's seconds, steady step times, graphs, graph breaks) of a compiled step."""
    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    step = make()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = bench_step.time_steps(step, steps, warmup)
    graphs = int(dynamo_utils.counters["stats"]["unique_graphs"])
    breaks = sum(dynamo_utils.counters["graph_break"].values())
    return first, times, graphs, breaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", nargs="*", default=sorted(TORCH))
    parser.add_argument("--workload", default="transformer", choices=["transformer", "many_small"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = bench_step.workloads(args.scale)[args.workload]
    print(f"{w.name}, {w.params / 1e6:.1f}M params, {args.threads} threads")
    print(
        f"{'optimizer':<9} {'step':<22} {'first call s':>12} {'median ms':>10} "
        f"{'ratio':>6} {'graphs':>6} {'breaks':>6}"
    )
    for name in args.optimizers:
        cls_name, kw = TORCH[name]
        lr = kw["lr"]
        extra = {k: v for k, v in kw.items() if k != "lr"}

        def torch_step(cls_name: str = cls_name, kw: dict[str, Any] = kw) -> Callable[[], Any]:
            params, grads = bench_step.make_params(w)
            for p, g in zip(params, grads):
                p.grad = g
            opt = getattr(torch.optim, cls_name)(params, **kw)
            # (torch.optim's step breaks the graph around itself to set the grad mode, so
            # fullgraph=True refuses it: torch's documented pattern compiles it without)
            return torch.compile(opt.step)

        def optim_step(
            name: str = name, lr: float = lr, extra: dict[str, Any] = extra
        ) -> Callable[[], Any]:
            params, grads = bench_step.make_params(w)
            for p, g in zip(params, grads):
                p.grad = g
            opt = getattr(ko.optim, name)(params, lr=lr, **extra)
            return torch.compile(opt.step, fullgraph=True)

        def keras_step(
            name: str = name, lr: float = lr, extra: dict[str, Any] = extra
        ) -> Callable[[], Any]:
            params, grads = bench_step.make_params(w)
            opt = getattr(ko.optimizers, name)(lr, **extra)
            pairs = list(zip(grads, params))
            fn = torch.compile(lambda: opt.apply_gradients(pairs), fullgraph=True)
            return fn

        rows = [
            ("torch.optim compiled", torch_step),
            ("kerasopt.optim traced", optim_step),
            ("Keras API traced", keras_step),
        ]
        base = None
        for label, make in rows:
            first, times, graphs, breaks = _compiled_step(make, args.steps, args.warmup)
            med = statistics.median(times)
            base = med if base is None else base
            print(
                f"{name:<9} {label:<22} {first:>12.1f} {med * 1e3:>10.2f} "
                f"{med / base:>6.2f} {graphs:>6} {breaks:>6}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
