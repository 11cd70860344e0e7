"""Engines: the ways one update rule is run over a group of variables.

Every engine calls the optimizer's single ``update(var, grad, *slots, c=...)`` rule:

- ``per_tensor``: a plain loop, one call per variable with ordinary tensors;
- ``foreach``: one call per group with ``TensorList`` arguments, so each operation of the rule is
  one ``torch._foreach_*`` call over the group;
- ``compiled``: the rule under ``torch.compile`` over 1-D views in power-of-two chunks
  (see ``_compiled.py``); Keras's ``jit_compile=True`` selects it.

Per-tensor and foreach perform the same IEEE operations in the same order, so their results are
bit-identical (the tests hold them to it); compiled results are within a few ulp (the compiler
may fuse operations). Rules that need the whole tensor (``elementwise = False``) run per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def select(implementation: str, elementwise: bool, numel: int = 0) -> Callable[..., None]:
    """The engine for a group of ``numel`` elements (see README: Engines)."""
    if not elementwise or implementation == "per_tensor":
        return run_per_tensor
    if implementation == "compiled" or (implementation == "auto" and numel >= AUTO_COMPILE_NUMEL):
        return run_compiled
    return run_foreach
