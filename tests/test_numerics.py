"""Every optimizer of the table against its float64 NumPy reference, step by step."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.helpers import (
    SHAPES,
    SPARSE_SHAPES,
    RefRun,
    assert_matches,
    make_grads,
    make_optimizer,
    make_vars,
    to64,
    ulp,
)
from tests.specs import BY_NAME, KERAS3_HYPERS, OPTIMIZERS, case_ids, cases

STEPS = 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_dense_matches_reference(spec, config, dtype):
    variables = make_vars(SHAPES, dtype)
    opt = make_optimizer(spec, config)
    run = RefRun(spec, config, variables)
    for t, grads in enumerate(make_grads(SHAPES, STEPS, dtype), start=1):
        result = opt.apply_gradients(zip(grads, variables))
        assert int(result) == t
        run.step(t, [to64(g) for g in grads])
        assert_matches(opt, variables, run, spec, dtype, f"step {t}")


HALF = [torch.float16, torch.bfloat16]
HALF_STEPS = 2
# Per element and step, in units of eps times the step's size: the slots are stored in the half
# type (half an ulp each) and the update computed from them (in float32) inherits about that
# relative error. Measured: at most 0.25 (docs/tolerances.md).
HALF_C = 2.0
DECAY_RATES = ("beta_1", "beta_2", "rho", "momentum", "adam_beta_1", "adam_beta_2")


def _in(dtype: torch.dtype, x: float) -> float:
    return torch.tensor(x, dtype=torch.float64).to(dtype).item()


def coefficient_gap(spec, config, dtype: torch.dtype, steps: int) -> float:
    """The relative difference between the coefficients the reference computes (float64, from
    the hyperparameters as the spec rounds them) and the rule's (computed in ``dtype``: float32
    for half-precision variables, kerasopt.optimizer.compute_dtype), which rounding alone cannot
    bound by eps: ``1 - beta^t`` rounds ``beta^t`` (an ulp of 1) and divides by a small number,
    and Keras 3's rules take ``1 - beta`` from the Python float (then convert it) where the
    reference gets ``1 - round(beta)``. Computed exactly from the config (in float32: ~1e-4)."""
    gap = 0.0
    for key, beta in spec.reference_config(config).items():
        if key not in DECAY_RATES or not isinstance(beta, float) or not 0 < beta < 1:
            continue
        b = _in(dtype, beta)
        if spec.float32_hypers == KERAS3_HYPERS:
            gap = max(gap, abs(b - beta) / (1 - beta))
        for t in range(1, steps + 1):
            if b < 1:
                gap = max(gap, abs(_in(dtype, b**t) - b**t) / (1 - b**t))
    return gap


class HalfRun:
    """An optimizer in float16/bfloat16 next to the float64 reference fed the same values
    (variables near 0: their own rounding, an ulp of |x| per step, stays small next to a step of
    the learning rate's size, so that a wrong step shows)."""

    SHAPES: ClassVar[list[tuple[int, ...]]] = [(3,), (2, 4)]

    def __init__(self, spec, config, dtype, lr_factor: float = 1.0) -> None:
        self.spec, self.config, self.dtype = spec, config, dtype
        self.variables = make_vars(self.SHAPES, dtype, scale=0.01)
        self.start = [to64(v) for v in self.variables]
        cfg = dict(config)
        if lr_factor != 1.0:  # a wrong step, for the test that the bound rejects it
            cfg["learning_rate"] = config["learning_rate"] * lr_factor
        self.opt = make_optimizer(spec, cfg)
        # fidelity (kerasopt.optimizer.compute_dtype): coefficients and the rule are float32 for
        # half-precision variables, rounded once on store — the reference gets the hyperparameters
        # as a float32 variable would (TF would compute in the half type, where bf16 rounds
        # beta_2 = 0.999 to 1 and Adam never moves).
        self.ref = RefRun(spec, spec.reference_config(config), self.variables)
        self.step_size = [0.0] * len(self.variables)  # largest step of the reference, per variable
        for t, grads in enumerate(make_grads(self.SHAPES, HALF_STEPS, dtype), start=1):
            self.opt.apply_gradients(zip(grads, self.variables))
            before = [v.copy() for v in self.ref.vars]
            self.ref.step(t, [to64(g) for g in grads])
            for i, (b, a) in enumerate(zip(before, self.ref.vars)):
                self.step_size[i] = max(self.step_size[i], float(np.abs(a - b).max()))

    def check(self) -> None:
        """Per element, after T steps, with eps the dtype's machine epsilon and gap from
        ``coefficient_gap``:

            variable: |moved - ref moved| <= T * (ulp(|x|) + (HALF_C * eps + gap) * step size)
            slot:     |slot - ref slot|   <= T * (ulp(|s|) + (HALF_C * eps + gap) * max |s|)

        ``ulp(|x|)``: the variable is rounded to the half type once per step (half an ulp);
        ``s`` is the larger of the two slots' magnitudes.
        """
        eps = torch.finfo(self.dtype).eps
        rate = HALF_C * eps + coefficient_gap(self.spec, self.config, torch.float32, HALF_STEPS)
        for i, var in enumerate(self.variables):
            assert var.dtype == self.dtype
            got, ref = to64(var), self.ref.vars[i]
            x = np.maximum(np.maximum(np.abs(got), np.abs(ref)), np.abs(self.start[i]))
            bound = HALF_STEPS * (ulp(x, self.dtype) + rate * self.step_size[i])
            err = np.abs((got - self.start[i]) - (ref - self.start[i]))
            assert (err <= bound).all(), (
                f"variable {i}: moved {got - self.start[i]}, reference {ref - self.start[i]}, "
                f"bound {bound}"
            )
            for name, ref_slot in self.ref.slots[i].items():
                slot = self.opt.get_slot(var, name)
                assert slot.dtype == self.dtype, name
                got = to64(slot)
                mag = np.maximum(np.abs(got), np.abs(ref_slot))
                bound = HALF_STEPS * (ulp(mag, self.dtype) + rate * float(mag.max(initial=0.0)))
                err = np.abs(got - ref_slot)
                assert (err <= bound).all(), (
                    f"slot {name!r} of variable {i}: {got}, reference {ref_slot}, bound {bound}"
                )


@pytest.mark.parametrize("dtype", HALF, ids=["f16", "bf16"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_half_precision_follows_reference(spec, config, dtype):
    """A half-precision step moves like the reference up to half-precision rounding
    (``HalfRun.check``), and the slots live in the variable's dtype."""
    HalfRun(spec, config, dtype).check()


# A learning rate 2% (float16) or 10% (bfloat16) off. The bound is about 2 * (1.5 + HALF_C) eps
# of a step (float16: 0.7%, bfloat16: 5%); rules whose step scales with |x| (Lamb, Adafactor's
# relative step) move by an ulp or so of |x| and are caught only at larger errors.
WRONG_STEP = {torch.float16: 1.02, torch.bfloat16: 1.1}
# One config per optimizer (OptSpec.wrong_step_config) shows the bound has teeth.
WRONG_STEP_CASES = [
    spec.ids()[spec.wrong_step_config] for spec in OPTIMIZERS if spec.wrong_step_config is not None
]


@pytest.mark.parametrize("dtype", HALF, ids=["f16", "bf16"])
@pytest.mark.parametrize("case", WRONG_STEP_CASES)
def test_half_precision_bound_rejects_a_wrong_step(case, dtype):
    name, i = case.rsplit("-", 1)
    spec = BY_NAME[name]
    config = spec.configs[int(i)]
    with pytest.raises(AssertionError):
        HalfRun(spec, config, dtype, lr_factor=WRONG_STEP[dtype]).check()


def _sparse_grads(shape, steps, dtype, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        idx = rng.integers(0, shape[0], size=4)  # repeats likely: duplicates are summed
        vals = rng.uniform(-1, 1, size=(4, *shape[1:]))
        out.append((idx, vals))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_sparse_matches_reference(spec, config, dtype):
    variables = make_vars(SPARSE_SHAPES, dtype)
    opt = make_optimizer(spec, config)
    run = RefRun(spec, config, variables)
    sparse = [_sparse_grads(s, STEPS, dtype, seed=10 + i) for i, s in enumerate(SPARSE_SHAPES)]
    for t in range(1, STEPS + 1):
        grads = []
        for i, var in enumerate(variables):
            idx, vals = sparse[i][t - 1]
            grads.append(
                ko.IndexedSlices(
                    torch.tensor(vals, dtype=dtype), torch.tensor(idx), tuple(var.shape)
                )
            )
        opt.apply_gradients(zip(grads, variables))
        run.step(t, [(sparse[i][t - 1][0], sparse[i][t - 1][1]) for i in range(len(variables))])
        assert_matches(opt, variables, run, spec, dtype, f"sparse step {t}")


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_torch_sparse_coo_gradient_equals_indexed_slices(spec, config):
    """nn.Embedding(sparse=True) gradients are accepted and mean the same as IndexedSlices."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(6, 3, sparse=True)
    twin = torch.nn.Parameter(emb.weight.detach().clone())
    opt_a, opt_b = make_optimizer(spec, config), make_optimizer(spec, config)
    for step in range(3):
        ids = torch.tensor([[0, 2, 2], [5, 0, 1]]) if step % 2 == 0 else torch.tensor([[3, 3, 4]])
        loss = (emb(ids) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, [emb.weight])
        assert grad.layout == torch.sparse_coo
        opt_a.apply_gradients([(grad, emb.weight)])
        coalesced = grad.coalesce()
        slices = ko.IndexedSlices(coalesced.values(), coalesced.indices()[0], tuple(twin.shape))
        opt_b.apply_gradients([(slices, twin)])
        torch.testing.assert_close(emb.weight.detach(), twin.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_none_gradients_skip_variable_but_count_step(spec, config):
    variables = make_vars([(3,), (2,)], torch.float64)
    before = to64(variables[1])
    opt = make_optimizer(spec, config)
    with pytest.warns(UserWarning, match="Gradients do not exist for variables"):
        opt.apply_gradients(
            [(torch.ones(3, dtype=torch.float64), variables[0]), (None, variables[1])]
        )
    assert int(opt.iterations) == 1
    np.testing.assert_array_equal(to64(variables[1]), before)
