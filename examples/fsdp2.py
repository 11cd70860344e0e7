"""kerasopt on FSDP2 (`fully_shard`): sharded parameters, slots sharded like them.

    torchrun --nproc_per_node 2 examples/fsdp2.py [Adam|Lamb|Adafactor|Muon] [keras|optim]

Elementwise rules (Adam, SGD, ...) update each rank's local shards with no communication;
whole-tensor rules (Lamb's trust ratio, Adafactor's factored moments, Muon's Newton-Schulz)
gather each variable, update it identically on every rank and keep the local shard. Global
norms and the loss-scale finite check are reduced across the shards. The state saves with
torch.distributed.checkpoint and loads on any number of ranks.
"""

import sys
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.fsdp import fully_shard

import kerasopt as ko


def main(name: str, api: str) -> None:
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device("cuda", rank % torch.cuda.device_count())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(
        device
    )
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    if api == "optim":
        opt = getattr(ko.optim, name)(model.parameters(), lr=1e-2)
    else:
        opt = getattr(ko.optimizers, name)(1e-2)
        opt.build(model)  # slot names from named_parameters(), sharded like the parameters
    gen = torch.Generator().manual_seed(1 + rank)
    for _step in range(20):
        x = torch.randn(16, 8, generator=gen).to(device)
        y = x.sum(dim=1, keepdim=True)
        loss = ((model(x) - y) ** 2).mean()
        if api == "optim":
            loss.backward()
            opt.step()
            opt.zero_grad()
        else:
            opt.minimize(lambda x=x, y=y: ((model(x) - y) ** 2).mean(), model)
    folder = [tempfile.mkdtemp() if rank == 0 else None]
    dist.broadcast_object_list(folder)
    if api == "optim":  # torch.optim protocol: DCP's own helpers build the state
        model_sd, optim_sd = get_state_dict(model, opt)
        state = {"model": model_sd, "optimizer": optim_sd}
    else:  # Keras API: name-keyed, with DTensor slots
        state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    dcp.save(state, checkpoint_id=folder[0])
    if rank == 0:
        print(f"{name} ({api}): loss {loss.item():.4f}; checkpoint in {folder[0]}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "Adam", sys.argv[2] if len(sys.argv) > 2 else "keras"
    )
