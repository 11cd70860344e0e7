"""Optimizer-in-backward: a whole training step (forward, backward, update) and the peak memory
it adds ("step peak": above what stays resident between steps, "kept"), against backward + a
torch fused step. Each variant runs in its own process (peak
resident memory is per process); the ratios are of medians measured in this one run.

    python benchmarks/bench_in_backward.py                  # ~38M parameters (150 MB of grads)
    python benchmarks/bench_in_backward.py --width 512      # a quick look

Variants: torch.optim Adam fused (backward, step, zero_grad); kerasopt.optim Adam (auto, and
flat with its gradients kept in the flat buffer); torch's ``_apply_optimizer_in_backward`` with
kerasopt.optim.Adam and with torch's fused Adam; ``kerasopt.apply_in_backward`` (Keras API).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

import kerasopt as ko

VARIANTS = [
    "torch fused step",
    "kerasopt.optim step",
    "kerasopt.optim flat step",
    "torch in-backward (kerasopt.optim)",
    "torch in-backward (torch fused)",
    "kerasopt.apply_in_backward",
]


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(variant: str, width: int, layers: int, steps: int) -> dict[str, Any]:
    from torch.distributed.optim import _apply_optimizer_in_backward

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    x = torch.randn(32, width)
    params = list(model.parameters())
    step: Any
    if variant == "torch fused step":
        opt = torch.optim.Adam(params, lr=1e-4, fused=True)
        step = lambda: (model(x).square().mean().backward(), opt.step(), opt.zero_grad())  # noqa: E731
    elif variant == "kerasopt.optim step":
        kopt = ko.optim.Adam(params, lr=1e-4)
        step = lambda: (model(x).square().mean().backward(), kopt.step(), kopt.zero_grad())  # noqa: E731
    elif variant == "kerasopt.optim flat step":
        fopt = ko.optim.Adam(params, lr=1e-4, implementation="flat")
        step = lambda: (  # noqa: E731
            model(x).square().mean().backward(),
            fopt.step(),
            fopt.zero_grad(set_to_none=False),
        )
    elif variant == "torch in-backward (kerasopt.optim)":
        # (one parameter per optimizer is under `auto`'s compile threshold: ask for it)
        _apply_optimizer_in_backward(
            ko.optim.Adam, params, {"lr": 1e-4, "implementation": "compiled"}
        )
        step = lambda: model(x).square().mean().backward()  # noqa: E731
    elif variant == "torch in-backward (torch fused)":
        _apply_optimizer_in_backward(torch.optim.Adam, params, {"lr": 1e-4, "fused": True})
        step = lambda: model(x).square().mean().backward()  # noqa: E731
    elif variant == "kerasopt.apply_in_backward":
        ko.apply_in_backward(ko.optimizers.Adam(1e-4), model)
        step = lambda: model(x).square().mean().backward()  # noqa: E731
    else:
        raise ValueError(variant)
    # Memory above the resident size with the model's parameters only: `warm`, what stays
    # after the first steps (slots, gradients kept between steps, and the compiler's own
    # code and caches, ~75 MB whatever the model: kerasopt's compiled engines import inductor);
    # `steady`, the peak over later steps above that (gradients, activations, temporaries).
    base = _status_bytes("VmRSS")
    for _ in range(3):
        step()
    warm = _status_bytes("VmRSS") - base
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    steady = _status_bytes("VmHWM") - base - warm
    return {"median": statistics.median(times), "warm": warm, "steady": steady}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.width, args.layers, args.steps)))
        return 0
    params = args.layers * (args.width * args.width + args.width)
    print(
        f"torch {torch.__version__}, {args.threads} threads; MLP {args.layers} x {args.width}: "
        f"{params / 1e6:.1f}M params, gradients {params * 4 / 1e6:.0f} MB; median of {args.steps}"
    )
    print(
        f"{'variant':<36} {'step ms':>8} {'vs torch fused':>15} {'step peak MB':>13} "
        f"{'vs torch fused':>15} {'kept MB':>8}"
    )
    results: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [
                *(sys.executable, __file__, "--child", variant),
                *("--width", str(args.width), "--layers", str(args.layers)),
                *("--steps", str(args.steps), "--threads", str(args.threads)),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            # a fixed mmap threshold: large blocks go back to the system when freed, so the
            # peak resident size follows the memory in use (glibc's adaptive threshold would
            # keep freed gradients resident and hide what freeing them saves)
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        )
        try:
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            print(f"{variant:<36} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
            continue
        r, base = results[variant], results.get("torch fused step")
        ratio = f"{r['median'] / base['median']:.2f}x" if base else "-"
        mem = f"{r['steady'] / base['steady']:.2f}x" if base else "-"
        print(
            f"{variant:<36} {r['median'] * 1e3:8.1f} {ratio:>15} {r['steady'] / 1e6:13.0f} "
            f"{mem:>15} {r['warm'] / 1e6:8.0f}"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
