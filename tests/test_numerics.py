"""Every optimizer of the table against its float64 NumPy reference, step by step."""

from __future__ import annotations

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
)
from tests.specs import case_ids, cases

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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_half_precision_follows_reference(spec, config, dtype):
    shapes = [(3,), (2, 4)]
    variables = make_vars(shapes, dtype)
    opt = make_optimizer(spec, config)
    # Coefficients live in the variable's dtype (TF does no upcast): bf16 rounds beta_2=0.999 to 1.
    rounded = {
        k: torch.tensor(v, dtype=dtype).item() if isinstance(v, float) else v
        for k, v in spec.reference_config(config).items()
    }
    run = RefRun(spec, rounded, variables)
    run.lr = torch.tensor(run.lr, dtype=dtype).item()
    for t, grads in enumerate(make_grads(shapes, 2, dtype), start=1):
        opt.apply_gradients(zip(grads, variables))
        run.step(t, [to64(g) for g in grads])
    for i, var in enumerate(variables):
        assert var.dtype == dtype
        assert opt.get_slot_names() == [] or all(
            opt.get_slot(var, s).dtype == dtype for s in run.slots[i]
        )
        # A half-precision step moves like the reference up to half-precision rounding.
        start = to64(make_vars(shapes, dtype)[i])
        moved, expected = to64(var) - start, run.vars[i] - start
        scale = np.abs(expected).max() + 1e-3
        np.testing.assert_allclose(moved, expected, atol=0.08 * scale + 1e-2)


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
