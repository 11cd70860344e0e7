"""``MultiOptimizer`` and ``OptimizerMap`` — Keras 3's (``keras.optimizers.MultiOptimizer``).

``kerasopt.optimizers.MultiOptimizer`` already has Keras 3's semantics (docs/reference-behaviour.md Part 2 §3.7);
this subclass only gives it Keras 3's surface: ``variables`` as a list, a snake-case default name,
and configs whose inner optimizers are read as ``kerasopt.keras3`` classes.
"""

from __future__ import annotations

from typing import Any

from ..wrappers import multi as _multi
from ..wrappers.multi import OptimizerMap
from ._base import CLASSES, VariableList

__all__ = ["MultiOptimizer", "OptimizerMap"]


class MultiOptimizer(_multi.MultiOptimizer):
    """Different optimizers for different variables, as Keras 3 defines it.

    See ``kerasopt.optimizers.MultiOptimizer`` for the routing and the step; ``variables`` is
    ``[iteration, learning_rate (unused), each inner optimizer's variables...]``.

    Args:
        optimizer_map: an ``OptimizerMap`` or a callable ``variable -> optimizer``.
        loss_scale_factor: static loss scale pushed to every inner optimizer.
        name: defaults to ``"multi_optimizer"``.

    Example:
        >>> import torch, kerasopt as ko
        >>> model = torch.nn.Linear(2, 1)
        >>> adam, sgd = ko.keras3.Adam(0.1), ko.keras3.SGD(0.5)
        >>> opt = ko.keras3.MultiOptimizer(ko.keras3.OptimizerMap(sgd, {"bias": adam}))
        >>> _ = opt.minimize(lambda: model(torch.ones(1, 2)).sum(), model)
        >>> opt.name, len(opt.variables)
        ('multi_optimizer', 8)
    """

    def __init__(
        self, optimizer_map: Any, loss_scale_factor: float | None = None, name: str | None = None
    ) -> None:
        super().__init__(
            optimizer_map,
            loss_scale_factor=loss_scale_factor,
            name="multi_optimizer" if name is None else name,
        )

    @property
    def variables(self) -> VariableList:
        """``[iteration, learning_rate, inner optimizers' variables...]`` (Keras 3's order)."""
        return VariableList(_multi.MultiOptimizer.variables(self))

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> MultiOptimizer:
        """As the base's, reading inner optimizers' class names as ``kerasopt.keras3`` classes."""
        return super().from_config(config, {**CLASSES, **(custom_objects or {})})
