"""Keras learning-rate schedules as torch ``LRScheduler``s, for any ``torch.optim`` optimizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["KerasSchedule"]

Schedule = Callable[[Any], Any]


class KerasSchedule(LRScheduler):
    """Sets each group's ``lr`` to a Keras schedule's value at the step count (a torch scheduler).

    Call ``scheduler.step()`` once after each ``optimizer.step()``, as with any torch scheduler:
    update ``t`` (0-based) then runs at ``schedule(t)``, the value a Keras optimizer built with
    that schedule uses for its ``t``-th update (``iterations == t``). The value is TF's: computed
    in float32 by the schedule, so a ``kerasopt.optim`` optimizer driven by it is bit-identical
    to the Keras API optimizer built with the schedule.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (``kerasopt.optim`` or torch's own).
        schedule: a ``kerasopt.optimizers.schedules.LearningRateSchedule`` (or any callable
            ``step -> lr``), or one per param group.
        last_epoch: torch's resume index (``-1``: start).

    Raises:
        ValueError: a list of schedules whose length is not the number of param groups.

    Example:
        >>> import torch, kerasopt as ko
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> decay = ko.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
        >>> sched = ko.optim.lr_scheduler.KerasSchedule(opt, decay)
        >>> lrs = []
        >>> for _ in range(3):
        ...     lrs.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> [round(lr, 6) for lr in lrs]
        [0.1, 0.05, 0.025]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        last_epoch: int = -1,
    ) -> None:
        n = len(optimizer.param_groups)
        if isinstance(schedule, (list, tuple)):
            if len(schedule) != n:
                raise ValueError(
                    f"Expected {n} schedules (one per param group), but got {len(schedule)}."
                )
            schedules = list(schedule)
        else:
            schedules = [schedule] * n
        for s in schedules:
            if not callable(s):
                raise TypeError(f"A schedule must be callable (step -> lr); got {s!r}.")
        self.schedules: list[Schedule] = schedules
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        """The schedules' values at ``last_epoch`` (an int64 step, as Keras passes it)."""
        step = torch.tensor(max(self.last_epoch, 0), dtype=torch.int64)
        out: list[float | torch.Tensor] = []
        for s in self.schedules:
            value = s(step)
            out.append(float(value) if not isinstance(value, float) else value)
        return out

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """torch's scheduler state without the schedules (code, rebuilt by the constructor)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "schedules"})
