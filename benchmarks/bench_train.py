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
    print(f"{'optimizer':<10} {'torch.optim':>12} {'kerasopt':>10} {'ratio':>7}")
    for name, torch_opt, ko_opt in [
        (
            "Adam",
            lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
            lambda: ko.optimizers.Adam(1e-3),
        ),
        (
            "SGD",
            lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=True),
            lambda: ko.optimizers.SGD(1e-2, momentum=0.9),
        ),
    ]:
        t_times: list[float] = []
        k_times: list[float] = []
        for _ in range(args.rounds):  # interleave rounds so drift hits both alike
            m1 = make_model()
            o1 = torch_opt(m1.parameters())
            m2 = make_model()
            o2 = ko_opt()
            for _ in range(10):
                run_torch(m1, o1)
                run_ko(m2, o2)
            for _ in range(args.steps // args.rounds):
                t0 = time.perf_counter()
                run_torch(m1, o1)
                t1 = time.perf_counter()
                run_ko(m2, o2)
                t2 = time.perf_counter()
                t_times.append(t1 - t0)
                k_times.append(t2 - t1)
        tm, km = statistics.median(t_times), statistics.median(k_times)
        print(f"{name:<10} {tm * 1e3:12.3f} {km * 1e3:10.3f} {km / tm:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
