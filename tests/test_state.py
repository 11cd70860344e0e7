"""Optimizer state: name-keyed state dicts, bit-exact resume, validation, atomic files, fuzzing."""

from __future__ import annotations

import io
import math
import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerasopt as ko
from tests.reference import REFERENCES
from tests.specs import case_ids, cases

FEATURES = {
    "plain": {},
    "schedule": {"learning_rate": "schedule"},
    "ema": {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 3},
    "accumulation": {"gradient_accumulation_steps": 2},
    "weight_decay": {"weight_decay": 0.01},
    "sparse": {},
    "loss_scale": {},
}


class Net(torch.nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(7, 3, sparse=sparse)
        self.hidden = torch.nn.Linear(3, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.emb(ids).mean(1))))


def _batches(n):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(0, 7, (5, 2), generator=g), torch.randn(5, 1, generator=g)) for _ in range(n)
    ]


def _make(spec, config, feature):
    cfg = dict(config)
    for key, value in FEATURES[feature].items():
        cfg[key] = value
    if cfg.get("learning_rate") == "schedule":
        schedule = ko.optimizers.schedules.ExponentialDecay(0.05, 2, 0.7)
        # Nadam rejects schedule objects (as TF does) but takes a callable of the step.
        cfg["learning_rate"] = schedule if spec.schedules else (lambda step: schedule(step))
    opt = getattr(ko.optimizers, spec.name)(**cfg)
    if feature == "loss_scale":
        # Growth every 2 good steps: the scale moves during the run, and must resume exactly.
        return ko.optimizers.LossScaleOptimizer(opt, initial_scale=2.0**10, dynamic_growth_steps=2)
    return opt


def _train(opt, net, batches):
    for ids, y in batches:
        opt.minimize(lambda ids=ids, y=y: ((net(ids) - y) ** 2).mean(), net)


@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_resume_is_bit_exact(spec, config, feature):
    batches = _batches(6)
    sparse = feature == "sparse"
    net_a = Net(sparse)
    opt_a = _make(spec, config, feature)
    _train(opt_a, net_a, batches)

    net_b = Net(sparse)
    opt_b = _make(spec, config, feature)
    _train(opt_b, net_b, batches[:3])
    buf = io.BytesIO()
    torch.save({"opt": opt_b.state_dict(), "model": net_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    net_c = Net(sparse)
    # A fresh optimizer from the config (a plain callable learning rate is code, not config).
    fresh_from_config = spec.schedules or feature != "schedule"
    opt_c = (
        type(opt_b).from_config(opt_b.get_config())
        if fresh_from_config
        else _make(spec, config, feature)
    )
    net_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])  # before the optimizer has seen any variable
    _train(opt_c, net_c, batches[3:])

    _assert_same_training(opt_a, net_a, opt_c, net_c)


def _assert_same_training(opt_a, net_a, opt_c, net_c):
    """The same step count, parameters and optimizer state, bit for bit."""
    assert int(opt_c.iterations) == int(opt_a.iterations)
    for (name, a), c in zip(net_a.named_parameters(), net_c.parameters()):
        assert torch.equal(a, c), name
    sa, sc = opt_a.state_dict(), opt_c.state_dict()
    assert sa.keys() == sc.keys()
    for key in sa:
        assert torch.equal(sa[key], sc[key]), key


def _trained_adam():
    net = Net(False)
    opt = ko.optimizers.Adam(0.01)
    _train(opt, net, _batches(2))
    return net, opt


def _unchanged(opt, before):
    after = opt.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


BAD_STATES = {
    "shape": (
        lambda sd: sd.update({"slot/hidden.weight/m": torch.zeros(2, 2)}),
        r"'slot/hidden.weight/m' has shape \(2, 2\), expected \(4, 3\)",
    ),
    "dtype": (
        lambda sd: sd.update({"slot/out.bias/v": sd["slot/out.bias/v"].double()}),
        r"'slot/out.bias/v' has dtype torch.float64, expected torch.float32",
    ),
    "unknown_slot": (
        lambda sd: sd.update({"slot/out.bias/vhat": torch.zeros(1)}),
        r"variable 'out.bias' has no slot 'vhat'",
    ),
    "unknown_key": (
        lambda sd: sd.update({"momentum": torch.zeros(1)}),
        r"Unknown state key 'momentum'",
    ),
    "no_iterations": (lambda sd: sd.pop("iterations"), r"no 'iterations' key"),
    "iterations_dtype": (
        lambda sd: sd.update({"iterations": torch.tensor(3.0)}),
        r"'iterations' has dtype torch.float32, expected torch.int64",
    ),
    "not_tensor": (
        lambda sd: sd.update({"slot/out.bias/m": [0.0]}),
        r"'slot/out.bias/m' must hold a tensor; got list",
    ),
    "unknown_hyper": (
        lambda sd: sd.update({"hyper/rho": torch.tensor(0.5, dtype=torch.float64)}),
        r"has no hyperparameter 'rho'",
    ),
    "nan_hyper": (
        lambda sd: sd.update({"hyper/beta_1": torch.tensor(float("nan"), dtype=torch.float64)}),
        r"'hyper/beta_1' is not finite",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_STATES))
def test_bad_state_names_key_and_changes_nothing(bad):
    _net, opt = _trained_adam()
    before = opt.state_dict()
    sd = opt.state_dict()
    sd["slot/out.bias/m"] = sd["slot/out.bias/m"] + 1  # a valid change that must NOT land
    mutate, match = BAD_STATES[bad]
    mutate(sd)
    with pytest.raises(ko.StateError, match=match):  # a ValueError, exported
        opt.load_state_dict(sd)
    _unchanged(opt, before)


def test_variables_sharing_a_name_get_distinct_deterministic_keys():
    # TF's unique variable names: the second `w` (and a second unnamed Variable) gets `_1`
    def run():
        a, b = ko.Variable([1.0], name="w"), ko.Variable([2.0], name="w")
        c, d = ko.Variable([3.0]), ko.Variable([4.0])
        opt = ko.optimizers.SGD(0.1, momentum=0.9)
        opt.apply_gradients([(torch.ones(1) * i, v) for i, v in enumerate((a, b, c, d))])
        return opt, (a, b, c, d)

    opt, (a, b, c, d) = run()
    sd = opt.state_dict()
    keys = [k for k in sd if k.startswith("slot/")]
    assert keys == [
        "slot/w/momentum",
        "slot/w_1/momentum",
        "slot/Variable/momentum",
        "slot/Variable_1/momentum",
    ]
    again, vs = run()
    again.load_state_dict(sd)
    for v, w in zip(vs, (a, b, c, d)):
        assert torch.equal(again.get_slot(v, "momentum"), opt.get_slot(w, "momentum"))


def test_pending_state_mismatch_raises_at_first_step_and_changes_nothing():
    _net, opt = _trained_adam()
    sd = opt.state_dict()
    sd["slot/out.weight/m"] = torch.zeros(1, 9)
    fresh_net, fresh = Net(False), ko.optimizers.Adam(0.01)
    fresh.load_state_dict(sd)  # out.weight not seen yet: checked when it appears
    weights_before = [p.detach().clone() for p in fresh_net.parameters()]
    with pytest.raises(
        ValueError, match=r"'slot/out.weight/m' has shape \(1, 9\), expected \(1, 4\)"
    ):
        fresh.minimize(lambda: fresh_net(torch.zeros(2, 2, dtype=torch.long)).sum(), fresh_net)
    assert not fresh.built and fresh.variables() == [fresh.iterations]
    assert all(torch.equal(a, b) for a, b in zip(weights_before, fresh_net.parameters()))
    assert int(fresh.iterations) == 2  # the loaded counter, untouched by the failed step


def test_pending_state_visible_in_state_dict():
    _, opt = _trained_adam()
    fresh = ko.optimizers.Adam(0.01)
    fresh.load_state_dict(opt.state_dict())
    again = fresh.state_dict()
    assert again.keys() == opt.state_dict().keys()


def test_nadam_style_weights_load_before_build():
    net = Net(False)
    opt = ko.optimizers.Nadam()
    _train(opt, net, _batches(2))
    fresh_net, fresh = Net(False), ko.optimizers.Nadam()
    fresh_net.load_state_dict(net.state_dict())
    fresh.load_state_dict(opt.state_dict())
    _train(fresh, fresh_net, _batches(3)[2:])
    _train(opt, net, _batches(3)[2:])
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), fresh_net.parameters()))


# -- files -------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    net, opt = _trained_adam()
    path = tmp_path / "ckpt.pt"
    ko.save(path, opt, net)
    net2, opt2 = Net(False), ko.optimizers.Adam(0.01)
    ko.load(path, opt2, net2)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))
    assert int(opt2.iterations) == 2


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    net, opt = _trained_adam()
    path = tmp_path / "ckpt.pt"
    ko.save(path, opt, net)
    good = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash_midway)
    _train(opt, net, _batches(1))
    with pytest.raises(KeyboardInterrupt):
        ko.save(path, opt, net)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["ckpt.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/kerasopt_pwned",))


def test_loading_never_runs_code_from_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "kerasopt-checkpoint-1", "optimizer": _Evil()}, f)
    with pytest.raises(ValueError, match="not a kerasopt checkpoint that loads safely"):
        ko.load(path, ko.optimizers.Adam())
    assert not os.path.exists("/tmp/kerasopt_pwned")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a kerasopt checkpoint"):
        ko.load(tmp_path / "other.pt", ko.optimizers.Adam())


def test_distributed_checkpoint_round_trip(tmp_path):
    import torch.distributed.checkpoint as dcp

    _net, opt = _trained_adam()
    dcp.save({"opt": opt.state_dict()}, checkpoint_id=str(tmp_path / "dcp"))
    net2, opt2 = Net(False), ko.optimizers.Adam(0.01)
    opt2.build(net2)
    template = {"opt": opt2.state_dict()}
    dcp.load(template, checkpoint_id=str(tmp_path / "dcp"))
    opt2.load_state_dict(template["opt"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- TF state import ---------------------------------------------------------------------------
def test_tf_get_weights_list_imports_with_set_weights():
    """A TF Adam's get_weights() is [iterations, m_1, m_2, v_1, v_2]: set_weights takes it."""
    rng = np.random.default_rng(0)
    vals = [rng.uniform(-1, 1, (3,)), rng.uniform(-1, 1, (2, 2))]
    ref = REFERENCES["Adam"](
        learning_rate=float(np.float32(0.01)),
        beta_1=float(np.float32(0.9)),
        beta_2=float(np.float32(0.999)),
    )
    slots = [ref.init_slots(v) for v in vals]
    ref_vars = [v.copy() for v in vals]
    grads = [[rng.uniform(-1, 1, v.shape) for v in vals] for _ in range(4)]
    for t in (1, 2):  # "TF" trains two steps
        ref_vars = [
            ref.dense(v, g, s, t, float(np.float32(0.01)))
            for v, g, s in zip(ref_vars, grads[t - 1], slots)
        ]
    tf_weights = [
        np.array(2, dtype=np.int64),
        slots[0]["m"],
        slots[1]["m"],
        slots[0]["v"],
        slots[1]["v"],
    ]
    variables = [ko.Variable(v, name=f"v{i}") for i, v in enumerate(ref_vars)]
    opt = ko.optimizers.Adam(0.01)
    opt.build(variables)
    opt.set_weights(tf_weights)
    for t in (3, 4):
        opt.apply_gradients(zip([torch.tensor(g) for g in grads[t - 1]], variables))
        ref_vars = [
            ref.dense(v, g, s, t, float(np.float32(0.01)))
            for v, g, s in zip(ref_vars, grads[t - 1], slots)
        ]
    for v, r in zip(variables, ref_vars):
        np.testing.assert_allclose(v.numpy(), r, rtol=1e-12)


# -- fuzzing -------------------------------------------------------------------------------------
KEYS = st.sampled_from(
    [
        "iterations",
        "hyper/learning_rate",
        "hyper/beta_1",
        "hyper/nope",
        "slot/out.bias/m",
        "slot/out.bias/zz",
        "slot/ghost/m",
        "weight/x",
        "slot/",
        "slot//m",
        "",
        "slot/hidden.weight/v",
    ]
)
VALUES = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.builds(torch.tensor, st.integers(-5, 5)),
    st.builds(
        lambda x: torch.tensor(x, dtype=torch.float64),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.builds(torch.zeros, st.integers(0, 4)),
    st.builds(lambda: torch.zeros(4, 3)),
    st.builds(lambda: torch.zeros(1, dtype=torch.float16)),
    st.builds(lambda: torch.zeros(2).to_sparse()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=5), st.booleans())
def test_fuzz_load_state_dict(data, with_iterations):
    _net, opt = _trained_adam()
    before = opt.state_dict()
    if with_iterations:
        data["iterations"] = torch.tensor(5)
    try:
        opt.load_state_dict(data)
    except ValueError:
        _unchanged(opt, before)
        return
    assert isinstance(opt.state_dict(), dict)


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _two_steps(opt) -> tuple[str, object]:
    """What two steps of one fixed gradient do: ("ok", values) or ("error", exception type)."""
    var = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    try:
        for _ in range(2):
            opt.apply_gradients([(torch.tensor([0.5, 0.25, -1.0]), var)])
    except Exception as e:  # compared between the two optimizers, not judged here
        return "error", type(e)
    return "ok", var.detach().clone()


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["SGD", "Adam"]),
    st.dictionaries(
        st.sampled_from(
            [
                "learning_rate",
                "lr",
                "beta_1",
                "momentum",
                "nesterov",
                "name",
                "epsilon",
                "clipnorm",
                "decay",
                "bogus",
                "amsgrad",
            ]
        ),
        st.one_of(
            st.none(),
            st.floats(allow_nan=True),
            st.floats(0.0, 1.0),  # valid for every key but `name`: more configs get built
            st.integers(-2, 2),
            st.text(max_size=3),
            st.booleans(),
            st.dictionaries(st.sampled_from(["class_name", "config"]), st.text(max_size=5)),
        ),
        max_size=4,
    ),
)
def test_fuzz_from_config(name, config):
    """deserialize() raises its documented ValueError (never TypeError or anything else), or
    returns the named optimizer whose get_config() reports the values given and round-trips:
    from_config(get_config()) has the same config and takes the same steps (or fails the same
    way)."""
    try:
        opt = ko.optimizers.deserialize({"class_name": name, "config": config})
    except ValueError:
        return
    assert type(opt).__name__ == name
    assert "bogus" not in config, "an unknown keyword was accepted"
    cfg = opt.get_config()
    for key, value in config.items():
        # None means the default; `lr` is learning_rate's legacy alias (and wins over it);
        # a false epsilon (0, "") means the default too (TF: `epsilon or backend epsilon`).
        if value is None or key == "lr" or (key == "learning_rate" and "lr" in config):
            continue
        if key == "epsilon" and (not value or float(value) == 0):
            continue  # "0" too: converted first, then `or 1e-7` (so configs round-trip)
        if key in ("nesterov", "amsgrad"):
            assert cfg[key] is bool(value), key
        elif isinstance(value, (int, float)):
            assert _same_value(float(cfg[key]), float(value)), (key, cfg[key], value)
        elif isinstance(cfg[key], float):  # a numeric string, converted ("0" -> 0.0)
            assert _same_value(cfg[key], float(value)), (key, cfg[key], value)
        else:
            assert cfg[key] == value, (key, cfg[key], value)
    rebuilt = type(opt).from_config(cfg)
    again = rebuilt.get_config()
    assert set(again) == set(cfg)
    assert all(_same_value(again[k], cfg[k]) for k in cfg), (again, cfg)
    (kind_a, a), (kind_b, b) = _two_steps(opt), _two_steps(rebuilt)
    assert kind_a == kind_b, (a, b)
    if kind_a == "ok":
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    else:
        assert a is b


def test_loss_scale_state_round_trips_and_is_validated():
    net, opt = (
        Net(False),
        ko.optimizers.LossScaleOptimizer(ko.optimizers.Adam(0.01), initial_scale=8.0),
    )
    _train(opt, net, _batches(2))
    sd = opt.state_dict()
    assert (
        float(sd["loss_scale/current_loss_scale"]) == 8.0 and int(sd["loss_scale/good_steps"]) == 2
    )
    assert "inner/iterations" in sd
    fresh = ko.optimizers.LossScaleOptimizer(ko.optimizers.Adam(0.01), initial_scale=8.0)
    bad = dict(sd, **{"loss_scale/current_loss_scale": torch.tensor(float("inf"))})
    with pytest.raises(ValueError, match="'loss_scale/current_loss_scale' is not finite"):
        fresh.load_state_dict(bad)
    bad = {k: v for k, v in sd.items() if k != "loss_scale/good_steps"}
    with pytest.raises(ValueError, match="no 'loss_scale/good_steps' key"):
        fresh.load_state_dict(bad)
    assert int(fresh.iterations) == 0 and float(fresh.loss_scale) == 8.0
    fresh.load_state_dict(sd)
    assert int(fresh.iterations) == 2 and int(fresh.dynamic_counter) == 2


def test_multi_optimizer_state_round_trip_all_or_nothing():
    def make():
        net = Net(False)
        opt = ko.optimizers.MultiOptimizer(
            ko.optimizers.OptimizerMap(
                ko.optimizers.Adam(0.01), {"hidden\\..*": ko.optimizers.SGD(0.1, momentum=0.9)}
            )
        )
        return net, opt

    net, opt = make()
    _train(opt, net, _batches(3))
    sd = opt.state_dict()
    assert any(k.startswith("optimizer_0/slot/hidden.weight/momentum") for k in sd)
    net2, opt2 = make()
    net2.load_state_dict(net.state_dict())
    opt2.build(net2)
    before = opt2.state_dict()
    bad = dict(sd)
    bad["optimizer_1/slot/out.bias/m"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"'slot/out\.bias/m' has shape"):
        opt2.load_state_dict(bad)
    _unchanged(opt2, before)
    opt2.load_state_dict(sd)
    _train(opt, net, _batches(4)[3:])
    _train(opt2, net2, _batches(4)[3:])
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def _copies(opt, net):
    import copy

    yield copy.deepcopy((opt, net))
    yield pickle.loads(pickle.dumps((opt, net)))


@pytest.mark.parametrize("feature", ["plain", "ema", "accumulation", "sparse", "loss_scale"])
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_a_copy_of_an_optimizer_and_its_model_trains_on_as_the_original(spec, config, feature):
    """``copy.deepcopy`` / pickle of an optimizer with its variables: the copy's state is keyed
    by the copied variables (it was keyed by the originals' ids, so the copy found no state for
    its own variables and built new slots; stepped with the originals, it updated its hidden
    copies instead of them). Both then train on bit for bit as the original does."""
    batches = _batches(6)
    sparse = feature == "sparse"
    net = Net(sparse)
    opt = _make(spec, config, feature)
    _train(opt, net, batches[:3])
    copies = list(_copies(opt, net))
    _train(opt, net, batches[3:])
    for opt_c, net_c in copies:
        _train(opt_c, net_c, batches[3:])
        _assert_same_training(opt, net, opt_c, net_c)


def test_a_copy_of_an_optimizer_alone_treats_the_originals_as_new_variables():
    """Stepped with the original variables, a copy of an optimizer (which holds copies of them)
    gives them slots of their own and updates them, as TF does for a variable it has not seen."""
    import copy

    w = ko.Variable(torch.ones(3), name="w")
    opt = ko.optimizers.Adam(0.1)
    opt.apply_gradients([(torch.ones(3), w)])
    twin = copy.deepcopy(opt)
    assert [v.name for v in twin.variables()] == [v.name for v in opt.variables()]
    assert twin.variables()[1] is not opt.variables()[1]
    fresh = ko.Variable(torch.ones(3), name="w")
    reference = ko.optimizers.Adam(0.1)
    reference.iterations.assign(1)
    before = w.detach().clone()
    twin.apply_gradients([(torch.full((3,), 0.5), w)])
    reference.apply_gradients([(torch.full((3,), 0.5), fresh)])
    assert torch.equal(twin.get_slot(w, "m"), reference.get_slot(fresh, "m"))
    assert torch.equal(w - before, fresh - torch.ones(3))
    assert len(twin.variables()) == 5  # iter, the copy's m and v, and w's own


def test_weight_decay_exclusions_follow_the_copied_variables():
    import copy

    def run(exclude):
        w, b = ko.Variable(torch.ones(3), name="w"), ko.Variable(torch.ones(2), name="b")
        opt = ko.optimizers.AdamW(0.1, weight_decay=0.5)
        if exclude:
            opt.exclude_from_weight_decay(var_list=[b])
        opt.apply_gradients([(torch.ones(3), w), (torch.ones(2), b)])
        return opt, (w, b)

    opt, (w, b) = run(True)
    twin, (w2, b2) = copy.deepcopy((opt, (w, b)))
    decayed, (w3, b3) = run(False)
    for o, (x, y) in ((opt, (w, b)), (twin, (w2, b2)), (decayed, (w3, b3))):
        o.apply_gradients([(torch.ones(3), x), (torch.ones(2), y)])
    assert torch.equal(b2, b) and torch.equal(w2, w)
    assert not torch.equal(b3, b)  # the exclusion matters: the copy kept it for its own b


def test_a_copy_keeps_the_names_a_module_gave_variables_not_built_yet():
    """``minimize(loss, model)`` names every parameter from ``named_parameters()`` but builds
    only those with gradients; a copy of (optimizer, model) gives the others the same names
    when they first get a gradient through a plain list (they were keyed by the originals'
    ids, so the copy named them ``variable_N``)."""
    import copy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    opt = ko.optimizers.Adam(0.1)
    x = torch.ones(4, 3)
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        opt.minimize(lambda: net[0](x).sum(), net)  # (net[1] gets no gradient: not built)
    for opt_c, net_c in [copy.deepcopy((opt, net)), pickle.loads(pickle.dumps((opt, net)))]:
        opt_c.apply_gradients([(torch.ones_like(p), p) for p in net_c.parameters()])
        names = sorted(opt_c.state_dict())
        assert "slot/1.weight/m" in names and "slot/1.bias/v" in names
        assert not any("variable_" in k for k in names)
