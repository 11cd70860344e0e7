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
) -> None:
    for i, (var, grad) in enumerate(zip(variables, grads)):
        rule(var, grad, *(s[i] for s in slots), c=c)


def run_foreach(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Sequence[Sequence[Tensor]],
    c: Any,
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
) -> None:
    """Packs the group into flat tensors, runs the rule once (compiled), copies the results back."""
    if not all(v.is_contiguous() for v in variables) or not all(
        t.is_contiguous() for s in slots for t in s
    ):
        run_compiled(rule, variables, grads, slots, c)
        return
    sizes = [v.numel() for v in variables]
    views = [v.detach().view(-1) for v in variables]
    flat_var = torch.cat(views)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    slot_views = [[t.view(-1) for t in lst] for lst in slots]
    flat_slots = [torch.cat(lst) for lst in slot_views]
    run_compiled(rule, [flat_var], [flat_grad], [[f] for f in flat_slots], c)
    torch._foreach_copy_(views, list(flat_var.split(sizes)))
    for lst, flat in zip(slot_views, flat_slots):
        torch._foreach_copy_(lst, list(flat.split(sizes)))


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
