"""TensorFlow's hyperparameter API of an optimizer, and the home of its own tensors.

``Hyperparameters`` is a base of ``kerasopt.Optimizer``: TF's ``_set_hyper`` / ``_get_hyper`` /
``_serialize_hyperparameter`` (which TF 2.x subclasses call), ``opt.lr``, the hyperparameters'
store (``kerasopt._hyper.HyperStore``), the step counter's Python mirror and the device the
optimizer's own tensors live on (its first variable's).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _legacy
from ._hyper import Hyper, HyperStore, check_hyper_value, declared, number_value, takes_step
from ._schedules import LearningRateSchedule
from ._serialization import serialize_schedule
from ._slots import SlotStore
from .variables import Variable

__all__ = ["Hyperparameters"]


class Hyperparameters:
    """TF's hyperparameter API over a ``HyperStore`` (a base of ``kerasopt.Optimizer``)."""

    _hyper: HyperStore
    _store: SlotStore
    _raw_iterations: Tensor
    _step: int
    _step_version: int
    _home: torch.device
    _iterations_adopted: bool
    _constants: dict[tuple[Any, ...], Tensor]

    def _set_hyper(self, name: str, value: Any) -> None:
        """Sets hyperparameter ``name`` (TF's ``_set_hyper``): number, tensor, callable or schedule.

        A number is written in place into the hyperparameter's float32 variable (the one
        ``opt.learning_rate`` returns), so references to it stay valid, as in TF; a tensor is
        kept by reference and read at every step; a callable or schedule replaces the value.
        """
        check_hyper_value(name, value)
        if name not in {d.name for d in declared(type(self)) if isinstance(d, Hyper)}:
            _legacy.expose(self, name)  # TF: `opt.momentum` after `_set_hyper("momentum")`
        if name == "learning_rate" and "learning_rate" in self._hyper:
            old = self._hyper.sources["learning_rate"]
            if isinstance(old, LearningRateSchedule) and number_value(value) is not None:
                raise TypeError(
                    "This optimizer was created with a `LearningRateSchedule` object as its "
                    "`learning_rate` constructor argument, hence its learning rate is not "
                    "settable. Assign another schedule or callable instead."
                )
        self._hyper.set(name, value, callable(value) and takes_step(value))

    def _hyper_source(self, name: str) -> Any:
        """The hyperparameter's current source: a number, tensor, callable or schedule."""
        return self._hyper.source(name)

    def _hyper_read(self, name: str) -> Any:
        """What ``opt.<hyperparameter>`` returns: the float32 variable holding a number (assign
        to it to change the value), or the tensor, callable or schedule that was set."""
        if name not in self._hyper:
            raise AttributeError(f"{type(self).__name__!r} object has no hyperparameter {name!r}")
        return self._hyper.read(name)

    @property
    def lr(self) -> Any:
        """Deprecated alias of ``learning_rate`` (TF keeps it for backward compatibility)."""
        return self._hyper_read("learning_rate")

    @lr.setter
    def lr(self, value: Any) -> None:
        self.learning_rate = value

    def _get_hyper(self, name: str, dtype: torch.dtype | None = None) -> Any:
        """TF's ``_get_hyper``: the step-time value in ``dtype`` (schedules are returned as is)."""
        value = self._hyper.sources[name]
        if isinstance(value, LearningRateSchedule):
            return value
        tensor = self._hyper.tensors[name]
        if callable(value) and not self._in_step:
            tensor = self._hyper.evaluate(name, self._raw_iterations)
        elif dtype is None and not callable(value) and not isinstance(value, Tensor):
            return self._hyper.variables[name]  # TF returns the hyperparameter variable
        return tensor if dtype is None else tensor.to(dtype)

    _in_step = False

    def _serialize_hyperparameter(self, name: str) -> Any:
        value = self._hyper_source(name)
        if isinstance(value, LearningRateSchedule):
            return serialize_schedule(value)
        if callable(value):
            return float(self._hyper.evaluate(name, self._raw_iterations))
        return value if not isinstance(value, Tensor) else float(value)

    def _on_param_change(self, name: str) -> None:
        self._constants.clear()

    def _declared_config(self, skip_decay: bool) -> dict[str, Any]:
        """``get_config``'s entries for the class's declarations: each ``Hyper`` serialized
        (``skip_decay``: not the legacy ``decay``), each ``Param`` that belongs in the config."""
        config: dict[str, Any] = {}
        for decl in declared(type(self)):
            if isinstance(decl, Hyper):
                if decl.name in self._hyper.sources and not (decl.name == "decay" and skip_decay):
                    config[decl.name] = self._serialize_hyperparameter(decl.name)
            elif decl.config:
                config[decl.name] = getattr(self, decl.name)
        return config

    # ------------------------------------------------------------------------------------------
    # helpers for the optimizers' `prepare`
    def _hyper_t(self, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
        return self._hyper.tensors[name].to(dtype).to(device)

    def _const(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A plain attribute converted exactly to ``dtype`` (cached: no per-step host copies)."""
        if torch.compiler.is_compiling():
            # (a constant of the traced graph; caching it would re-trace the next step)
            return torch.tensor(value, dtype=dtype, device=device)
        key = (value, dtype, device)
        tensor = self._constants.get(key)
        if tensor is None:
            tensor = torch.tensor(value, dtype=dtype, device=device)
            self._constants[key] = tensor
        return tensor

    def _decayed_lr(self, var_dtype: torch.dtype) -> Tensor:
        """The step's learning rate in ``var_dtype``: schedule value, then legacy ``decay``."""
        lr_t = self._hyper.tensors["learning_rate"].to(var_dtype)
        if (
            "decay" in self._hyper.sources
            if torch.compiler.is_compiling()
            else self._hyper.active("decay")
        ):
            local_step = self._raw_iterations.to(var_dtype)
            decay_t = self._hyper.tensors["decay"].to(var_dtype)
            lr_t = lr_t / (1.0 + decay_t * local_step)
        return lr_t

    def _decay_active(self) -> bool:
        return self._hyper.active("decay")

    # ------------------------------------------------------------------------------------------
    # the counter's mirror, and where the optimizer's own tensors live
    def _sync_step(self) -> None:
        """Refreshes the Python mirror of the counter when the tensor changed behind our back
        (an adopted global step, ``opt.iterations.assign(...)``); reads no device otherwise."""
        version = self._raw_iterations._version
        if version != self._step_version:
            self._step = int(self._raw_iterations)
            self._step_version = version

    def _ensure_home(self, device: torch.device) -> None:
        """Moves the counter and hyperparameter tensors to the first variable's device (not to
        the meta device: a meta variable, which no step updates, must not strand them there)."""
        if self._store.by_id or device == self._home or device.type == "meta":
            return
        self._home = device
        if not self._iterations_adopted:
            self._raw_iterations = Variable._wrap(
                self._raw_iterations.detach().to(device), False, "iter", None
            )
            self._step_version = self._raw_iterations._version
        self._hyper.move(device)
        self._store.move_weights(device)
