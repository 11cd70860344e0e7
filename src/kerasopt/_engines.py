"""Engines: the ways one update rule is run over a group of variables.

Every engine calls the optimizer's single ``update(var, grad, *slots, c=...)`` rule:

- ``per_tensor``: a plain loop, one call per variable with ordinary tensors;
- ``foreach``: one call per group with ``TensorList`` arguments, so each operation of the rule is
  one ``torch._foreach_*`` call over the group;
- ``compiled``: the rule under ``torch.compile`` over 1-D aliases in fixed-length chunks
  (see ``_compiled.py``); Keras's ``jit_compile=True`` selects it;
- ``flat``: for groups of many small tensors, the compiled rule on the group packed into one flat
  tensor per operand (then copied back).

Per-tensor and foreach perform the same IEEE operations in the same order, so their results are
bit-identical (the tests hold them to it); compiled results are within a few ulp (the compiler
may fuse operations). Rules that need the whole tensor (``elementwise = False``) run per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._compiled import run_compiled
from ._tensorlist import TensorList

ENGINES = ("auto", "per_tensor", "foreach", "compiled")

Rule = Callable[..., Any]


def run_per_tensor(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Sequence[Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any] | None = None,
) -> None:
    for i, (var, grad) in enumerate(zip(variables, grads)):
        rule(var, grad, *(s[i] for s in slots), c=c)


def run_foreach(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Sequence[Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any] | None = None,
) -> None:
    rule(TensorList(variables), TensorList(grads), *(TensorList(s) for s in slots), c=c)


# `auto` compiles a group once it holds this many elements: benchmarks/bench_step.py shows the
# compiled engine at torch's fused speed there (several times faster than foreach), and a one-off
# compile of a few seconds is then repaid within tens of steps. Smaller groups run foreach.
AUTO_COMPILE_NUMEL = 1 << 22


# Many small tensors: per-tensor work (kernel launches, guards) dominates, so the group is packed
# into one flat tensor per operand, updated by one compiled call, and copied back. The copies cost
# bandwidth (and transient memory) that small tensors can afford; large ones cannot.
FLAT_MIN_TENSORS = 64
FLAT_MAX_MEAN_NUMEL = 1 << 16


def run_flat(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Sequence[Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any],
) -> None:
    """Runs the rule once (compiled) on the group packed into flat tensors.

    The group's slots are re-homed once into one flat buffer per slot name (``Tensor.set_`` keeps
    each slot's identity; it becomes a window of the buffer), so they need no copies. Variables
    and gradients are packed into persistent buffers each step and the variables copied back.
    ``cache`` belongs to the group and lives as long as its composition does.
    """
    if "flat" not in cache:
        cache["flat"] = all(v.is_contiguous() for v in variables) and all(
            t.is_contiguous() for lst in slots for t in lst
        )
        if cache["flat"]:
            sizes = [v.numel() for v in variables]
            flat_slots = []
            for lst in slots:
                buf = torch.cat([t.reshape(-1) for t in lst])
                offset = 0
                for t, n in zip(lst, sizes):
                    t.set_(buf.untyped_storage(), offset, t.shape, t.stride())
                    offset += n
                flat_slots.append([buf])
            var_buf = (
                torch.empty_like(flat_slots[0][0])
                if flat_slots
                else torch.cat([v.detach().reshape(-1) for v in variables])
            )
            cache.update(
                sizes=sizes,
                views=[v.detach().view(-1) for v in variables],
                slots=flat_slots,
                var_buf=var_buf,
                var_parts=list(var_buf.split(sizes)),
                grad_buf=torch.empty_like(var_buf),
            )
    if not cache["flat"]:
        run_compiled(rule, variables, grads, slots, c)
        return
    ptrs = [v.data_ptr() for v in variables]
    if ptrs != cache.setdefault("ptrs", ptrs):
        # A variable got new storage (e.g. `param.data = ...`): the cached views are stale.
        cache["views"] = [v.detach().view(-1) for v in variables]
        cache["ptrs"] = ptrs
    var_buf, grad_buf = cache["var_buf"], cache["grad_buf"]
    torch.cat(cache["views"], out=var_buf)
    torch.cat([g.reshape(-1) for g in grads], out=grad_buf)
    run_compiled(rule, [var_buf], [grad_buf], cache["slots"], c)
    torch._foreach_copy_(cache["views"], cache["var_parts"])


def select(
    implementation: str, elementwise: bool, numel: int = 0, count: int = 1
) -> Callable[..., None]:
    """The engine for a group of ``count`` tensors with ``numel`` elements (README: Engines)."""
    if not elementwise or implementation == "per_tensor":
        return run_per_tensor
    if implementation == "foreach":
        return run_foreach
    if count >= FLAT_MIN_TENSORS and numel < FLAT_MAX_MEAN_NUMEL * count:
        return run_flat
    if implementation == "compiled" or numel >= AUTO_COMPILE_NUMEL:
        return run_compiled
    return run_foreach
