"""MultiOptimizer and OptimizerMap (docs/reference-behaviour.md Part 2 §3.7)."""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections import OrderedDict

import pytest
import torch

import kerasopt as ko
from kerasopt.optimizers import SGD, Adam, LossScaleOptimizer, MultiOptimizer, OptimizerMap


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        OrderedDict(encoder=torch.nn.Linear(3, 4), decoder=torch.nn.Linear(4, 2))
    )


def _loss(model: torch.nn.Module, step: int):
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)
    return lambda: ((model(x) - y) ** 2).mean()


def _snapshot(model, opt):
    return [p.detach().clone() for p in model.parameters()] + [
        w.detach().clone() for w in opt.variables()
    ]


# --------------------------------------------------------------------------------------------
# OptimizerMap
def test_optimizer_map_constructor_errors():
    with pytest.raises(
        TypeError,
        match=re.escape("default_optimizer must be a Keras Optimizer instance. Received: 3"),
    ):
        OptimizerMap(3)
    with pytest.raises(
        TypeError, match=re.escape("optimizer_map must be a dictionary. Received: [")
    ):
        OptimizerMap(SGD(), [("a", Adam())])
    with pytest.raises(ValueError, match="optimizer must be a Keras Optimizer instance"):
        OptimizerMap(SGD(), {"a": "adam"})


def test_optimizer_map_setitem_errors():
    m = OptimizerMap(SGD(), {"a": Adam()})
    with pytest.raises(
        ValueError,
        match=re.escape("'a' already exists in the OptimizerMap with value")
        + ".*Please make sure to not use duplicated keys.",
    ):
        m["a"] = Adam()
    with pytest.raises(ValueError, match=re.escape("key must be a string. Received: 1")):
        m[1] = Adam()
    with pytest.raises(
        ValueError, match=re.escape("optimizer must be a Keras Optimizer instance. Received: sgd")
    ):
        m["b"] = "sgd"
    with pytest.raises(
        ValueError, match=re.escape("MultiOptimizer cannot be nested inside an OptimizerMap.")
    ):
        m["b"] = MultiOptimizer(OptimizerMap(SGD()))
    with pytest.raises(
        ValueError, match=re.escape("LossScaleOptimizer cannot be nested inside an OptimizerMap.")
    ):
        m["b"] = LossScaleOptimizer(SGD())
    assert list(m) == ["a"] and len(m) == 1


def test_optimizer_map_lookup_exact_then_fullmatch_then_default():
    default, exact, regex, other = SGD(name="d"), Adam(name="e"), SGD(name="r"), Adam(name="o")
    m = OptimizerMap(default)
    m["encoder.0.weight"] = exact
    m[r"encoder\..*"] = regex
    m["decoder"] = other
    assert m["encoder.0.weight"] is exact  # exact key wins although the regex matches too
    assert m["encoder.1.bias"] is regex
    assert m["decoder"] is other
    assert m["decoder.weight"] is default  # "decoder" fullmatches only "decoder"
    assert m["xencoder.1"] is default  # fullmatch, not search
    assert "decoder" in m and "decoder.weight" not in m
    assert m.default_optimizer is default
    m["encoder.*"] = Adam()
    with pytest.raises(
        ValueError, match=re.escape("Multiple optimizers assigned to variable encoder.1.bias.")
    ):
        m["encoder.1.bias"]
    del m["encoder.*"]
    assert m["encoder.1.bias"] is regex


def test_optimizer_map_call_uses_the_variable_name():
    adam = Adam()
    m = OptimizerMap(SGD(), {"w": adam})
    assert m(ko.Variable(1.0, name="w")) is adam
    with pytest.raises(ValueError, match="routes variables by name"):
        m(torch.zeros(2))


def test_optimizer_map_config_round_trip():
    m = OptimizerMap(SGD(0.5), {"a.*": Adam(0.01, amsgrad=True)})
    config = m.get_config()
    assert config == {
        "default_optimizer": ko.optimizers.serialize(m.default_optimizer),
        "optimizer_map": {"a.*": ko.optimizers.serialize(m["a.*"])},
    }
    clone = OptimizerMap.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config


# --------------------------------------------------------------------------------------------
# MultiOptimizer: routing and numbers
def test_per_group_numbers_equal_each_inner_optimizer_alone():
    model, ref_model = _model(), _model()
    enc, dec = Adam(0.05, amsgrad=True), SGD(0.1, momentum=0.9, nesterov=True)
    opt = MultiOptimizer(OptimizerMap(dec, {r"encoder\..*": enc}))
    ref_enc, ref_dec = Adam(0.05, amsgrad=True), SGD(0.1, momentum=0.9, nesterov=True)
    ref_params = dict(ref_model.named_parameters())
    enc_names, dec_names = ["encoder.weight", "encoder.bias"], ["decoder.weight", "decoder.bias"]
    for step in range(4):
        assert int(opt.minimize(_loss(model, step), model)) == step + 1
        loss = _loss(ref_model, step)()
        grads = torch.autograd.grad(loss, list(ref_params.values()))
        by_name = dict(zip(ref_params, grads))
        ref_enc.apply_gradients([(by_name[n], ref_params[n]) for n in enc_names])
        ref_dec.apply_gradients([(by_name[n], ref_params[n]) for n in dec_names])
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
            assert torch.equal(p, q), name
    assert opt.optimizers == [enc, dec]
    assert [int(o.iterations) for o in opt.optimizers] == [4, 4] and int(opt.iterations) == 4
    for name, p in model.named_parameters():
        inner, ref = (enc, ref_enc) if name.startswith("encoder") else (dec, ref_dec)
        for slot in inner.get_slot_names():
            assert torch.equal(inner.get_slot(p, slot), ref.get_slot(ref_params[name], slot))
        slot = "m" if inner is enc else "momentum"
        assert opt.get_slot(p, slot) is inner.get_slot(p, slot)
    # the inner optimizers know the registered names
    assert [r.name for r in enc._store.by_id.values()] == enc_names
    assert opt.variables()[2:] == enc.variables() + dec.variables()


def test_routing_by_variable_names_dict_and_callable():
    a, b, c = (
        ko.Variable(1.0, name="dense/kernel"),
        ko.Variable(1.0, name="dense/bias"),
        ko.Variable(1.0, name="out"),
    )
    fast, slow = SGD(1.0), SGD(0.5)
    opt = MultiOptimizer(OptimizerMap(slow, {"dense/.*": fast}))
    opt.apply_gradients([(torch.tensor(1.0), v) for v in (a, b, c)])
    assert (float(a), float(b), float(c)) == (0.0, 0.0, 0.5)

    x, y = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    fast, slow = SGD(1.0), SGD(0.5)
    by_dict = MultiOptimizer(OptimizerMap(slow, {"x": fast}))
    by_dict.minimize(lambda: x + y, {"x": x, "y": y})
    assert (x.item(), y.item()) == (0.0, 0.5)

    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    by_shape = {2: SGD(1.0), 3: SGD(0.25)}
    by_callable = MultiOptimizer(lambda var: by_shape[var.shape[0]])
    assert by_callable.optimizers == []
    by_callable.minimize(lambda: p.sum() + q.sum(), [p, q])
    assert p.tolist() == [0.0, 0.0] and q.tolist() == [0.75] * 3
    assert by_callable.optimizers == [by_shape[2], by_shape[3]]
    assert by_callable.get_config()["optimizer_map"] is by_callable.optimizer_map


def test_inner_order_and_unused_optimizers_stay_unbuilt():
    first, second, default, extra = SGD(name="1"), SGD(name="2"), SGD(name="d"), SGD(name="x")
    m = OptimizerMap(default, {"a": first, "b": second, "c": first})
    opt = MultiOptimizer(m)
    assert opt.optimizers == [first, second, default]
    opt.build({"a": ko.Variable(1.0), "c": ko.Variable(2.0)})
    assert opt.built and first.built and not second.built and not default.built
    assert opt.optimizers == [first, second, default]
    assert extra not in opt.optimizers


def test_build_errors():
    with pytest.raises(ValueError, match="is not an Optimizer instance"):
        MultiOptimizer(lambda v: "sgd").build([ko.Variable(1.0, name="w")])
    with pytest.raises(ValueError, match="LossScaleOptimizer, which cannot be used inside"):
        MultiOptimizer(lambda v: LossScaleOptimizer(SGD())).build([ko.Variable(1.0)])
    with pytest.raises(ValueError, match="MultiOptimizer, which cannot be used inside"):
        MultiOptimizer(lambda v: MultiOptimizer(lambda w: SGD())).build([ko.Variable(1.0)])
    unnamed = MultiOptimizer(OptimizerMap(SGD()))
    with pytest.raises(ValueError, match="routes variables by name"):
        unnamed.build([torch.nn.Parameter(torch.ones(2))])
    assert not unnamed.built
    w = ko.Variable(1.0, name="w")
    with pytest.raises(ValueError, match="appears more than once"):
        MultiOptimizer(OptimizerMap(SGD())).build([w, w])
    with pytest.raises(TypeError, match="optimizer_map must be an OptimizerMap or a callable"):
        MultiOptimizer({"a": SGD()})


def test_apply_errors_and_noop():
    a, b = ko.Variable(1.0, name="a"), ko.Variable(1.0, name="b")
    opt = MultiOptimizer(OptimizerMap(SGD(1.0)))
    with pytest.raises(ValueError, match="the optimizer must already be built"):
        opt.apply([torch.tensor(1.0)])
    assert int(opt.apply([], [a])) == 0 and not opt.built
    assert int(opt.apply_gradients([])) == 0
    opt.apply([torch.tensor(1.0), torch.tensor(1.0)], [a, b])
    with pytest.raises(ValueError, match="Received 1 gradients and 2 variables"):
        opt.apply([torch.tensor(1.0)], [a])
    with pytest.raises(ValueError, match="Unknown variable: 'c'"):
        opt.apply([torch.tensor(1.0), torch.tensor(1.0)], [a, ko.Variable(1.0, name="c")])
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.apply([None, None])
    with pytest.raises(TypeError, match="must be a \\(gradient, variable\\) pair"):
        opt.apply_gradients([torch.tensor(1.0)])
    opt.apply([torch.tensor(1.0), torch.tensor(2.0)])  # built list
    assert (float(a), float(b)) == (-1.0, -2.0) and int(opt.iterations) == 2


def test_nothing_is_half_applied_when_one_group_is_invalid():
    model = _model()
    enc, dec = Adam(0.1), SGD(0.1, momentum=0.5)
    opt = MultiOptimizer(OptimizerMap(enc, {r"decoder\..*": dec}))
    opt.minimize(_loss(model, 0), model)
    before = _snapshot(model, opt)
    params = list(model.parameters())
    grads = [torch.ones_like(p) for p in params]
    # The decoder's optimizer comes first in `optimizers` (map values, then the default), so
    # its group is planned, successfully, before the encoder's invalid gradient is found.
    assert opt.optimizers == [dec, enc]
    grads[1] = torch.ones(5)  # encoder.bias: wrong shape
    with pytest.raises(ValueError, match="has shape"):
        opt.apply(grads, params)
    grads[1] = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="has dtype"):
        opt.apply_gradients(zip(grads, params))
    after = _snapshot(model, opt)
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    assert [int(o.iterations) for o in (opt, enc, dec)] == [1, 1, 1]


def test_group_without_gradients_is_skipped_with_a_warning():
    a, b = ko.Variable(1.0, name="a"), ko.Variable(1.0, name="b")
    sa, sb = SGD(1.0), SGD(1.0)
    opt = MultiOptimizer(OptimizerMap(sa, {"b": sb}))
    with pytest.warns(UserWarning, match=re.escape("Gradients do not exist for variables ['b']")):
        opt.apply_gradients([(torch.tensor(1.0), a), (None, b)])
    assert (float(a), float(b)) == (0.0, 1.0)
    assert [int(o.iterations) for o in (opt, sa, sb)] == [1, 1, 0]


def test_each_inner_runs_its_full_pipeline():
    a, b = ko.Variable([3.0, 4.0], name="a"), ko.Variable(10.0, name="b")
    clipped = SGD(1.0, clipnorm=1.0, weight_decay=0.5)
    averaged = SGD(1.0, use_ema=True, ema_momentum=0.5, gradient_accumulation_steps=2)
    opt = MultiOptimizer(OptimizerMap(clipped, {"b": averaged}))
    opt.apply_gradients([(torch.tensor([3.0, 4.0]), a), (torch.tensor(1.0), b)])
    # a: decay 3*(1-0.5)=1.5, 2.0, then clipped gradient [0.6, 0.8]
    assert a.tolist() == pytest.approx([0.9, 1.2])
    assert float(b) == 10.0 and int(averaged.iterations) == 0  # accumulation-only call
    opt.apply_gradients([(torch.tensor([0.0, 0.0]), a), (torch.tensor(3.0), b)])
    assert float(b) == 8.0 and int(averaged.iterations) == 1
    opt.finalize_variable_values([a, b])
    assert float(b) == float(averaged.get_slot(b, "average"))
    assert int(opt.iterations) == 2


# --------------------------------------------------------------------------------------------
# attributes, weights, config
def test_learning_rate_is_not_an_attribute():
    opt = MultiOptimizer(OptimizerMap(SGD()))
    with pytest.raises(
        AttributeError, match="Learning rate cannot be accessed on a MultiOptimizer"
    ):
        _ = opt.learning_rate
    with pytest.raises(
        AttributeError, match="Learning rate cannot be accessed on a MultiOptimizer"
    ):
        _ = opt.lr
    with pytest.raises(AttributeError, match="Learning rate cannot be set on a MultiOptimizer"):
        opt.learning_rate = 0.1
    assert not hasattr(opt, "learning_rate")


def test_loss_scale_factor_is_pushed_to_inner_optimizers():
    a, b, c = SGD(1.0, loss_scale_factor=3.0), SGD(1.0), SGD(1.0)
    opt = MultiOptimizer(OptimizerMap(a, {"b": b}), loss_scale_factor=4.0)
    assert a.loss_scale_factor == b.loss_scale_factor == opt.loss_scale_factor == 4.0
    opt.loss_scale_factor = 8.0
    assert a.loss_scale_factor == b.loss_scale_factor == 8.0
    via_callable = MultiOptimizer(lambda v: c, loss_scale_factor=2.0)
    x = ko.Variable(1.0, name="x")
    via_callable.minimize(lambda: 3 * x, [x])  # loss scaled by 2, gradient divided by 2
    assert c.loss_scale_factor == 2.0 and float(x) == -2.0
    w = ko.Variable(1.0, name="w")
    opt.minimize(lambda: 3 * w, [w])
    assert float(w) == -2.0
    assert (
        MultiOptimizer(OptimizerMap(SGD(loss_scale_factor=3.0))).optimizers[0].loss_scale_factor
        is None
    )


def test_weights_split_and_round_trip():
    model, twin = _model(), _model()
    make = lambda: MultiOptimizer(OptimizerMap(SGD(0.1, momentum=0.9), {r"encoder\..*": Adam(0.1)}))  # noqa: E731
    opt, clone = make(), make()
    with pytest.raises(ValueError, match="has not yet been built"):
        clone.set_weights([])
    for step in range(2):
        opt.minimize(_loss(model, step), model)
    weights = opt.get_weights()
    enc, dec = opt.optimizers
    assert len(weights) == 2 + len(enc.variables()) + len(dec.variables())
    assert weights[0] == 2 and weights[1] == 0.0 and weights[1].dtype.name == "float32"
    twin.load_state_dict(model.state_dict())
    clone.build(twin)
    with pytest.raises(ValueError, match="was expecting"):
        clone.set_weights(weights[:-1])
    bad = copy.deepcopy(weights)
    bad[-1] = bad[-1][:1]
    with pytest.raises(ValueError, match="not compatible"):
        clone.set_weights(bad)
    assert int(clone.iterations) == 0
    clone.set_weights(weights)
    assert int(clone.iterations) == 2
    assert [int(o.iterations) for o in clone.optimizers] == [2, 2]
    for step in range(2, 4):
        opt.minimize(_loss(model, step), model)
        clone.minimize(_loss(twin, step), twin)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_get_config_and_round_trip():
    opt = MultiOptimizer(
        OptimizerMap(SGD(0.5), {r"encoder\..*": Adam(0.01)}), loss_scale_factor=2.0, name="multi"
    )
    config = opt.get_config()
    assert set(config) == {"optimizer_map", "loss_scale_factor", "name"}
    assert config["loss_scale_factor"] == 2.0 and config["name"] == "multi"
    assert config["optimizer_map"]["class_name"] == "OptimizerMap"
    data = json.loads(json.dumps(ko.optimizers.serialize(opt)))
    assert data["class_name"] == "MultiOptimizer"
    clone = ko.optimizers.deserialize(data)
    assert isinstance(clone, MultiOptimizer) and clone.get_config() == config
    assert MultiOptimizer.from_config(config).get_config() == config
    assert [type(o).__name__ for o in clone.optimizers] == ["Adam", "SGD"]
    assert MultiOptimizer(OptimizerMap(SGD())).get_config()["name"] == "MultiOptimizer"


def test_minimize_with_tensor_loss_and_module():
    model = _model()
    opt = MultiOptimizer(OptimizerMap(SGD(0.1)))
    x = torch.randn(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.minimize(model(x).sum(), model)
    assert int(opt.iterations) == 1 and int(opt.optimizers[0].iterations) == 1
    assert "MultiOptimizer" in repr(opt)


def test_a_copy_with_its_model_routes_and_trains_on_as_the_original():
    """copy.deepcopy / pickle of a MultiOptimizer with its model: the routing (kept by variable
    identity) follows the copied parameters, and the copy trains on bit for bit."""
    import pickle

    model = _model()
    opt = MultiOptimizer(OptimizerMap(SGD(0.1, momentum=0.9), {r"encoder\..*": Adam(0.05)}))
    for step in range(2):
        opt.minimize(_loss(model, step), model)
    copies = [copy.deepcopy((opt, model)), pickle.loads(pickle.dumps((opt, model)))]
    for step in range(2, 4):
        opt.minimize(_loss(model, step), model)
    for twin, twin_model in copies:
        for step in range(2, 4):
            twin.minimize(_loss(twin_model, step), twin_model)
        pairs = zip(_snapshot(twin_model, twin), _snapshot(model, opt), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        enc = twin.optimizers[0]
        assert twin.get_slot(twin_model.encoder.weight, "m") is enc.get_slot(
            twin_model.encoder.weight, "m"
        )
