"""Every engine runs the one rule: per-tensor and foreach are bit-identical, dense and sparse."""

from __future__ import annotations

import pytest
import torch

import kerasopt as ko
from tests.helpers import make_grads, make_optimizer, make_vars
from tests.specs import case_ids, cases

ENGINES = ["per_tensor", "foreach"]
MIXED = [(), (7,), (3, 4), (2, 3, 2)]


def _run(spec, config, implementation, dtypes, steps=3):
    variables = [v for dt in dtypes for v in make_vars(MIXED, dt, seed=5)]
    grads = [
        [g for dt in dtypes for g in make_grads(MIXED, steps, dt, seed=6)[s]] for s in range(steps)
    ]
    opt = make_optimizer(spec, config, implementation=implementation)
    for step_grads in grads:
        opt.apply_gradients(zip(step_grads, variables))
    return opt, variables


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_foreach_bit_identical_to_per_tensor_mixed_dtypes(spec, config):
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    ref_opt, ref_vars = _run(spec, config, "per_tensor", dtypes)
    opt, variables = _run(spec, config, "foreach", dtypes)
    for a, b in zip(ref_vars, variables):
        assert torch.equal(a, b)
        # Slot sets may differ per variable (Adafactor's r/c exist only for rank >= 2).
        names = ref_opt._records[id(a)].slots
        assert names.keys() == opt._records[id(b)].slots.keys()
        for name in names:
            assert torch.equal(ref_opt.get_slot(a, name), opt.get_slot(b, name))


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_engines_agree_on_sparse(spec, config):
    results = []
    for implementation in ENGINES:
        var = make_vars([(6, 2)], torch.float32, seed=7)[0]
        dense_var = make_vars([(3,)], torch.float32, seed=8)[0]
        opt = make_optimizer(spec, config, implementation=implementation)
        for step in range(3):
            g = ko.IndexedSlices(torch.full((3, 2), 0.5 + step), torch.tensor([1, 4, 1]), (6, 2))
            opt.apply_gradients([(g, var), (torch.ones(3) * (step + 1), dense_var)])
        results.append((var.detach().clone(), dense_var.detach().clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        ko.optimizers.Adam(implementation="magic")
