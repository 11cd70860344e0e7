"""Shared helpers of the table-driven tests: variables, gradients, tolerances, reference runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import kerasopt as ko
from tests.reference import REFERENCES, dense_from_sparse
from tests.specs import OptSpec

SHAPES: list[tuple[int, ...]] = [(), (3,), (4, 5)]
SPARSE_SHAPES: list[tuple[int, ...]] = [(6,), (5, 3)]

TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (6e-2, 2e-2),
}


def tolerance(spec: OptSpec, dtype: torch.dtype) -> tuple[float, float]:
    rtol, atol = TOL[dtype]
    if dtype == torch.float32:
        rtol = max(rtol, spec.rtol32)
    return rtol, atol


def make_vars(
    shapes: list[tuple[int, ...]], dtype: torch.dtype, seed: int = 0
) -> list[torch.nn.Parameter]:
    rng = np.random.default_rng(seed)
    return [
        torch.nn.Parameter(torch.tensor(rng.uniform(-1, 1, size=s), dtype=dtype)) for s in shapes
    ]


def make_grads(
    shapes: list[tuple[int, ...]], steps: int, dtype: torch.dtype, seed: int = 1
) -> list[list[torch.Tensor]]:
    rng = np.random.default_rng(seed)
    return [
        [torch.tensor(rng.uniform(-1, 1, size=s), dtype=dtype) for s in shapes]
        for _ in range(steps)
    ]


def to64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def make_optimizer(spec: OptSpec, config: dict[str, Any], **extra: Any) -> ko.optimizers.Optimizer:
    cls = getattr(ko.optimizers, spec.name)
    return cls(**config, **extra)


class RefRun:
    """Runs the float64 reference alongside an optimizer: same variables, same gradients."""

    def __init__(
        self,
        spec: OptSpec,
        config: dict[str, Any],
        variables: list[torch.Tensor],
        names: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.ref = REFERENCES[spec.name](**spec.reference_config(config))
        self.names = names or [""] * len(variables)
        self.vars = [to64(v) for v in variables]
        self.slots = [self._init(v, n) for v, n in zip(self.vars, self.names)]
        self.lr = float(np.float32(config.get("learning_rate", self.ref_default_lr())))
        wd = config.get("weight_decay", spec.default_weight_decay)
        self.weight_decay = wd

    def ref_default_lr(self) -> float:
        import inspect

        return inspect.signature(type(self.ref).__init__).parameters["learning_rate"].default

    def _init(self, var: np.ndarray, name: str) -> dict[str, np.ndarray]:
        if self.spec.name == "Muon":
            return self.ref.init_slots(var, name=name)
        return self.ref.init_slots(var)

    def _kw(self, i: int) -> dict[str, Any]:
        return {"name": self.names[i]} if self.spec.name == "Muon" else {}

    def _decay(self, i: int) -> None:
        wd = self.weight_decay
        if self.spec.name == "Muon":
            wd = (
                self.ref.weight_decay
                if not self.ref.adamw_path(self.vars[i], self.names[i])
                else self.ref.adam_weight_decay
            )
        if wd is not None:
            wd = float(np.float32(wd))  # TF casts the Python float through float32
            self.vars[i] = self.vars[i] - self.vars[i] * wd * self.lr

    def step(self, t: int, grads: list[Any], lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        begin = getattr(self.ref, "begin_step", None)
        if begin is not None:
            begin(t)
        for i, g in enumerate(grads):
            if g is None:
                continue
            self._decay(i)
            if isinstance(g, tuple):  # (indices, values)
                idx, vals = g
                self.vars[i] = self.ref.sparse(
                    self.vars[i], idx, vals, self.slots[i], t, lr, **self._kw(i)
                )
            else:
                self.vars[i] = self.ref.dense(self.vars[i], g, self.slots[i], t, lr, **self._kw(i))


def assert_matches(
    opt: Any,
    variables: list[torch.Tensor],
    run: RefRun,
    spec: OptSpec,
    dtype: torch.dtype,
    what: str,
) -> None:
    rtol, atol = tolerance(spec, dtype)
    for i, var in enumerate(variables):
        np.testing.assert_allclose(
            to64(var), run.vars[i], rtol=rtol, atol=atol, err_msg=f"{what}: variable {i}"
        )
        for slot_name, ref_slot in run.slots[i].items():
            got = to64(opt.get_slot(var, slot_name))
            np.testing.assert_allclose(
                got,
                ref_slot,
                rtol=rtol,
                atol=atol,
                err_msg=f"{what}: slot {slot_name!r} of variable {i}",
            )


__all__ = ["dense_from_sparse"]
