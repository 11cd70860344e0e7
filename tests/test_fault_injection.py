"""Fault injection: random optimizer x configuration x wrapper x bad input at a random position
of the step -> the step raises the documented error and nothing changed (a byte comparison of
every variable, slot, counter and loss scale), and the optimizer keeps working afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerasopt as ko
from tests.specs import OPTIMIZERS

SHAPE = (3, 2)
NAMES = ("a", "b", "c")


def _raise(_: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("injected constraint failure")


# kind -> (how the bad pair is made from the variable at the position, expected error type)
Bad = Callable[[ko.Variable], tuple[Any, Any]]
FAULTS: dict[str, tuple[Bad, type[Exception]]] = {
    "shape": (lambda v: (torch.ones(4, 2, dtype=v.dtype), v), ValueError),
    "dtype": (lambda v: (torch.ones(SHAPE, dtype=torch.float32), v), ValueError),
    "not_a_tensor": (lambda v: ("gradient", v), TypeError),
    "object_array": (lambda v: (np.full(SHAPE, None, dtype=object), v), TypeError),
    "ragged_list": (lambda v: ([[1.0, 2.0], [3.0]], v), TypeError),
    "coo_dense_shape": (
        lambda v: (torch.sparse_coo_tensor([[0]], torch.ones(1, 2, dtype=v.dtype), (9, 2)), v),
        ValueError,
    ),
    "indices_out_of_range": (
        lambda v: (ko.IndexedSlices(torch.ones(1, 2, dtype=v.dtype), torch.tensor([7]), SHAPE), v),
        ValueError,
    ),
    "integer_variable": (
        lambda v: (torch.ones(SHAPE), ko.Variable(torch.ones(SHAPE, dtype=torch.int64), False)),
        ValueError,
    ),
    "not_a_pair": (lambda v: (torch.ones(SHAPE),), TypeError),
    "swapped": (
        lambda v: (torch.nn.Parameter(torch.ones(SHAPE, dtype=v.dtype)), torch.ones(SHAPE)),
        ValueError,
    ),
}
# faults made by changing the variable itself, and how to undo them
MUTATIONS = ("constraint", "reshaped", "duplicate")


def _make(spec_index: int, config_index: int, wrapper: str) -> Any:
    spec = OPTIMIZERS[spec_index]
    config = spec.configs[config_index % len(spec.configs)]
    inner = getattr(ko.optimizers, spec.name)(**config)
    if wrapper == "loss_scale":
        return ko.optimizers.LossScaleOptimizer(inner)
    if wrapper == "multi":
        return ko.optimizers.MultiOptimizer(
            ko.optimizers.OptimizerMap(inner, {"b": ko.optimizers.SGD(0.1, momentum=0.5)})
        )
    return inner


def _state(opt: Any, variables: list[ko.Variable]) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in opt.state_dict().items()}
    for v in variables:
        state[f"variable/{v.name}"] = v.detach().clone()
    return state


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    spec_index=st.integers(0, len(OPTIMIZERS) - 1),
    config_index=st.integers(0, 3),
    wrapper=st.sampled_from(["plain", "loss_scale", "multi"]),
    fault=st.sampled_from(sorted(FAULTS) + list(MUTATIONS)),
    position=st.integers(0, 2),
)
def test_bad_input_anywhere_raises_and_changes_nothing(
    spec_index, config_index, wrapper, fault, position
):
    rng = np.random.default_rng(spec_index * 100 + config_index)
    variables = [ko.Variable(rng.normal(size=SHAPE), name=n) for n in NAMES]
    opt = _make(spec_index, config_index, wrapper)

    def good() -> list[Any]:
        return [(torch.tensor(rng.normal(size=SHAPE)), v) for v in variables]

    opt.apply_gradients(good())
    before = _state(opt, variables)
    pairs = good()
    target = variables[position]
    undo: Callable[[], None] = lambda: None  # noqa: E731
    if fault in FAULTS:
        make, expected = FAULTS[fault]
        pairs[position] = make(target)
    elif fault == "constraint":
        target.constraint, expected = _raise, RuntimeError
        undo = lambda: setattr(target, "constraint", None)  # noqa: E731
    elif fault == "reshaped":
        saved = target.data
        target.data = torch.ones(4, 2, dtype=torch.float64)
        pairs[position] = (torch.ones(4, 2, dtype=torch.float64), target)
        expected = ValueError
        undo = lambda: setattr(target, "data", saved)  # noqa: E731
    else:  # the same variable twice
        pairs[(position + 1) % 3] = (torch.ones(SHAPE, dtype=torch.float64), target)
        expected = ValueError
    # MultiOptimizer.apply takes the full built list (Keras 3): a pair naming another variable
    # is refused as a ValueError before any inner optimizer sees it
    errors = (expected, ValueError) if wrapper == "multi" else expected
    with pytest.raises(errors):
        opt.apply_gradients(pairs)
    undo()
    _same(_state(opt, variables), before)
    opt.apply_gradients(good())  # still usable
    assert all(torch.isfinite(v).all() for v in variables)
