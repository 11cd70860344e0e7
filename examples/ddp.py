"""kerasopt under DDP, with every way of driving an optimizer.

    torchrun --nproc_per_node 2 examples/ddp.py [backward|minimize|tape|optim]

DDP averages the gradients in its backward hooks. `loss.backward()` runs them; so do
`minimize` and `GradientTape.gradient`, which compute their gradients through backward while a
process group is initialised — one all-reduce per bucket per step, overlapping the backward
pass. Every rank ends with identical weights, equal to one process on the whole batch.
Multi-node: the same command with torchrun's rendezvous (`--nnodes`, `--rdzv-endpoint`);
kerasopt needs nothing else.
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import kerasopt as ko


def main(api: str) -> None:
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device("cuda", rank % torch.cuda.device_count())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    torch.manual_seed(0)  # the same initial weights on every rank
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(
        device
    )
    model = DistributedDataParallel(net)
    opt = ko.optim.Adam(model.parameters(), lr=1e-2) if api == "optim" else ko.optimizers.Adam(1e-2)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1 + rank)  # each rank its own data
    for _step in range(20):
        x = torch.randn(16, 8, generator=gen).to(device)
        y = x.sum(dim=1, keepdim=True)

        def loss_fn(x=x, y=y):
            return ((model(x) - y) ** 2).mean()

        if api == "backward":
            loss_fn().backward()
            opt.apply_gradients([(p.grad, p) for p in params])
            model.zero_grad(set_to_none=True)
        elif api == "minimize":
            opt.minimize(loss_fn, model)
        elif api == "tape":
            with ko.GradientTape() as tape:
                loss = loss_fn()
            opt.apply_gradients(zip(tape.gradient(loss, params), params))
        else:
            loss_fn().backward()
            opt.step()
            opt.zero_grad()
    weights = torch.cat([p.detach().flatten() for p in params])
    gathered = [torch.empty_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    if rank == 0:
        same = all(torch.equal(gathered[0], w) for w in gathered)
        print(f"{api}: loss {loss_fn().item():.4f}; identical weights on every rank: {same}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "minimize")
