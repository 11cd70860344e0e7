"""Independent float64 NumPy references, written from docs/reference-behaviour.md's formulas.

Nothing here imports kerasopt or torch: these rules are what kerasopt is checked against.

Interface (one class per optimizer, registered in ``REFERENCES`` under the optimizer's class name):

    ref = REFERENCES["Adam"](**config)     # same keyword names/defaults as the optimizer
    slots = ref.init_slots(var)            # dict slot_name -> float64 array, TF's slot names
    var = ref.dense(var, grad, slots, t, lr)            # one step, returns the new var
    var = ref.sparse(var, indices, values, slots, t, lr)  # one sparse step (duplicates NOT summed
                                                          # yet: the reference sums them itself)

``t`` is the 1-based number of the update being applied (iterations + 1) and ``lr`` the learning
rate of this step as a float (the harness applies schedules/legacy decay and the float32 rounding
of hyperparameters that TF stores in float32 variables before it calls the reference).
``slots`` is updated in place; arrays are float64 (complex128 for complex inputs) and never
aliased with the caller's inputs.
Optimizers with optimizer-level state (Nadam's ``momentum_cache``) keep it on the instance.
"""

from __future__ import annotations

import numpy as np


class Reference:
    """Base of the reference rules: per-variable slots and a dense step."""

    slot_names: tuple[str, ...] = ()

    def init_slots(self, var: np.ndarray) -> dict[str, np.ndarray]:
        dtype = np.complex128 if np.iscomplexobj(var) else np.float64
        return {name: np.zeros_like(var, dtype=dtype) for name in self.slot_names}

    def dense(
        self, var: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], t: int, lr: float
    ) -> np.ndarray:
        raise NotImplementedError

    def sparse(
        self,
        var: np.ndarray,
        indices: np.ndarray,
        values: np.ndarray,
        slots: dict[str, np.ndarray],
        t: int,
        lr: float,
    ) -> np.ndarray:
        """Default: lazy rows — the dense rule applied to the indexed rows only."""
        idx, vals = sum_duplicates(indices, values)
        var = var.copy()
        rows = {k: v[idx].copy() for k, v in slots.items()}
        var[idx] = self.dense(var[idx], vals, rows, t, lr)
        for k, v in rows.items():
            slots[k][idx] = v
        return var


def sum_duplicates(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique indices and the sum of the value rows of each."""
    uniq, inverse = np.unique(np.asarray(indices), return_inverse=True)
    dtype = np.complex128 if np.iscomplexobj(values) else np.float64
    out = np.zeros((len(uniq), *values.shape[1:]), dtype=dtype)
    np.add.at(out, inverse.reshape(-1), values.astype(dtype))
    return uniq, out


def dense_from_sparse(
    shape: tuple[int, ...], indices: np.ndarray, values: np.ndarray
) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float64)
    np.add.at(out, np.asarray(indices), values.astype(np.float64))
    return out


REFERENCES: dict[str, type[Reference]] = {}


def register(cls: type[Reference]) -> type[Reference]:
    REFERENCES[cls.__name__.removesuffix("Ref")] = cls
    return cls


from . import legacy, newer  # noqa: E402,F401
