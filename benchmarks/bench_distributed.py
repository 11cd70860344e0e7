"""Per-rank optimizer memory (Adam: unsharded, ZeRO-1, FSDP2) and 2-rank step time vs torch.optim.

    python benchmarks/bench_distributed.py [--steps 20] [--width 1024]

Two gloo processes on 127.0.0.1 (CPU). Memory is the bytes of optimizer state each rank holds
(slots and counters; FSDP2: the local shards). Time is the median of a whole training step
(forward, backward with DDP's all-reduce or FSDP2's reduce-scatter, optimizer step), printed as
a ratio to the same step with torch.optim.Adam (foreach) in the same run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import kerasopt as ko


def _model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
    )


def _state_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        if hasattr(t, "to_local"):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total


def _keras_state(opt: Any) -> list[torch.Tensor]:
    return list(opt.variables())


def _torch_state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def _run(setup: str, width: int, steps: int, rank: int) -> tuple[float, int]:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    net = _model(width)
    if setup.startswith("fsdp"):
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(net)
        model: Any = net
    else:
        model = DistributedDataParallel(net)
    params = list(net.parameters())
    if setup in ("ddp-torch", "fsdp-torch"):
        opt: Any = torch.optim.Adam(params, lr=1e-3, foreach=True)
    elif setup == "ddp-kerasopt.optim":
        opt = ko.optim.Adam(params, lr=1e-3)
    elif setup == "zero1-kerasopt.optim":
        opt = ZeroRedundancyOptimizer(params, optimizer_class=ko.optim.Adam, lr=1e-3)
    else:  # ddp-keras, fsdp-keras
        opt = ko.optimizers.Adam(1e-3)
        opt.build(net)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(64, width, generator=gen)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model(x).square().mean().backward()
        if isinstance(opt, ko.optimizers.Optimizer):
            opt.apply_gradients([(p.grad, p) for p in params])
        else:
            opt.step()
        for p in params:
            p.grad = None
        times.append(time.perf_counter() - start)
    if isinstance(opt, ko.optimizers.Optimizer):
        state = _keras_state(opt)
    elif isinstance(opt, ZeroRedundancyOptimizer):
        state = _torch_state(opt.optim)
    else:
        state = _torch_state(opt)
    return statistics.median(times[2:]), _state_bytes(state)


SETUPS = (
    "ddp-torch",
    "ddp-keras",
    "ddp-kerasopt.optim",
    "zero1-kerasopt.optim",
    "fsdp-torch",
    "fsdp-keras",
)


def _worker(rank: int, port: int, width: int, steps: int, out: Any) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for setup in SETUPS:
            seconds, nbytes = _run(setup, width, steps, rank)
            out.put((setup, rank, seconds, nbytes))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(
        _worker, args=(port, args.width, args.steps, out), nprocs=2, start_method="spawn"
    )
    rows: dict[str, dict[int, tuple[float, int]]] = {}
    while not out.empty():
        setup, rank, seconds, nbytes = out.get()
        rows.setdefault(setup, {})[rank] = (seconds, nbytes)
    params = sum(p.numel() for p in _model(args.width).parameters())
    print(f"Adam, {params / 1e6:.1f}M float32 parameters, 2 gloo ranks, {args.steps} steps")
    print(f"{'setup':24} {'state MB rank0/rank1':>22} {'step ms':>9} {'vs torch.optim':>15}")
    for setup in SETUPS:
        r = rows[setup]
        base = rows["fsdp-torch" if setup.startswith("fsdp") else "ddp-torch"]
        ms = max(r[0][0], r[1][0]) * 1e3
        ratio = max(r[0][0], r[1][0]) / max(base[0][0], base[1][0])
        mem = f"{r[0][1] / 1e6:.1f} / {r[1][1] / 1e6:.1f}"
        print(f"{setup:24} {mem:>22} {ms:>9.1f} {ratio:>14.2f}x")


if __name__ == "__main__":
    main()
