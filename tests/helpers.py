"""Shared helpers of the table-driven tests: variables, gradients, tolerances, reference runs.

Tolerances in units of ulp (``ulp``, ``ulp_excess``, ``assert_within_ulps``) are explained in
docs/tolerances.md.
"""

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


# Per step: (ulps of the element, ulps of the tensor's scale) by which two correct runs of one
# elementwise rule may differ: other kernels (torch's CPU sqrt is not correctly rounded, TF's
# float32 rsqrt is an approximation), fused operations under torch.compile. docs/tolerances.md.
ELEMENTWISE_ULPS = (4.0, 4.0)


def tolerance(spec: OptSpec, dtype: torch.dtype) -> tuple[float, float]:
    rtol, atol = TOL[dtype]
    if dtype == torch.float32:
        rtol = max(rtol, spec.rtol32)
    return rtol, atol


def make_vars(
    shapes: list[tuple[int, ...]], dtype: torch.dtype, seed: int = 0, scale: float = 1.0
) -> list[torch.nn.Parameter]:
    rng = np.random.default_rng(seed)
    return [
        torch.nn.Parameter(torch.tensor(scale * rng.uniform(-1, 1, size=s), dtype=dtype))
        for s in shapes
    ]


def make_grads(
    shapes: list[tuple[int, ...]], steps: int, dtype: torch.dtype, seed: int = 1
) -> list[list[torch.Tensor]]:
    rng = np.random.default_rng(seed)
    return [
        [torch.tensor(rng.uniform(-1, 1, size=s), dtype=dtype) for s in shapes]
        for _ in range(steps)
    ]


def ulp(x: Any, dtype: torch.dtype) -> np.ndarray:
    """The spacing of ``dtype``'s numbers at ``|x|``: ``eps * 2**floor(log2|x|)`` for normal
    numbers (the gap to the next larger magnitude), the subnormal spacing below ``tiny``.

    Works for float64/32/16 and bfloat16 alike (NumPy has no bfloat16); ``x`` may be any array of
    values (float64 holds them all exactly).
    """
    info = torch.finfo(dtype)
    mag = np.abs(np.asarray(x, dtype=np.float64))
    _, exponent = np.frexp(np.maximum(mag, info.tiny))  # mag = m * 2**exponent, m in [0.5, 1)
    return info.eps * np.ldexp(1.0, exponent - 1)


def ulp_excess(
    got: Any,
    expected: Any,
    dtype: torch.dtype,
    *,
    ulps: float,
    scale: float = 0.0,
    scale_ulps: float = 0.0,
) -> tuple[float, int]:
    """How far ``got`` is from ``expected``, as a fraction of the bound

        |got - expected| <= ulps * ulp(max(|got|, |expected|)) + scale_ulps * ulp(scale)

    per element (``<= 1`` everywhere: within the bound). The second term is the floor for
    values near 0 that come out of a cancellation: their error is in ulps of the operands, whose
    magnitude the caller passes as ``scale``. Returns (worst fraction, index of the worst element);
    NaNs must match NaNs, infinities must be equal.
    """
    a = np.asarray(got, dtype=np.float64).ravel()
    b = np.asarray(expected, dtype=np.float64).ravel()
    assert a.shape == b.shape, f"{a.size} values, expected {b.size}"
    if a.size == 0:
        return 0.0, -1
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return float("inf"), int(np.argmax(nan_a != nan_b))
    finite = ~nan_a & np.isfinite(a) & np.isfinite(b)
    if ((a != b) & ~finite & ~nan_a).any():
        return float("inf"), int(np.argmax((a != b) & ~finite & ~nan_a))
    a, b = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
    bound = ulps * ulp(np.maximum(np.abs(a), np.abs(b)), dtype)
    bound = bound + scale_ulps * float(ulp(scale, dtype))
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(diff == 0, 0.0, diff / bound)
    i = int(np.argmax(frac))
    return float(frac[i]), i


def ulps_apart(got: Any, expected: Any, dtype: torch.dtype) -> np.ndarray:
    """``|got - expected|`` per element in ulps of ``dtype`` at ``max(|got|, |expected|)``."""
    a = np.asarray(got, dtype=np.float64).ravel()
    b = np.asarray(expected, dtype=np.float64).ravel()
    return np.abs(a - b) / ulp(np.maximum(np.abs(a), np.abs(b)), dtype)


def assert_within_ulps(
    got: Any,
    expected: Any,
    dtype: torch.dtype,
    *,
    ulps: float,
    scale: float = 0.0,
    scale_ulps: float = 0.0,
    what: str = "",
) -> None:
    """Asserts the bound of ``ulp_excess``; the message names the worst element."""
    frac, i = ulp_excess(got, expected, dtype, ulps=ulps, scale=scale, scale_ulps=scale_ulps)
    if frac <= 1.0:
        return
    a = np.asarray(got, dtype=np.float64).ravel()[i]
    b = np.asarray(expected, dtype=np.float64).ravel()[i]
    apart = float(ulps_apart(a, b, dtype)[0]) if np.isfinite(a) and np.isfinite(b) else np.inf
    raise AssertionError(
        f"{what}: element {i}: {a!r} vs expected {b!r}, {apart:.1f} ulp apart "
        f"({frac:.2f}x the bound {ulps:g} ulp + {scale_ulps:g} ulp of {scale:.3g}, {dtype})"
    )


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
