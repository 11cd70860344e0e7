"""Counts the kerasopt Python functions one steady-state dense Adam step calls (#18 item 7).

Both front ends step two tensors: ``opt.apply_gradients(...)`` (the Keras API) and
``kerasopt.optim.Adam(...).step()``. After a few warm-up steps, one step runs under
``sys.setprofile`` and every "call" event whose code lives in the kerasopt package is counted
(a comprehension or a generator resumption is a call too, on Python < 3.12).
tests/test_hot_path.py holds both counts to ``LIMIT``.

Usage: ``python tools/count_step_calls.py [--list]`` (``--list``: the calls by function).
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Callable

import torch

import kerasopt as ko

# The most kerasopt functions one steady dense step may call (either front end): 60, plus two
# for each of Adam's four out-of-place operations, whose temporaries the foreach engine takes
# from the group's `Scratch` (`PooledList._new`, `Scratch.take`).
LIMIT = 68
_PACKAGE = os.path.dirname(ko.__file__) + os.sep


def count(step: Callable[[], object], warmup: int = 3) -> collections.Counter[tuple[str, str]]:
    """The kerasopt functions one call of ``step`` calls (after ``warmup`` calls), by
    (file relative to the package, function name)."""
    for _ in range(warmup):
        step()
    calls: collections.Counter[tuple[str, str]] = collections.Counter()

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "call":
            code = frame.f_code  # type: ignore[attr-defined]
            if code.co_filename.startswith(_PACKAGE):
                calls[(code.co_filename[len(_PACKAGE) :], code.co_name)] += 1

    sys.setprofile(profile)
    try:
        step()
    finally:
        sys.setprofile(None)
    return calls


def keras_step() -> Callable[[], object]:
    """A dense Adam step on two tensors through ``apply_gradients``."""
    a = ko.Variable(torch.randn(3), name="a")
    b = ko.Variable(torch.randn(4, 2), name="b")
    opt = ko.optimizers.Adam(0.1)
    ga, gb = torch.randn(3), torch.randn(4, 2)
    return lambda: opt.apply_gradients([(ga, a), (gb, b)])


def optim_step() -> Callable[[], object]:
    """The same step through ``kerasopt.optim.Adam(...).step()``."""
    a = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(torch.randn(4, 2))
    opt = ko.optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.randn(3), torch.randn(4, 2)
    return opt.step


def main(argv: list[str]) -> None:
    listing = "--list" in argv or "x" in argv  # ("x": the old spelling)
    for label, make in (("keras", keras_step), ("optim", optim_step)):
        calls = count(make())
        print(f"{label}: {sum(calls.values())} calls (limit {LIMIT})")
        if listing:
            for (path, name), n in sorted(calls.items(), key=lambda item: -item[1]):
                print(f"  {n:3d} {path}:{name}")


if __name__ == "__main__":
    main(sys.argv[1:])
