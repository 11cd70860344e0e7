"""Wrappers around optimizers (loss scaling, per-group optimizers).

``kerasopt.optimizers`` registers them for ``deserialize`` (``kerasopt._serialization``).
"""

from .loss_scale import LossScaleOptimizer
from .multi import MultiOptimizer, OptimizerMap

__all__ = ["LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"]
