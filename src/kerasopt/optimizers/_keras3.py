"""The base of the optimizers that exist only in the newer generation (Keras 3 numerics)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .._hyper import tf_cast_value
from ..optimizer import Optimizer


class Keras3Optimizer(Optimizer):
    """Keras 3's conventions, once: sparse gradients are densified (Keras 3 has no sparse
    rules), slots are created variable by variable, ``get_config`` reports every newer base key,
    and the coefficient helpers follow Keras 3's casts on the TensorFlow backend."""

    sparse_mode: ClassVar[str] = "dense"
    interleave_slots: ClassVar[bool] = True
    keras3_config: ClassVar[bool] = True

    def _beta_powers(self, dtype: torch.dtype, device: torch.device, *betas: float) -> list[Tensor]:
        """``ops.power(ops.cast(beta, dtype), t)`` for each beta, ``t = iterations + 1``.

        fidelity: on TensorFlow ``ops.cast`` of a Python float goes through float32, which shows
        in float64 (checked against TF 2.21: tests/test_tf_golden.py).
        """
        t = self._local_step(dtype, device)
        return [torch.pow(self._const(tf_cast_value(b), dtype, device), t) for b in betas]

    def _one_minus(self, beta: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``1 - beta`` as Keras computes it: on the Python float, then converted."""
        return self._const(1 - beta, dtype, device)
