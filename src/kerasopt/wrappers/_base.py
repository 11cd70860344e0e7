"""What the wrappers share: ``Wrapper``, the delegating base, and ``Transaction``, one step across
inner optimizers.

A wrapper owns no hyperparameters, slots or update rule: it composes ``kerasopt`` optimizers and
drives their pipeline (``_plan`` changes nothing and may raise, ``_commit`` writes). So
``Wrapper`` is not an ``Optimizer`` subclass; it is registered as a virtual one
(``Optimizer.register``), so ``isinstance(wrapper, Optimizer)`` holds, as TF's
``LossScaleOptimizer`` is an ``Optimizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
from torch import Tensor

from .._serialization import build_from_config
from .._sync import StepLock, locked
from ..optimizer import Optimizer
from ..step import Transaction

__all__ = ["Transaction", "Wrapper"]

_W = TypeVar("_W", bound="Wrapper")


class Wrapper:
    """Base of the optimizers that drive other optimizers (``LossScaleOptimizer``,
    ``MultiOptimizer``).

    It forwards the Keras surface a wrapper shares to its inner optimizers: ``variables()``
    (the wrapper's own, then each inner optimizer's), ``weights``, ``get_weights``,
    ``get_slot`` / ``get_slot_names``, ``finalize_variable_values``, the prefixed state dict and
    the config. A subclass says which inner optimizers it has (``_inners``), which one owns a
    variable (``_owner_of``), how it reads variable lists (``_flatten_var_list``), its state-dict
    prefixes (``_state_prefix``) and its config.
    """

    #: the constructor arguments holding serialized optimizers, rebuilt by ``from_config``
    _optimizer_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str) -> None:
        self._name = name
        # the wrapper's own step boundary (its own state: a loss scale, a step counter); a step
        # also holds its inner optimizers' locks, through Transaction
        self._step_lock = StepLock()

    @property
    def name(self) -> str:
        return self._name

    # ------------------------------------------------------------------------------------------
    # what a wrapper defines
    def _inners(self) -> list[Optimizer]:
        """The inner optimizers, in ``variables()`` and state-dict order."""
        raise NotImplementedError

    def _owner_of(self, var: Tensor) -> Optimizer:
        """The inner optimizer that updates ``var``."""
        raise NotImplementedError

    def _flatten_var_list(self, var_list: Any) -> list[Tensor]:
        """The tensors of ``var_list`` (a module, a named dict, a callable...)."""
        raise NotImplementedError

    def _state_prefix(self, index: int) -> str:
        """The state-dict prefix of the ``index``-th inner optimizer's keys."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, optimizers serialized."""
        raise NotImplementedError

    def _own_variables(self) -> list[Tensor]:
        """The wrapper's own weights, listed before the inner optimizers' in ``variables()``."""
        return []

    # ------------------------------------------------------------------------------------------
    # weights and slots
    def variables(self) -> list[Tensor]:
        """The wrapper's own weights (if any), then each inner optimizer's ``variables()``."""
        out = self._own_variables()
        for opt in self._inners():
            out.extend(opt.variables())
        return out

    @property
    def weights(self) -> list[Tensor]:
        return self.variables()

    @locked
    def get_weights(self) -> list[np.ndarray]:
        """The values of ``weights`` as NumPy arrays."""
        return [w.detach().cpu().numpy().copy() for w in self.variables()]

    def get_slot(self, var: Tensor, slot_name: str) -> Tensor:
        """The slot ``slot_name`` of ``var``, from the inner optimizer that owns ``var``."""
        return self._owner_of(var).get_slot(var, slot_name)

    def get_slot_names(self) -> list[str]:
        """The inner optimizers' slot names, each once, in first-creation order."""
        names: list[str] = []
        for opt in self._inners():
            names.extend(n for n in opt.get_slot_names() if n not in names)
        return names

    def finalize_variable_values(self, var_list: Any) -> None:
        """Lets each inner optimizer finalize its own variables (EMA overwrite, if enabled)."""
        groups: dict[int, tuple[Optimizer, list[Tensor]]] = {}
        for var in self._flatten_var_list(var_list):
            owner = self._owner_of(var)
            groups.setdefault(id(owner), (owner, []))[1].append(var)
        for owner, group in groups.values():
            owner.finalize_variable_values(group)

    # ------------------------------------------------------------------------------------------
    # state-dict plumbing
    def _inner_state(self) -> dict[str, Tensor]:
        """Every inner optimizer's ``state_dict()``, each key under its ``_state_prefix``."""
        state: dict[str, Tensor] = {}
        for index, opt in enumerate(self._inners()):
            prefix = self._state_prefix(index)
            state.update({f"{prefix}{k}": v for k, v in opt.state_dict().items()})
        return state

    def _split_state(
        self, state_dict: dict[Any, Any]
    ) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
        """``state_dict`` as each inner optimizer's part (prefixes removed), and the other
        entries (the wrapper's own, or unknown keys)."""
        prefixes = [self._state_prefix(i) for i in range(len(self._inners()))]
        parts: list[dict[str, Any]] = [{} for _ in prefixes]
        own: dict[Any, Any] = {}
        for key, value in state_dict.items():
            index = next(
                (i for i, p in enumerate(prefixes) if isinstance(key, str) and key.startswith(p)),
                None,
            )
            if index is None:
                own[key] = value
            else:
                parts[index][key[len(prefixes[index]) :]] = value
        return parts, own

    def _load_inner_state(self, parts: Iterable[dict[str, Any]], strict: bool) -> None:
        """Loads each part into its inner optimizer, all or nothing (each inner load checks
        everything before it assigns; the ones already loaded are restored if a later fails)."""
        inners = self._inners()
        before = [opt.state_dict() for opt in inners[:-1]]
        done = 0
        try:
            for opt, part in zip(inners, parts):
                opt.load_state_dict(part, strict=strict)
                done += 1
        except Exception:
            for opt, old in zip(inners[:done], before):
                opt.load_state_dict(old)
            raise

    # ------------------------------------------------------------------------------------------
    # config
    @classmethod
    def from_config(
        cls: type[_W], config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> _W:
        """Deserializes the optimizers in ``config``, then calls the constructor."""
        return build_from_config(cls, config, custom_objects, optimizers=cls._optimizer_arguments)

    def _describe(self) -> str:
        return f"name={self._name!r}"

    def __repr__(self) -> str:
        return f"<kerasopt.optimizers.{type(self).__name__} {self._describe()}>"


# TF's LossScaleOptimizer is an Optimizer: isinstance checks (`optimizers.get`, what a wrapper or
# an OptimizerMap accepts) see every wrapper as one.
Optimizer.register(Wrapper)
