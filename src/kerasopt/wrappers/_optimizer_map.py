"""``OptimizerMap``: which optimizer each variable name gets, for ``MultiOptimizer``.

A mutable mapping from variable names (exact keys or regular expressions) to optimizers, with a
default optimizer for names no key matches; ``MultiOptimizer`` (``kerasopt.wrappers.multi``)
routes each variable through it. Keras 3's ``keras.optimizers.OptimizerMap``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping
from typing import Any

from torch import Tensor

from .._serialization import build_from_config, serialize
from .._slots import var_label
from ..optimizer import Optimizer
from ._base import Wrapper


class OptimizerMap(MutableMapping[str, Optimizer]):
    """A mapping from variable names (exact keys or regular expressions) to optimizers.

    Lookup ``m[name]``: an exact key wins; otherwise every key is a regular expression tested
    with ``re.fullmatch(key, name)``: one match gives its optimizer, several raise
    ``ValueError``, none gives ``default_optimizer``. So ``"encoder"`` matches only the name
    ``encoder``; use ``r"encoder\\..*"`` for every parameter of an ``encoder`` submodule.

    Args:
        default_optimizer: the optimizer of every variable no key matches.
        optimizer_map: optional initial ``{key: optimizer}`` entries (checked like
            ``m[key] = optimizer``).

    Raises:
        TypeError: ``default_optimizer`` is not an optimizer, or ``optimizer_map`` is not a dict.
        ValueError: an invalid entry (see ``__setitem__``).

    Example:
        >>> import kerasopt as ko
        >>> adam, sgd = ko.optimizers.Adam(), ko.optimizers.SGD()
        >>> m = ko.optimizers.OptimizerMap(sgd, {"decoder": adam})
        >>> m["encoder.0.weight"] = adam
        >>> m[r"encoder\\..*"] = ko.optimizers.SGD(0.1, name="enc")
        >>> m["decoder"].name, m["encoder.0.weight"].name, m["encoder.1.bias"].name
        ('Adam', 'Adam', 'enc')
        >>> m["decoder.0.weight"].name
        'SGD'
    """

    def __init__(
        self, default_optimizer: Optimizer, optimizer_map: dict[str, Optimizer] | None = None
    ) -> None:
        if not isinstance(default_optimizer, Optimizer):
            raise TypeError(
                f"default_optimizer must be a Keras Optimizer instance. Received: {default_optimizer}"
            )
        if optimizer_map is not None and not isinstance(optimizer_map, dict):
            raise TypeError(f"optimizer_map must be a dictionary. Received: {optimizer_map}")
        self._default_optimizer = default_optimizer
        self._optimizer_map: dict[str, Optimizer] = {}
        for key, optimizer in (optimizer_map or {}).items():
            self[key] = optimizer

    @property
    def default_optimizer(self) -> Optimizer:
        """The optimizer of variables no key matches."""
        return self._default_optimizer

    def __getitem__(self, key: str) -> Optimizer:
        if key in self._optimizer_map:
            return self._optimizer_map[key]
        matching = [pattern for pattern in self._optimizer_map if re.fullmatch(pattern, key)]
        if len(matching) > 1:
            raise ValueError(f"Multiple optimizers assigned to variable {key}.")
        if len(matching) == 1:
            return self._optimizer_map[matching[0]]
        return self._default_optimizer

    def __setitem__(self, key: str, optimizer: Optimizer) -> None:
        """Maps ``key`` (a variable name or a regular expression) to ``optimizer``.

        Raises:
            ValueError: ``key`` already present or not a string; ``optimizer`` not an optimizer,
                or a ``LossScaleOptimizer`` / ``MultiOptimizer``.
        """
        if key in self._optimizer_map:
            raise ValueError(
                f"'{key}' already exists in the OptimizerMap with value "
                f"{self._optimizer_map[key]}. Please make sure to not use duplicated keys."
            )
        if not isinstance(key, str):
            raise ValueError(f"key must be a string. Received: {key}")
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a Keras Optimizer instance. Received: {optimizer}")
        if isinstance(optimizer, Wrapper):
            raise ValueError(f"{type(optimizer).__name__} cannot be nested inside an OptimizerMap.")
        self._optimizer_map[key] = optimizer

    def __contains__(self, key: object) -> bool:
        # Exact keys only: the Mapping default would say True for every name (lookup never
        # fails, it falls back to the default optimizer).
        return key in self._optimizer_map

    def __delitem__(self, key: str) -> None:
        del self._optimizer_map[key]

    def __len__(self) -> int:
        return len(self._optimizer_map)

    def __iter__(self) -> Iterator[str]:
        return iter(self._optimizer_map)

    def __call__(self, variable: Tensor) -> Optimizer:
        """The optimizer of ``variable``, looked up by its ``name`` attribute."""
        name = getattr(variable, "name", None)
        if not isinstance(name, str):
            raise ValueError(
                f"OptimizerMap routes variables by name, but {var_label(variable)} has none: "
                "look it up as `m[name]`, or give MultiOptimizer an nn.Module or a "
                "{name: tensor} dict."
            )
        return self[name]

    def __repr__(self) -> str:
        return (
            f"OptimizerMap(default_optimizer={self._default_optimizer!r}, "
            f"optimizer_map={self._optimizer_map!r})"
        )

    def get_config(self) -> dict[str, Any]:
        """``{default_optimizer: serialized, optimizer_map: {key: serialized}}``."""
        return {
            "default_optimizer": serialize(self._default_optimizer),
            "optimizer_map": {k: serialize(v) for k, v in self._optimizer_map.items()},
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> OptimizerMap:
        """Rebuilds the map from ``get_config()`` output."""
        return build_from_config(
            cls,
            config,
            custom_objects,
            optimizers=("default_optimizer",),
            optimizer_dicts=("optimizer_map",),
        )
