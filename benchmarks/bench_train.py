"""A full training step (forward, backward, optimizer) with kerasopt's ``minimize`` against the same
loop written with torch.optim, to show what ``minimize()`` adds. Prints medians and the ratio.

    python benchmarks/bench_train.py --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kerasopt as ko


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = torch.randn(args.batch, 256), torch.randint(0, 10, (args.batch,))
    loss_fn = torch.nn.functional.cross_entropy

    def run_torch(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def run_ko(model: torch.nn.Module, opt: ko.optimizers.Optimizer) -> None:
        opt.minimize(lambda: loss_fn(model(x), y), model)

    print(
        f"MLP 256-512-512-10, batch {args.batch}, {args.threads} threads; median ms per training step"
    )
    print(
        f"{'optimizer':<10} {'torch.optim':>12} {'kerasopt':>10} {'ratio':>7} {'jit_compile':>12} {'ratio':>7}"
    )
    for name, torch_opt, ko_opt in [
        (
            "Adam",
            lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
            lambda jit: ko.optimizers.Adam(1e-3, jit_compile=jit),
        ),
        (
            "SGD",
            lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=True),
            lambda jit: ko.optimizers.SGD(1e-2, momentum=0.9, jit_compile=jit),
        ),
    ]:
        times: dict[str, list[float]] = {"torch": [], "ko": [], "jit": []}
        for _ in range(args.rounds):  # interleave rounds so drift hits all alike
            m1, m2, m3 = make_model(), make_model(), make_model()
            o1, o2, o3 = torch_opt(m1.parameters()), ko_opt(False), ko_opt(True)
            for _ in range(10):  # warm-up (and the compile of the jit_compile run)
                run_torch(m1, o1)
                run_ko(m2, o2)
                run_ko(m3, o3)
            for _ in range(args.steps // args.rounds):
                t0 = time.perf_counter()
                run_torch(m1, o1)
                t1 = time.perf_counter()
                run_ko(m2, o2)
                t2 = time.perf_counter()
                run_ko(m3, o3)
                t3 = time.perf_counter()
                times["torch"].append(t1 - t0)
                times["ko"].append(t2 - t1)
                times["jit"].append(t3 - t2)
        tm, km, jm = (statistics.median(times[k]) for k in ("torch", "ko", "jit"))
        print(
            f"{name:<10} {tm * 1e3:12.3f} {km * 1e3:10.3f} {km / tm:6.2f}x {jm * 1e3:12.3f} {jm / tm:6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
