"""The hot path (#18 item 7): a steady dense step does each thing once, and what it caches is
dropped when what it was derived from changes.

A steady step (known variables, plain dense gradients, a list of pairs) reuses its
``Composition``; any other step (here: pairs passed as a tuple) runs the full checks. Every
scenario below runs on twin optimizers, one fed lists and one fed tuples, and holds them to
bit-identical variables and slots after every step.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import kerasopt as ko

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "count_step_calls.py"


def _counter() -> Any:
    spec = importlib.util.spec_from_file_location("count_step_calls", _TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("front", ["keras", "optim"])
def test_a_steady_dense_step_calls_at_most_the_limit(front: str) -> None:
    tool = _counter()
    calls = tool.count(tool.keras_step() if front == "keras" else tool.optim_step())
    listing = "\n".join(f"{n} {path}:{name}" for (path, name), n in calls.most_common())
    assert sum(calls.values()) <= tool.LIMIT, (
        f"a steady dense Adam step ({front}) calls {sum(calls.values())} kerasopt functions, "
        f"more than {tool.LIMIT}: the hot path does something more than once?\n{listing}"
    )


def _twins(make: Callable[[], ko.optimizers.Optimizer], n: int = 3) -> tuple[Any, Any]:
    torch.manual_seed(0)
    values = [torch.randn(4, 3, dtype=torch.float64) for _ in range(n)]
    fast = (make(), [ko.Variable(v.clone(), name=f"w{i}") for i, v in enumerate(values)])
    slow = (make(), [ko.Variable(v.clone(), name=f"w{i}") for i, v in enumerate(values)])
    return fast, slow


def _step(twins: tuple[Any, Any], grads: list[torch.Tensor], count: int | None = None) -> None:
    (fast_opt, fast_vars), (slow_opt, slow_vars) = twins
    count = len(grads) if count is None else count
    fast_opt.apply_gradients([(g.clone(), v) for g, v in zip(grads, fast_vars[:count])])
    slow_opt.apply_gradients(tuple((g.clone(), v) for g, v in zip(grads, slow_vars[:count])))
    for a, b in zip(fast_vars, slow_vars):
        assert torch.equal(a, b)
    for a, b in zip(fast_opt.variables(), slow_opt.variables()):
        assert torch.equal(a, b)


def _grads(n: int = 3, seed: int = 1) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(4, 3, dtype=torch.float64) for _ in range(n)]


def test_steady_and_full_steps_agree_bit_for_bit_through_every_change() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1, weight_decay=None))
    for k in range(3):
        _step(twins, _grads(seed=k))
    # a hyperparameter's kind changes: number -> tensor -> number -> callable -> schedule
    lr = [torch.tensor(0.02), torch.tensor(0.02)]
    for (opt, _), t in zip(twins, lr):
        opt.learning_rate = t
    _step(twins, _grads(seed=10))
    for t in lr:
        t.fill_(0.3)  # a tensor hyperparameter changed in place
    _step(twins, _grads(seed=11))
    for opt, _ in twins:
        opt.learning_rate = 0.01
        opt.beta_1.assign(0.5)
    _step(twins, _grads(seed=12))
    for opt, _ in twins:
        opt.learning_rate = lambda: 0.05
    _step(twins, _grads(seed=13))
    for opt, _ in twins:
        opt.learning_rate = ko.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    _step(twins, _grads(seed=14))
    # legacy decay switched on by an assign into its variable, then off again
    for opt, _ in twins:
        opt.decay.assign(0.25)
    _step(twins, _grads(seed=15))
    for opt, _ in twins:
        opt.decay = 0.0
    _step(twins, _grads(seed=16))
    # clipping and weight decay switched on and changed
    for opt, _ in twins:
        opt.clipnorm = 0.1
    _step(twins, _grads(seed=17))
    for opt, _ in twins:
        opt.clipnorm = None
        opt.global_clipnorm = 0.2
    _step(twins, _grads(seed=18))
    for opt, _ in twins:
        opt.global_clipnorm = None
        opt.weight_decay = 0.5
    _step(twins, _grads(seed=19))
    for opt, _ in twins:
        opt.weight_decay = 0.1
    _step(twins, _grads(seed=20))


def test_a_subset_then_a_new_variable_then_the_whole_list() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1), n=4)
    _step(twins, _grads(2), count=2)
    _step(twins, _grads(2, seed=2), count=2)
    _step(twins, _grads(4, seed=3))  # two new variables: their slots are made
    assert len(twins[0][0].variables()) == len(twins[1][0].variables()) == 1 + 2 * 4
    _step(twins, _grads(4, seed=4))
    _step(twins, _grads(2, seed=5), count=2)


def test_a_variable_whose_data_is_replaced_is_updated_through_its_new_storage() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1))
    _step(twins, _grads())
    _step(twins, _grads(seed=2))
    for _, variables in twins:
        variables[1].data = torch.full((4, 3), 2.0, dtype=torch.float64)
    _step(twins, _grads(seed=3))
    assert not torch.equal(twins[0][1][1], torch.full((4, 3), 2.0, dtype=torch.float64))


def test_a_reshaped_variable_is_refused_by_a_steady_step_and_nothing_changes() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1))
    _step(twins, _grads())
    _step(twins, _grads(seed=2))
    (opt, variables), _ = twins
    before = [t.clone() for t in opt.variables()]
    variables[2].data = torch.zeros(6, 2, dtype=torch.float64)
    grads = _grads()
    grads[2] = torch.zeros(6, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="were made for shape"):
        opt.apply_gradients(list(zip(grads, variables)))
    assert all(torch.equal(a, b) for a, b in zip(before, opt.variables()))


def test_a_bad_gradient_on_a_steady_step_is_refused_with_the_full_message() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1))
    _step(twins, _grads())
    (opt, variables), _ = twins
    grads = _grads()
    grads[1] = grads[1].float()
    with pytest.raises(ValueError, match=r"has dtype torch\.float32, expected torch\.float64"):
        opt.apply_gradients(list(zip(grads, variables)))
    grads = _grads()
    grads[0] = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="has shape"):
        opt.apply_gradients(list(zip(grads, variables)))


def test_a_constraint_set_after_the_first_steps_is_applied_and_guards_the_step() -> None:
    twins = _twins(lambda: ko.optimizers.Adam(0.1))
    _step(twins, _grads())
    _step(twins, _grads(seed=2))
    for _, variables in twins:
        variables[0].constraint = lambda t: t.clamp(-0.01, 0.01)
    _step(twins, _grads(seed=3))
    assert float(twins[0][1][0].detach().abs().max()) <= 0.01
    (opt, variables), _ = twins
    before = [t.clone() for t in opt.variables()]

    def refuse(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no")

    variables[1].constraint = refuse
    with pytest.raises(RuntimeError, match="no"):
        opt.apply_gradients(list(zip(_grads(seed=4), variables)))
    assert all(torch.equal(a, b) for a, b in zip(before, opt.variables()))


def test_a_gradient_aliasing_a_variable_is_read_before_any_write() -> None:
    twins = _twins(lambda: ko.optimizers.SGD(0.5, momentum=0.9))
    _step(twins, _grads())
    for opt, variables in twins:
        pairs = [(variables[1], variables[0]), (variables[0], variables[1])]
        opt.apply_gradients(pairs if opt is twins[0][0] else tuple(pairs))
    for a, b in zip(twins[0][1], twins[1][1]):
        assert torch.equal(a, b)


def test_kerasopt_optim_steady_steps_follow_group_changes() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
    twins = [[torch.nn.Parameter(p.detach().clone()) for p in params] for _ in range(2)]
    opts = [ko.optim.Adam(ps, lr=0.1) for ps in twins]
    for k in range(6):
        torch.manual_seed(k)
        grads = [torch.randn(5) for _ in params]
        for ps in twins:
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        if k == 2:
            opts[0].param_groups[0]["lr"] = 0.01
            opts[1].param_groups[0]["lr"] = torch.tensor(0.01)  # a tensor: the slow sync
        if k == 4:
            for opt in opts:
                opt.param_groups[0]["betas"] = (0.5, 0.9)
        for opt in opts:
            opt.step()
        for a, b in zip(*twins):
            assert torch.equal(a, b)


def test_a_tensorlist_is_a_list_without_the_list_behaviours_that_would_change_a_rule() -> None:
    from kerasopt._tensorlist import TensorList

    a = TensorList([torch.ones(2), torch.ones(3)])
    b = TensorList([torch.full((2,), 2.0), torch.full((3,), 2.0)])
    assert [t.tolist() for t in a + b] == [[3.0, 3.0], [3.0, 3.0, 3.0]]  # not concatenation
    assert [t.tolist() for t in a * 2] == [[2.0, 2.0], [2.0, 2.0, 2.0]]  # not repetition
    c = a
    c += b  # out of place, as on the old TensorList (and no list extend)
    assert len(c) == 2 and c is not a and a[0].tolist() == [1.0, 1.0]
    assert a == a and a != TensorList(list(a))  # identity, not elementwise
    assert isinstance(a + b, TensorList) and isinstance(a.sqrt(), TensorList)
    with pytest.raises(TypeError):
        a.sort()
    with pytest.raises(TypeError):
        a[0] = torch.zeros(2)
