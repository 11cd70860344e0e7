"""Muon (docs/reference-behaviour.md Part 2 §3.5): routing by name, per-path slots and weight decay, Newton–Schulz."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.helpers import RefRun, make_grads, to64
from tests.reference import REFERENCES
from tests.specs import BY_NAME

SPEC = BY_NAME["Muon"]
Muon = ko.optimizers.Muon


def _has_velocity(opt, var) -> bool:
    try:
        opt.get_slot(var, "velocity")
    except KeyError:
        return False
    return True


def _named_vars(dtype=torch.float64, seed=0):
    """Variables named like Keras paths; the comment says which path each one takes by default."""
    rng = np.random.default_rng(seed)
    specs = [
        ("tok_embedding/embeddings", (6, 3)),  # AdamW: "embedding" in the name
        ("hidden/kernel", (3, 5)),  # Muon
        ("hidden/bias", (5,)),  # AdamW: rank 1
        ("conv/kernel", (2, 2, 3)),  # AdamW: rank 3
        ("out_dense/kernel", (5, 4)),  # Muon unless exclude_layers matches
        ("scale", ()),  # AdamW: rank 0
    ]
    return [
        ko.Variable(torch.tensor(rng.uniform(-1, 1, size=s), dtype=dtype), name=n) for n, s in specs
    ]


# -- constructor and config ---------------------------------------------------------------------
def test_signature_order_and_defaults():
    params = list(inspect.signature(Muon.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in params[:-1]] == [
        ("learning_rate", 0.001),
        ("adam_beta_1", 0.9),
        ("adam_beta_2", 0.999),
        ("adam_weight_decay", 0.004),
        ("epsilon", 1e-7),
        ("weight_decay", 0.004),
        ("exclude_layers", None),
        ("exclude_embeddings", True),
        ("muon_a", 3.4445),
        ("muon_b", -4.7750),
        ("muon_c", 2.0315),
        ("adam_lr_ratio", 1),
        ("momentum", 0.95),
        ("ns_steps", 5),
        ("nesterov", True),
        ("rms_rate", 0.2),
        ("name", "Muon"),
    ]
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD


def test_positional_arguments_follow_the_table():
    opt = Muon(0.1, 0.8, 0.99, 0.01, 1e-3, 0.02, ["x"], False, 1.0, -2.0, 3.0, 0.5, 0.9, 2, False)
    cfg = opt.get_config()
    assert cfg["learning_rate"] == pytest.approx(0.1)
    assert (cfg["adam_beta_1"], cfg["adam_beta_2"], cfg["adam_weight_decay"]) == (0.8, 0.99, 0.01)
    assert (cfg["epsilon"], cfg["weight_decay"], cfg["exclude_layers"]) == (1e-3, 0.02, ["x"])
    assert (cfg["exclude_embeddings"], cfg["muon_a"], cfg["muon_b"], cfg["muon_c"]) == (
        False,
        1.0,
        -2.0,
        3.0,
    )
    assert (cfg["adam_lr_ratio"], cfg["momentum"], cfg["ns_steps"], cfg["nesterov"]) == (
        0.5,
        0.9,
        2,
        False,
    )
    assert cfg["rms_rate"] == 0.2 and cfg["name"] == "Muon"


def test_only_learning_rate_is_a_float32_hyperparameter():
    opt = Muon(learning_rate=0.1, momentum=0.1, adam_beta_1=0.1)
    assert opt.learning_rate.dtype == torch.float32
    assert isinstance(opt.momentum, float) and opt.momentum == 0.1
    assert isinstance(opt.adam_beta_1, float) and opt.adam_beta_1 == 0.1


def test_config_exclude_layers_is_a_json_list_and_round_trips():
    assert Muon().get_config()["exclude_layers"] == []
    opt = Muon(exclude_layers=("out_", "^head"), weight_decay=None, adam_weight_decay=None)
    cfg = opt.get_config()
    assert cfg["exclude_layers"] == ["out_", "^head"]
    assert cfg["weight_decay"] is None and cfg["adam_weight_decay"] is None
    cfg["exclude_layers"].append("mutated")  # a copy: the optimizer is not changed
    assert opt.exclude_layers == ["out_", "^head"]
    again = Muon.from_config(json.loads(json.dumps(opt.get_config())))
    assert again.get_config() == opt.get_config()
    assert ko.optimizers.get("muon").get_config() == Muon().get_config()


def test_single_string_exclude_layers_is_one_pattern():
    assert Muon(exclude_layers="out_").exclude_layers == ["out_"]


def test_invalid_values_are_rejected():
    with pytest.raises(ValueError, match="Argument `adam_weight_decay` must be a float"):
        Muon(adam_weight_decay="lots")
    with pytest.raises(ValueError, match="Argument `weight_decay` must be a float"):
        Muon(weight_decay="lots")
    with pytest.raises(TypeError, match="Unexpected keyword argument passed to optimizer: beta_1"):
        Muon(beta_1=0.9)
    with pytest.raises(ValueError, match="Expected learning_rate >= 0"):
        Muon(learning_rate=-1.0)


# -- Newton–Schulz --------------------------------------------------------------------------------
def test_newton_schulz_rejects_rank_below_two():
    opt = Muon()
    for shape in [(), (4,)]:
        with pytest.raises(
            ValueError, match="Expected gradient or momentum to have at least 2 dimensions"
        ):
            opt.zeropower_via_newtonschulz5(torch.ones(shape), 5)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 3, 4), (2, 4, 3)])
@pytest.mark.parametrize("steps", [1, 5])
def test_newton_schulz_matches_reference(shape, steps):
    rng = np.random.default_rng(4)
    g = rng.normal(size=shape)
    opt = Muon(muon_a=3.0, muon_b=-3.5, muon_c=1.5)
    ref = REFERENCES["Muon"](muon_a=3.0, muon_b=-3.5, muon_c=1.5, ns_steps=steps)
    got = opt.zeropower_via_newtonschulz5(torch.tensor(g), steps)
    assert got.shape == shape
    np.testing.assert_allclose(got.numpy(), ref.newton_schulz(g), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_newton_schulz_runs_in_the_variable_dtype(dtype):
    g = torch.tensor(np.random.default_rng(5).normal(size=(4, 6)), dtype=dtype)
    out = Muon().zeropower_via_newtonschulz5(g, 5)
    assert out.dtype == dtype
    exact = Muon().zeropower_via_newtonschulz5(g.double(), 5)
    np.testing.assert_allclose(
        to64(out), exact.numpy(), atol=0.1 if dtype != torch.float32 else 1e-5
    )


def test_newton_schulz_of_zero_is_zero():
    assert torch.equal(Muon().zeropower_via_newtonschulz5(torch.zeros(3, 2), 5), torch.zeros(3, 2))


# -- routing and slots ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "muon_names"),
    [
        ({}, {"hidden/kernel", "out_dense/kernel"}),
        ({"exclude_layers": ["out_"]}, {"hidden/kernel"}),
        ({"exclude_layers": ["^hidden/", "dense"]}, set()),
        (
            {"exclude_embeddings": False},
            {"tok_embedding/embeddings", "hidden/kernel", "out_dense/kernel"},
        ),
        ({"exclude_layers": ["Hidden"]}, {"hidden/kernel", "out_dense/kernel"}),  # case-sensitive
    ],
)
def test_routing_by_rank_embedding_and_exclude_layers(kwargs, muon_names):
    variables = _named_vars()
    opt = Muon(**kwargs)
    opt.build(variables)
    for var in variables:
        assert opt.get_slot(var, "momentum") is opt.get_slot(var, "m")
        if var.name in muon_names:
            assert not _has_velocity(opt, var)
            with pytest.raises(KeyError, match="has no slot 'v'"):
                opt.get_slot(var, "v")
        else:
            assert opt.get_slot(var, "velocity") is opt.get_slot(var, "v")
    assert opt.get_slot_names() == ["momentum", "velocity"]


def test_embedding_match_ignores_case():
    var = ko.Variable(torch.ones(3, 2), name="Word_EMBEDDING")
    opt = Muon()
    opt.build([var])
    assert _has_velocity(opt, var)


def test_slots_are_created_per_variable_in_turn():
    variables = _named_vars()
    opt = Muon()
    opt.build(variables)
    expected = []
    for var in variables:
        expected.append(opt.get_slot(var, "momentum"))
        if _has_velocity(opt, var):
            expected.append(opt.get_slot(var, "velocity"))
    weights = opt.variables()
    assert weights[0] is opt.iterations
    assert len(weights) == 1 + len(expected)
    assert all(a is b for a, b in zip(weights[1:], expected))


def test_routing_is_fixed_when_slots_are_created():
    variables = _named_vars()
    opt = Muon()
    opt.apply_gradients(zip([torch.ones_like(v) for v in variables], variables))
    opt.exclude_layers = ["hidden"]  # later changes do not move existing variables
    opt.apply_gradients(zip([torch.ones_like(v) for v in variables], variables))
    assert not _has_velocity(opt, variables[1])
    late = ko.Variable(torch.ones(3, 3), name="hidden/late_kernel")
    opt.apply_gradients([(torch.ones(3, 3), late)])
    assert _has_velocity(opt, late)


def test_unnamed_parameters_route_by_rank_only():
    params = [torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.ones(4))]
    opt = Muon(exclude_layers=["^out_"])
    opt.apply_gradients(zip([torch.ones(3, 4), torch.ones(4)], params))
    assert sorted(r.name for r in opt._store.by_id.values()) == ["variable_0", "variable_1"]
    assert not _has_velocity(opt, params[0]) and _has_velocity(opt, params[1])


# -- numbers against the reference, with names ---------------------------------------------------
NAMED_CONFIGS = [
    {"learning_rate": 0.01},
    {"learning_rate": 0.02, "exclude_layers": ["out_"], "adam_lr_ratio": 0.1, "nesterov": False},
    {
        "learning_rate": 0.05,
        "exclude_embeddings": False,
        "weight_decay": 0.5,
        "adam_weight_decay": None,
        "rms_rate": None,
        "ns_steps": 2,
    },
    {"learning_rate": 0.05, "weight_decay": None, "adam_weight_decay": 0.3, "momentum": 0.5},
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("config", NAMED_CONFIGS, ids=[str(i) for i in range(len(NAMED_CONFIGS))])
def test_named_variables_match_reference_over_steps(config, dtype):
    variables = _named_vars(dtype)
    names = [v.name for v in variables]
    opt = Muon(**config)
    run = RefRun(SPEC, config, variables, names=names)
    shapes = [tuple(v.shape) for v in variables]
    # float32: 1 - float32(0.999)^t is off by ~1e-5 relative (cancellation, as in Keras), so an
    # AdamW step of lr=0.05 carries ~3e-7 absolute error per step.
    rtol, atol = (1e-10, 1e-12) if dtype == torch.float64 else (2e-5, 5e-6)
    for t, grads in enumerate(make_grads(shapes, 5, dtype, seed=9), start=1):
        opt.apply_gradients(zip(grads, variables))
        run.step(t, [to64(g) for g in grads])
        for i, var in enumerate(variables):
            np.testing.assert_allclose(
                to64(var), run.vars[i], rtol=rtol, atol=atol, err_msg=names[i]
            )
            expected = {"momentum", "velocity"} if _has_velocity(opt, var) else {"momentum"}
            assert set(run.slots[i]) == expected
            for slot, ref in run.slots[i].items():
                np.testing.assert_allclose(
                    to64(opt.get_slot(var, slot)), ref, rtol=rtol, atol=atol, err_msg=names[i]
                )


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(7, 4)
        self.hidden = torch.nn.Linear(4, 6)
        self.out = torch.nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embedding(ids).mean(1))))


def test_module_parameter_names_route_and_match_reference():
    model = _Net().double()
    config = {"learning_rate": 0.05, "exclude_layers": [r"^out\."], "adam_lr_ratio": 0.5}
    opt = Muon(**config)
    ids = torch.tensor([[0, 2, 5], [1, 1, 6]])
    opt.build(model)  # registers the named_parameters() keys
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    assert {r.name for r in opt._store.by_id.values()} == set(names)
    routed = {n: ("adamw" if _has_velocity(opt, p) else "muon") for n, p in zip(names, params)}
    assert routed == {
        "embedding.weight": "adamw",
        "hidden.weight": "muon",
        "hidden.bias": "adamw",
        "out.weight": "adamw",
        "out.bias": "adamw",
    }
    run = RefRun(SPEC, config, params, names=names)
    for t in range(1, 5):
        loss = model(ids).pow(2).sum()
        grads = torch.autograd.grad(loss, params)
        opt.apply_gradients(zip(grads, params))
        run.step(t, [to64(g) for g in grads])
    for i, p in enumerate(params):
        np.testing.assert_allclose(to64(p), run.vars[i], rtol=1e-10, atol=1e-12, err_msg=names[i])


def test_minimize_with_module_uses_parameter_names():
    model = _Net()
    opt = Muon(learning_rate=0.01)
    ids = torch.tensor([[0, 2, 5]])
    before = model(ids).pow(2).sum().item()
    for _ in range(3):
        opt.minimize(lambda: model(ids).pow(2).sum(), model)
    assert _has_velocity(opt, model.embedding.weight)
    assert not _has_velocity(opt, model.hidden.weight)
    assert not _has_velocity(opt, model.out.weight)
    assert model(ids).pow(2).sum().item() < before


# -- weight decay -----------------------------------------------------------------------------
def _decay_only_step(opt, variables):
    """A zero gradient moves neither path (NS(0) = 0, Adam's m = 0): only weight decay acts."""
    before = [to64(v) for v in variables]
    opt.apply_gradients(zip([torch.zeros_like(v) for v in variables], variables))
    return before, [to64(v) for v in variables]


def test_weight_decay_per_path_with_base_learning_rate():
    variables = _named_vars()
    lr = float(np.float32(0.1))
    opt = Muon(learning_rate=0.1, weight_decay=0.2, adam_weight_decay=0.05, adam_lr_ratio=0.01)
    before, after = _decay_only_step(opt, variables)
    for var, b, a in zip(variables, before, after):
        wd = float(np.float32(0.05 if _has_velocity(opt, var) else 0.2))  # TF casts via float32
        np.testing.assert_array_equal(a, b - b * wd * lr, err_msg=var.name)


@pytest.mark.parametrize(
    ("kwargs", "decayed"),
    [
        ({"weight_decay": None}, "adamw"),
        ({"adam_weight_decay": None}, "muon"),
        ({"weight_decay": None, "adam_weight_decay": None}, "none"),
    ],
)
def test_none_skips_weight_decay_of_that_path(kwargs, decayed):
    variables = _named_vars()
    opt = Muon(learning_rate=0.1, **kwargs)
    before, after = _decay_only_step(opt, variables)
    for var, b, a in zip(variables, before, after):
        path = "adamw" if _has_velocity(opt, var) else "muon"
        if path == decayed:
            assert not np.array_equal(a, b) or not b.any(), var.name
        else:
            np.testing.assert_array_equal(a, b, err_msg=var.name)


def test_exclude_from_weight_decay_is_honoured_on_both_paths():
    variables = _named_vars()
    opt = Muon(learning_rate=0.1, weight_decay=0.2, adam_weight_decay=0.2)
    opt.exclude_from_weight_decay(var_list=[variables[0]], var_names=["^hidden/"])
    before, after = _decay_only_step(opt, variables)
    excluded = {"tok_embedding/embeddings", "hidden/kernel", "hidden/bias"}
    for var, b, a in zip(variables, before, after):
        if var.name in excluded:
            np.testing.assert_array_equal(a, b, err_msg=var.name)
        else:
            assert not np.array_equal(a, b), var.name


# -- engines, sparse gradients, dtypes -----------------------------------------------------------
@pytest.mark.parametrize("config", SPEC.configs, ids=[str(i) for i in range(len(SPEC.configs))])
def test_engines_bit_identical_with_mixed_paths(config):
    results = []
    for implementation in ("per_tensor", "foreach"):
        variables = [v for dt in (torch.float32, torch.float64) for v in _named_vars(dt, seed=2)]
        shapes = [tuple(v.shape) for v in variables]
        opt = Muon(**config, implementation=implementation)
        for grads in make_grads(shapes, 3, torch.float64, seed=3):
            opt.apply_gradients(zip([g.to(v.dtype) for g, v in zip(grads, variables)], variables))
        results.append((opt, variables))
    (opt_a, vars_a), (opt_b, vars_b) = results
    for a, b in zip(vars_a, vars_b):
        assert torch.equal(a, b)
        assert torch.equal(opt_a.get_slot(a, "momentum"), opt_b.get_slot(b, "momentum"))
        assert _has_velocity(opt_a, a) == _has_velocity(opt_b, b)
        if _has_velocity(opt_a, a):
            assert torch.equal(opt_a.get_slot(a, "velocity"), opt_b.get_slot(b, "velocity"))


def test_sparse_gradient_is_densified():
    dense_var = ko.Variable(torch.ones(6, 3, dtype=torch.float64), name="hidden/kernel")
    sparse_var = ko.Variable(torch.ones(6, 3, dtype=torch.float64), name="hidden/kernel")
    opt_d, opt_s = Muon(0.1), Muon(0.1)
    for step in range(3):
        values = torch.full((3, 3), 0.5 + step, dtype=torch.float64)
        idx = torch.tensor([1, 4, 1])
        g = ko.IndexedSlices(values, idx, (6, 3))
        opt_s.apply_gradients([(g, sparse_var)])
        opt_d.apply_gradients([(g.to_dense(), dense_var)])
    assert torch.equal(dense_var.detach(), sparse_var.detach())
    assert not _has_velocity(opt_s, sparse_var)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_state_stays_in_dtype(dtype):
    variables = _named_vars(dtype)
    opt = Muon(learning_rate=0.01)
    for grads in make_grads([tuple(v.shape) for v in variables], 2, dtype):
        opt.apply_gradients(zip(grads, variables))
    for var in variables:
        assert var.dtype == dtype and torch.isfinite(var).all()
        assert opt.get_slot(var, "momentum").dtype == dtype


def test_gradient_accumulation_uses_update_count():
    var_a = ko.Variable(torch.ones(2, 3, dtype=torch.float64), name="w")
    var_b = ko.Variable(torch.ones(3, dtype=torch.float64), name="b")
    var_c = ko.Variable(torch.ones(2, 3, dtype=torch.float64), name="w")
    var_d = ko.Variable(torch.ones(3, dtype=torch.float64), name="b")
    acc = Muon(0.1, gradient_accumulation_steps=2)
    plain = Muon(0.1)
    g1 = [torch.full((2, 3), 0.5, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)]
    g2 = [torch.arange(6.0, dtype=torch.float64).reshape(2, 3), torch.ones(3, dtype=torch.float64)]
    for _ in range(2):
        acc.apply_gradients(zip(g1, [var_a, var_b]))
        acc.apply_gradients(zip(g2, [var_a, var_b]))
        plain.apply_gradients(zip([(x + y) / 2 for x, y in zip(g1, g2)], [var_c, var_d]))
    torch.testing.assert_close(var_a.detach(), var_c.detach(), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(var_b.detach(), var_d.detach(), rtol=1e-14, atol=1e-15)
