"""Every engine on every device torch has here: the CPU always, CUDA where it is available.

``benchmarks/gpu_check.sh`` runs this module on a GPU machine (with the CUDA benchmark table), so
what CI checks on the CPU is the same code that checks a GPU: each optimizer, under each engine,
against its float64 NumPy reference over several steps, with its state on the device; and the
``kerasopt.optim`` step with a checkpoint written on the device and resumed bit-exactly.
"""

from __future__ import annotations

import io

import pytest
import torch

import kerasopt as ko
from tests.helpers import RefRun, assert_matches, make_grads, make_optimizer, make_vars, to64
from tests.specs import OPTIMIZERS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ENGINES = ["per_tensor", "foreach", "compiled", "flat"]
# 0-d and one-element variables (eager on every engine), small ones, a matrix of 2,112 elements and
# a vector of 1,031 (vector loops with a tail)
SHAPES = [(), (1,), (3,), (4, 5), (64, 33), (1031,)]
STEPS = 3


def _on(device: str, tensors: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t.detach().to(device)) for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ENGINES)
@pytest.mark.parametrize("spec", OPTIMIZERS, ids=[s.name for s in OPTIMIZERS])
def test_every_engine_on_the_device_matches_the_reference(spec, implementation, device):
    config = spec.configs[0]
    variables = _on(device, make_vars(SHAPES, torch.float32, seed=3))
    opt = make_optimizer(spec, config, implementation=implementation)
    run = RefRun(spec, config, variables)
    for t, grads in enumerate(make_grads(SHAPES, STEPS, torch.float32, seed=4), start=1):
        opt.apply_gradients(zip([g.to(device) for g in grads], variables))
        run.step(t, [to64(g) for g in grads])
        assert_matches(opt, variables, run, spec, torch.float32, f"{device} {implementation} {t}")
    assert int(opt.iterations) == STEPS
    state = [w for w in opt.variables() if w.is_floating_point()]  # (not the step counter)
    assert state or spec.name == "SGD"
    assert all(t.device.type == device for t in [*variables, *state])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("implementation", ["foreach", "compiled", "flat"])
def test_torch_style_steps_and_a_checkpoint_on_the_device(device, implementation):
    """A ``kerasopt.optim`` step on the device, its state dict saved there and loaded into a new
    optimizer over a copy of the model: both go on bit for bit alike."""

    def model_and_opt(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)
        ).to(device)
        return model, ko.optim.Adam(model.parameters(), lr=0.01, implementation=implementation)

    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)).to(device)

    def step(model, opt):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    model, opt = model_and_opt(0)
    for _ in range(3):
        step(model, opt)
    assert all(t.device.type == device for s in opt.state.values() for t in s.values())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin, twin_opt = model_and_opt(7)
    twin.load_state_dict(saved["model"])
    twin_opt.load_state_dict(saved["opt"])
    for _ in range(2):
        step(model, opt)
        step(twin, twin_opt)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert a.device.type == device and torch.equal(a, b)
