"""One rank of a torch.distributed scenario (gloo on 127.0.0.1), run by tests/test_distributed.py.

``python -m tests.distributed_worker SCENARIO RANK WORLD PORT OUTDIR``: joins the process group,
runs the scenario and writes what it measured to ``OUTDIR/rank<RANK>.pt``; the test compares it
with a single-process run of the same functions (``world=1``, no process group).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import kerasopt as ko

STEPS = 3
GLOBAL_BATCH = 12  # divisible by 1, 2, 3 ranks


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    ).double()


def batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the step's global batch (the single process takes all rows)."""
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    y = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
    n = GLOBAL_BATCH // world
    return x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]


def shard(net: torch.nn.Module) -> None:
    """FSDP2 over each Linear layer, then the root (DTensor parameters sharded on dim 0)."""
    from torch.distributed.fsdp import fully_shard

    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)


def loss_of(net: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((net(x) - y) ** 2).mean()


def keras(name: str) -> Any:
    configs: dict[str, Callable[[], Any]] = {
        "Adam": lambda: ko.optimizers.Adam(0.05),
        "Adam-compiled": lambda: ko.optimizers.Adam(0.05, implementation="compiled"),
        "Adam-flat": lambda: ko.optimizers.Adam(0.05, implementation="flat"),
        "SGD-clip": lambda: ko.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=0.5),
        "Lamb": lambda: ko.optimizers.Lamb(0.05),
        "Adafactor": lambda: ko.optimizers.Adafactor(0.05),
        "Muon": lambda: ko.optimizers.Muon(0.05),
        "LossScale": lambda: ko.optimizers.LossScaleOptimizer(ko.optimizers.Adam(0.05)),
        "AdamW-clipnorm": lambda: ko.optimizers.AdamW(0.05, clipnorm=0.1),
    }
    return configs[name]()


def full(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(api: str, opt_name: str, net: Any, rank: int, world: int, steps: int = STEPS) -> Any:
    """``steps`` updates of ``net`` through one of the four ways to drive an optimizer."""
    if api.startswith("optim"):
        # "optim-flat": flat storage, `.grad` kept as views of its buffer (zeroed in place)
        engine = {"implementation": "flat"} if api == "optim-flat" else {}
        opt: Any = ko.optim.Adam(net.parameters(), lr=0.05, **engine)
    else:
        opt = keras(opt_name)
        opt.build(net)  # state keys by `named_parameters()` whichever API then feeds it
    params = list(net.parameters())
    for step in range(steps):
        x, y = batch(step, rank, world)
        if api == "backward":
            loss_of(net, x, y).backward()
            opt.apply_gradients([(p.grad, p) for p in params])
            for p in params:
                p.grad = None
        elif api == "minimize":
            opt.minimize(lambda x=x, y=y: loss_of(net, x, y), net)
        elif api == "tape":
            with ko.GradientTape() as tape:
                loss = loss_of(net, x, y)
            grads = tape.gradient(loss, params)
            opt.apply_gradients(zip(grads, params))
        elif api.startswith("optim"):
            loss_of(net, x, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=api != "optim-flat")
    return opt


def counting_hook(state, bucket):  # DDP checks the annotations: none, or the real classes
    state["calls"] += 1
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    return allreduce_hook(None, bucket)  # type: ignore[arg-type]


def ddp(rank: int, world: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    out: dict[str, Any] = {}
    for api in ("backward", "minimize", "tape", "optim", "optim-flat"):
        net = model()
        if world > 1:
            wrapped = DistributedDataParallel(net)
            calls = {"calls": 0}
            wrapped.register_comm_hook(calls, counting_hook)
        else:
            wrapped, calls = net, {"calls": 0}
        train(api, "Adam", wrapped, rank, world)
        out[api] = [p.detach().clone() for p in net.parameters()]
        out[f"{api}/allreduce_calls"] = calls["calls"]
    return out


def zero(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    net = model()
    wrapped = DistributedDataParallel(net) if world > 1 else net
    if world > 1:
        opt: Any = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=ko.optim.Adam, lr=0.05)
    else:
        opt = ko.optim.Adam(net.parameters(), lr=0.05)
    for step in range(STEPS):
        x, y = batch(step, rank, world)
        loss_of(wrapped, x, y).backward()
        opt.step()
        opt.zero_grad()
    local = opt.optim if world > 1 else opt
    state_bytes = sum(
        t.numel() * t.element_size()
        for s in local.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    return {"params": [p.detach().clone() for p in net.parameters()], "state_bytes": state_bytes}


def fsdp(rank: int, world: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cases = [(api, "Adam") for api in ("backward", "minimize", "tape", "optim")]
    cases += [
        ("backward", name)
        for name in (
            "Adam-compiled",
            "Adam-flat",
            "SGD-clip",
            "Lamb",
            "Adafactor",
            "Muon",
            "LossScale",
            "AdamW-clipnorm",
        )
    ]
    for api, name in cases:
        net = model()
        if world > 1:
            shard(net)
        opt = train(api, name, net, rank, world)
        out[f"{api}/{name}"] = [full(p).clone() for p in net.parameters()]
        if api == "backward" and name == "Adam":
            inner = opt
            out["slot_is_sharded"] = all(
                type(inner.get_slot(p, "m")) is type(p) for p in net.parameters()
            )
        if name == "LossScale":
            out["loss_scale"] = float(opt.loss_scale)
    return out


def dcp_save(rank: int, world: int, folder: Path) -> dict[str, Any]:
    """FSDP2 on ``world`` ranks: train 2 steps with both APIs, save both states with DCP."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    out: dict[str, Any] = {}
    for api in ("keras", "optim"):
        net = model()
        shard(net)
        opt = train("backward" if api == "keras" else "optim", "Adam", net, rank, world, 2)
        if api == "keras":
            state = {"model": net.state_dict(), "optimizer": opt.state_dict()}
        else:
            model_sd, optim_sd = get_state_dict(net, opt)
            state = {"model": model_sd, "optimizer": optim_sd}
        dcp.save(state, checkpoint_id=str(folder / api))
        out[api] = [full(p).clone() for p in net.parameters()]
        if api == "keras":
            out["keras/m"] = {
                n: full(opt.get_slot(p, "m")).clone() for n, p in net.named_parameters()
            }
    return out


def dcp_load(rank: int, world: int, folder: Path) -> dict[str, Any]:
    """Load the 2-rank checkpoints on ``world`` ranks (1: no FSDP), then train 2 more steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    out: dict[str, Any] = {}
    for api in ("keras", "optim"):
        net = model()
        if world > 1:
            shard(net)
        if api == "keras":
            opt: Any = ko.optimizers.Adam(0.05)
            opt.build(net)
            state = {"model": net.state_dict(), "optimizer": opt.state_dict()}
            dcp.load(state, checkpoint_id=str(folder / api))
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            out["keras/m"] = {
                n: full(opt.get_slot(p, "m")).clone() for n, p in net.named_parameters()
            }
        else:
            opt = ko.optim.Adam(net.parameters(), lr=0.05)
            model_sd, optim_sd = get_state_dict(net, opt)
            state = {"model": model_sd, "optimizer": optim_sd}
            dcp.load(state, checkpoint_id=str(folder / api))
            set_state_dict(
                net, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
            )
        params = list(net.parameters())
        for step in range(2, 4):
            x, y = batch(step, rank, world)
            loss_of(net, x, y).backward()
            if api == "keras":
                opt.apply_gradients([(p.grad, p) for p in params])
            else:
                opt.step()
            for p in params:
                p.grad = None
        out[api] = [full(p).clone() for p in net.parameters()]
        out[f"{api}/iterations"] = int(
            opt.iterations if api == "keras" else opt.keras_optimizers[0].iterations
        )
    return out


def main() -> None:
    scenario, rank, world, port, outdir = sys.argv[1:6]
    r, w = int(rank), int(world)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=w)
    folder = Path(outdir)
    try:
        if scenario in ("dcp_save", "dcp_load"):
            result = globals()[scenario](r, w, folder.parent / "dcp")
        else:
            result = globals()[scenario](r, w)
        torch.save(result, folder / f"rank{r}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # The rank's result is written and every rank passed the barrier: leave without the
    # interpreter's teardown, where a C++ thread still joinable (gloo's, or a compile worker's)
    # can abort the process ("terminate called without an active exception", seen once under
    # load in CI's fresh clone) after the work succeeded. A failure above still raises.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
