"""kerasopt.optim with the real PyTorch ecosystem: schedulers, GradScaler, ZeRO, optimizer in
backward, torch.distributed.checkpoint, Lightning, and the Keras-schedule → torch bridge.

No mocks: each test drives a kerasopt.optim optimizer through the library itself and checks the
result against the Keras API (``apply_gradients``) on the same gradients, bit for bit.
"""

from __future__ import annotations

import copy
import datetime
import io
import socket
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import kerasopt as ko
from tests.test_optim import assert_same_state

schedules = ko.optimizers.schedules

pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before"),
]


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def keras_step(opt: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad()
    loss_of(model, x, y).backward()
    opt.apply_gradients([(p.grad, p) for p in model.parameters()])


# ----------------------------------------------------------------------------------------------
# torch.optim.lr_scheduler: each writes group values; the Keras API gets the same values set
SCHEDULERS: dict[str, tuple[str, dict[str, Any], Callable[[Any], Any]]] = {
    "StepLR-Adam": ("Adam", {}, lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5)),
    "LambdaLR-RMSprop": (
        "RMSprop",
        {"momentum": 0.5},
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)),
    ),
    "OneCycleLR-Adam": (
        "Adam",
        {},
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=6),
    ),
    "OneCycleLR-SGD": (
        "SGD",
        {"momentum": 0.9},
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=6),
    ),
    "CyclicLR-SGD": (
        "SGD",
        {"momentum": 0.9, "nesterov": True},
        lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=2),
    ),
    "CyclicLR-Adamax": (
        "Adamax",
        {},
        lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=2),
    ),
    "Cosine+Linear-Lion": (
        "Lion",
        {},
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=2),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4),
            ],
            milestones=[2],
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEDULERS))
def test_torch_schedulers_drive_the_group_values(case):
    name, kwargs, make_scheduler = SCHEDULERS[case]
    model = make_model()
    keras_model = copy.deepcopy(model)
    opt = getattr(ko.optim, name)(model.parameters(), lr=0.01, **kwargs)
    sched = make_scheduler(opt)
    keras = getattr(ko.optimizers, name)(0.01, **kwargs)
    momentum_key = "momentum" if "momentum" in opt.defaults else "beta_1"
    seen = set()
    for x, y in batches(6):
        group = opt.param_groups[0]
        keras.learning_rate = group["lr"]
        setattr(keras, momentum_key, group[momentum_key])
        seen.add((group["lr"], group[momentum_key]))
        if "betas" in group:
            assert group["betas"] == (group["beta_1"], group["beta_2"])
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        sched.step()
        keras_step(keras, keras_model, x, y)
        assert_same_state(keras, list(keras_model.parameters()), opt, list(model.parameters()))
    assert len({lr for lr, _ in seen}) > 1
    if "Cyclic" in case or "OneCycle" in case:  # cycle_momentum: momentum / beta_1 moved too
        assert len({m for _, m in seen}) > 1


def test_cycle_momentum_needs_momentum_or_betas_as_in_torch():
    opt = ko.optim.Adagrad(make_model().parameters(), lr=0.01)
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4, cycle_momentum=False)


def test_reduce_lr_on_plateau():
    opt = ko.optim.Adam(make_model().parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    for loss in (1.0, 2.0, 3.0):
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert opt.keras_optimizers[0].learning_rate.item() == pytest.approx(0.0025)


# ----------------------------------------------------------------------------------------------
# torch.amp.GradScaler
def test_grad_scaler_unscales_once_and_skips_non_finite_steps():
    model = make_model()
    keras_model = copy.deepcopy(model)
    opt = ko.optim.Adam(model.parameters(), lr=0.01)
    keras = ko.optimizers.Adam(0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    data = batches(4)
    for t, (x, y) in enumerate(data):
        opt.zero_grad()
        scaler.scale(loss_of(model, x, y)).backward()
        if t == 1:
            scaler.unscale_(opt)  # e.g. to clip: scaler.step must not unscale again
        scaler.step(opt)
        scaler.update()
        keras_step(keras, keras_model, x, y)  # the unscaled loss's gradients
        assert_same_state(keras, list(keras_model.parameters()), opt, list(model.parameters()))
    before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    weights = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(loss_of(model, *data[0])).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == scale / 2
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(p, w)
        for k, v in opt.state[p].items():
            assert torch.equal(v, before[p][k]), k  # the step counter did not move either


# ----------------------------------------------------------------------------------------------
# ZeroRedundancyOptimizer on a 1-process gloo group
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gloo_group():
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{_free_port()}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_zero_redundancy_optimizer(gloo_group):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = make_model()
    keras_model = copy.deepcopy(model)
    opt = ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=ko.optim.Nadam, lr=0.01, beta_1=0.8
    )
    keras = ko.optimizers.Nadam(0.01, beta_1=0.8)
    data = batches(5)
    for x, y in data[:3]:
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        keras_step(keras, keras_model, x, y)
    local = opt.optim
    assert isinstance(local, ko.optim.Nadam)
    assert_same_state(keras, list(keras_model.parameters()), local, list(model.parameters()))

    opt.consolidate_state_dict(to=0)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = copy.deepcopy(model)
    opt2 = ZeroRedundancyOptimizer(
        resumed.parameters(), optimizer_class=ko.optim.Nadam, lr=0.5, beta_1=0.8
    )
    opt2.load_state_dict(saved)  # writes opt2.optim.state[p] = ... directly: adopted at the step
    for x, y in data[3:]:
        for o, m in ((opt, model), (opt2, resumed)):
            o.zero_grad()
            loss_of(m, x, y).backward()
            o.step()
        keras_step(keras, keras_model, x, y)
    assert_same_state(keras, list(keras_model.parameters()), opt2.optim, list(resumed.parameters()))


# ----------------------------------------------------------------------------------------------
# optimizer in backward
def test_apply_optimizer_in_backward():
    from torch.distributed.optim import _apply_optimizer_in_backward
    from torch.distributed.optim.apply_optimizer_in_backward import _get_in_backward_optimizers

    model = make_model()
    keras_model = copy.deepcopy(model)
    _apply_optimizer_in_backward(ko.optim.Adam, model.parameters(), {"lr": 0.01, "beta_1": 0.8})
    optimizers = _get_in_backward_optimizers(model)
    assert len(optimizers) == 4 and all(isinstance(o, ko.optim.Adam) for o in optimizers)
    # one optimizer per parameter: the Keras equivalent is one Keras optimizer per variable
    keras = {id(p): ko.optimizers.Adam(0.01, beta_1=0.8) for p in keras_model.parameters()}
    for x, y in batches(3):
        loss_of(model, x, y).backward()
        assert all(p.grad is None for p in model.parameters())  # applied, then freed
        keras_model.zero_grad()
        loss_of(keras_model, x, y).backward()
        for p in keras_model.parameters():
            keras[id(p)].apply_gradients([(p.grad, p)])
    for opt, p, kp in zip(optimizers, model.parameters(), keras_model.parameters()):
        assert_same_state(keras[id(kp)], [kp], opt, [p])


# ----------------------------------------------------------------------------------------------
# torch.distributed.checkpoint
@pytest.mark.parametrize("name", ["Adam", "Nadam", "SGD"])
def test_dcp_get_and_set_optimizer_state_dict(name, tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    model = make_model()
    opt = getattr(ko.optim, name)(model.parameters(), lr=0.01, **kwargs)
    data = batches(5)
    for x, y in data[:3]:
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
    osd = get_optimizer_state_dict(model, opt)
    assert "0.weight" in osd["state"] and int(osd["state"]["0.weight"]["step"]) == 3
    dcp.save({"optim": osd}, checkpoint_id=str(tmp_path))

    resumed = copy.deepcopy(model)
    opt2 = getattr(ko.optim, name)(resumed.parameters(), lr=0.3, **kwargs)
    # DCP loads in place into a state dict shaped like the target's (its first step is DCP's
    # own zero-gradient, zero-lr initialisation); then set_optimizer_state_dict loads it.
    target = {"optim": get_optimizer_state_dict(resumed, opt2)}
    dcp.load(target, checkpoint_id=str(tmp_path))
    set_optimizer_state_dict(resumed, opt2, target["optim"])
    assert opt2.param_groups[0]["lr"] == 0.01
    for x, y in data[3:]:
        for o, m in ((opt, model), (opt2, resumed)):
            o.zero_grad()
            loss_of(m, x, y).backward()
            o.step()
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
        for k in opt.state[p]:
            assert torch.equal(opt.state[p][k], opt2.state[q][k]), k


# ----------------------------------------------------------------------------------------------
# Lightning: automatic optimization, and its checkpoints
def _lightning_module(opt_factory: Callable[[Any], Any]):
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return loss_of(self.net, x, y)

        def configure_optimizers(self):
            return opt_factory(self.net.parameters())

    return lightning, Module()


def _fit(lightning, module, steps: int, data, **kwargs: Any) -> Any:
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader, **kwargs)
    return trainer


def test_lightning_automatic_optimization_and_checkpoint_resume(tmp_path):
    def factory(params):
        opt = ko.optim.AdamW(params, lr=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    lightning, module = _lightning_module(factory)
    keras_model = copy.deepcopy(module.net)
    # One batch per epoch, so that data order cannot differ on resume (Lightning restarts an
    # interrupted epoch of a plain DataLoader from its start).
    data = batches(1)
    trainer = _fit(lightning, module, 4, data)
    opt = trainer.optimizers[0]
    assert isinstance(opt, ko.optim.AdamW)
    keras = ko.optimizers.AdamW(0.01)
    for t, (x, y) in enumerate(data * 4):
        keras.learning_rate = 0.01 * 0.5**t
        keras_step(keras, keras_model, x, y)
    assert_same_state(keras, list(keras_model.parameters()), opt, list(module.net.parameters()))

    # stopped after 2 steps, checkpointed, resumed by a new Trainer: the same 4 steps
    lightning, first = _lightning_module(factory)
    trainer = _fit(lightning, first, 2, data)
    ckpt = tmp_path / "half.ckpt"
    trainer.save_checkpoint(ckpt)
    lightning, second = _lightning_module(factory)
    trainer = _fit(lightning, second, 4, data, ckpt_path=str(ckpt))
    for p, q in zip(module.net.parameters(), second.net.parameters()):
        assert torch.equal(p, q)
    resumed = trainer.optimizers[0]
    for p, q in zip(module.net.parameters(), second.net.parameters()):
        for k in opt.state[p]:
            assert torch.equal(opt.state[p][k], resumed.state[q][k]), k


# ----------------------------------------------------------------------------------------------
# the reverse bridge: Keras schedules as torch LRSchedulers
BRIDGED = {
    "ExponentialDecay": schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.7),
    "PiecewiseConstantDecay": schedules.PiecewiseConstantDecay([1, 3], [0.1, 0.05, 0.01]),
    "CosineDecay-warmup": schedules.CosineDecay(
        0.0, decay_steps=4, warmup_target=0.1, warmup_steps=2
    ),
    "PolynomialDecay": schedules.PolynomialDecay(0.1, decay_steps=4, end_learning_rate=0.01),
}


@pytest.mark.parametrize("case", sorted(BRIDGED))
def test_keras_schedule_drives_torch_optimizers(case):
    schedule = BRIDGED[case]
    # any torch optimizer: the group's lr is the schedule's value at the step count
    w = nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([w], lr=1.0)
    bridge = ko.optim.lr_scheduler.KerasSchedule(sgd, schedule)
    for t in range(6):
        assert sgd.param_groups[0]["lr"] == float(schedule(torch.tensor(t)))
        assert bridge.get_last_lr() == [sgd.param_groups[0]["lr"]]
        sgd.step()
        bridge.step()
    # a kerasopt.optim optimizer driven by it is the Keras optimizer built with the schedule
    model = make_model()
    keras_model = copy.deepcopy(model)
    opt = ko.optim.Adam(model.parameters())
    bridge = ko.optim.lr_scheduler.KerasSchedule(opt, schedule)
    keras = ko.optimizers.Adam(schedule)
    for x, y in batches(6):
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        bridge.step()
        keras_step(keras, keras_model, x, y)
    assert_same_state(keras, list(keras_model.parameters()), opt, list(model.parameters()))


def test_keras_schedule_per_group_and_state_dict():
    a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    s1 = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    s2 = schedules.InverseTimeDecay(0.2, decay_steps=1, decay_rate=1.0)
    with pytest.raises(ValueError, match="one per param group"):
        ko.optim.lr_scheduler.KerasSchedule(opt, [s1])
    bridge = ko.optim.lr_scheduler.KerasSchedule(opt, [s1, s2])
    opt.step()
    bridge.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    buffer = io.BytesIO()
    torch.save(bridge.state_dict(), buffer)
    buffer.seek(0)
    again = ko.optim.lr_scheduler.KerasSchedule(opt, [s1, s2])
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert again.last_epoch == 1
