"""torch.distributed at the optimizer's boundaries (no communication layer of kerasopt's own).

Two things meet the optimizer from ``torch.distributed``:

- **gradients reduced by DDP / FSDP2.** Their reducers run as hooks of ``loss.backward()``;
  ``torch.autograd.grad`` never fires them (DDP) or returns nothing for the sharded parameters
  (FSDP2). So while a process group is initialised, ``minimize`` and ``GradientTape.gradient``
  compute gradients with ``torch.autograd.backward`` and read ``.grad`` (see
  :func:`backward_gradients`): one backward, one reduction by torch, the same as
  ``loss.backward()`` followed by ``apply_gradients``.
- **DTensor variables (FSDP2's sharded parameters).** Elementwise rules run on the local shards
  (:func:`local`: no DTensor dispatch per operation, the compiled engine sees plain tensors);
  whole-tensor rules gather the full tensor (:func:`full`), update it on every rank identically,
  and write back each rank's shard (:func:`write_shard`); reductions that cross variables
  (global norm, the loss-scale finite check) are reduced across shards by DTensor itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

try:  # torch builds without distributed support have no DTensor
    from torch.distributed.tensor import DTensor, distribute_tensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # pragma: no cover - every supported torch build has them
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: Any) -> Tensor:
    """The local shard of a DTensor (same storage: in-place updates write the shard), or ``t``."""
    return t.to_local() if is_dtensor(t) else t


def full(t: Any) -> Tensor:
    """The whole tensor of a DTensor (gathered; identical on every rank), or ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


def reduced(t: Any) -> Tensor:
    """A reduction computed on DTensors (``Partial``) as a plain tensor, reduced across shards."""
    return t.full_tensor() if is_dtensor(t) else t


def write_shard(dst: Any, whole: Tensor) -> None:
    """Copies this rank's part of ``whole`` (the full value) into DTensor ``dst``'s shard."""
    shape, offset = compute_local_shape_and_global_offset(
        dst.shape, dst.device_mesh, dst.placements
    )
    part = whole
    for dim, (size, start) in enumerate(zip(shape, offset)):
        part = part.narrow(dim, start, size)
    dst.to_local().copy_(part)


def map_local(t: Any, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` applied to a DTensor's local shard (an elementwise map), as a DTensor again."""
    if not is_dtensor(t):
        return fn(t)
    return DTensor.from_local(
        fn(t.to_local()),
        t.device_mesh,
        t.placements,
        run_check=False,
        shape=t.shape,
        stride=t.stride(),
    )


def like(value: Any, target: Any) -> Tensor:
    """``value`` laid out as ``target``: sharded like a DTensor target (every rank holds the
    same full value, so each takes its shard without communication), or gathered for a plain
    target."""
    if is_dtensor(target) and not is_dtensor(value):
        return distribute_tensor(
            value.to(target.device), target.device_mesh, target.placements, src_data_rank=None
        )
    if is_dtensor(value) and not is_dtensor(target):
        return value.full_tensor()
    return value


def zeros_like(var: Tensor, fill: float) -> Tensor:
    """A slot sharded like DTensor ``var``, filled with ``fill``."""
    return torch.full_like(var, fill)


def active() -> bool:
    """Whether a process group is initialised (DDP / FSDP2 may own the parameters)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def backward_gradients(
    outputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    retain_graph: bool,
) -> list[Tensor | None]:
    """Gradients of ``outputs`` for ``inputs`` through ``torch.autograd.backward``, so that the
    hooks of DDP and FSDP2 reduce them; each input's ``.grad`` is left as it was before.

    A full backward runs (DDP expects every parameter it manages to receive its gradient, and
    FSDP2's sharded parameters are not graph inputs): leaves outside ``inputs`` accumulate into
    their ``.grad`` exactly as with ``loss.backward()``.
    """
    saved = [t.grad for t in inputs]
    for t in inputs:
        t.grad = None
    try:
        torch.autograd.backward(list(outputs), list(grad_outputs), retain_graph=retain_graph)
        grads = [t.grad for t in inputs]
    finally:
        for t, old in zip(inputs, saved):
            t.grad = old
    return grads


def all_ranks_true(flag: Tensor, tensors: Sequence[Any]) -> Tensor:
    """``flag`` (a 0-d bool tensor about local data) AND-reduced over the process groups of the
    DTensors among ``tensors``, so every rank takes the same decision; unchanged otherwise."""
    meshes = {id(t.device_mesh): t.device_mesh for t in tensors if is_dtensor(t)}
    if not meshes:
        return flag
    as_int = flag.to(torch.int32)
    for mesh in meshes.values():
        for dim in range(mesh.ndim):
            torch.distributed.all_reduce(
                as_int, op=torch.distributed.ReduceOp.MIN, group=mesh.get_group(dim)
            )
    return as_int.bool()
