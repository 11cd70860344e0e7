"""Optimizer-in-backward: ``kerasopt.apply_in_backward`` (Keras API) and torch's
``_apply_optimizer_in_backward`` with ``kerasopt.optim`` update each parameter as its gradient
is ready, free the gradient, and give a whole step's numbers."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.optim import _apply_optimizer_in_backward

import kerasopt as ko
from tests.helpers import make_optimizer
from tests.specs import OPTIMIZERS

# every optimizer, on its configurations that need no gradient but a variable's own
CASES = [
    (spec, config)
    for spec in OPTIMIZERS
    for config in spec.configs
    if not config.get("global_clipnorm") and not config.get("gradient_accumulation_steps")
]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    ).double()


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    return model(x).square().mean()


@pytest.mark.parametrize(
    ("spec", "config"), CASES, ids=[f"{s.name}-{i}" for i, (s, _) in enumerate(CASES)]
)
def test_keras_in_backward_equals_a_whole_step(spec, config):
    reference, model = _model(), _model()
    # (the copies run `auto` as `compiled`: so does the whole step here, for the same bits)
    opt = make_optimizer(
        spec, config, **({"implementation": "compiled"} if spec.elementwise else {})
    )
    handle = ko.apply_in_backward(make_optimizer(spec, config), model)
    params = list(reference.parameters())
    for step in range(3):
        grads = torch.autograd.grad(_loss(reference, step), params)
        opt.apply_gradients(zip(grads, params))
        _loss(model, step).backward()
        assert all(p.grad is None for p in model.parameters())  # freed as it was applied
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert [int(o.iterations) for o in handle.optimizers] == [3] * 4


def test_remove_stops_updating_in_backward():
    model = _model()
    handle = ko.apply_in_backward(ko.optimizers.SGD(0.1), model)
    _loss(model, 0).backward()
    before = [p.detach().clone() for p in model.parameters()]
    handle.remove()
    _loss(model, 1).backward()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is not None for p in model.parameters())
    assert handle.optimizer_for(model[0].weight) is handle.optimizers[0]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: ko.optimizers.SGD(0.1, global_clipnorm=1.0),
            ValueError,
            "`global_clipnorm` needs every gradient at once",
        ),
        (
            lambda: ko.optimizers.Adam(gradient_accumulation_steps=2),
            ValueError,
            "`gradient_accumulation_steps` needs every gradient at once",
        ),
        (
            lambda: ko.optimizers.LossScaleOptimizer(ko.optimizers.SGD(0.1)),
            TypeError,
            "must be a kerasopt optimizer \\(not a wrapper\\). Received: LossScaleOptimizer",
        ),
    ],
    ids=["global_clipnorm", "accumulation", "wrapper"],
)
def test_refused_optimizers_register_nothing(make, error, message):
    model = _model()
    with pytest.raises(error, match=message):
        ko.apply_in_backward(make(), model)
    _loss(model, 0).backward()  # no hook: the gradients stay, nothing moved
    assert all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), _model().parameters()))


def test_a_used_optimizer_or_a_non_leaf_is_refused():
    model = _model()
    used = ko.optimizers.Adam()
    used.build(list(model.parameters()))
    with pytest.raises(ValueError, match="already has state"):
        ko.apply_in_backward(used, model)
    with pytest.raises(ValueError, match=r"variables\[1\] must be a leaf tensor"):
        ko.apply_in_backward(ko.optimizers.Adam(), [model[0].weight, model[0].weight * 2])
    _loss(model, 0).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["Adam", "SGD", "Adagrad"])
def test_torch_optimizer_in_backward_runs_kerasopt_optim(name):
    """torch's own optimizer-in-backward builds one kerasopt.optim optimizer per parameter:
    the same numbers as the whole step, and the gradients are freed."""
    reference, model = _model(), _model()
    opt = getattr(ko.optim, name)(reference.parameters(), lr=0.05)
    _apply_optimizer_in_backward(getattr(ko.optim, name), model.parameters(), {"lr": 0.05})
    for step in range(3):
        opt.zero_grad()
        _loss(reference, step).backward()
        opt.step()
        _loss(model, step).backward()
        assert all(p.grad is None for p in model.parameters())
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
