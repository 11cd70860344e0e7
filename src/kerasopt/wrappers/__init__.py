"""Wrappers around optimizers (loss scaling, per-group optimizers)."""

from __future__ import annotations

from typing import Any

from .loss_scale import LossScaleOptimizer
from .multi import MultiOptimizer, OptimizerMap

__all__ = ["WRAPPERS", "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"]

#: Classes ``kerasopt.optimizers.deserialize`` builds by their exact class name.
WRAPPERS: dict[str, Any] = {
    cls.__name__: cls for cls in (LossScaleOptimizer, MultiOptimizer, OptimizerMap)
}
