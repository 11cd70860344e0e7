"""TensorFlow 2.x's documented usage examples (docs/getting-started.md) and the base-class API of docs/reference-behaviour.md Part 1 (§1.1–§1.7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kerasopt as ko
from tests.helpers import make_optimizer
from tests.specs import OPTIMIZERS, case_ids, cases


# -- TF's three usage patterns (docs/getting-started.md) -------------------------------------
def test_seed_minimize_example():
    var1, var2 = ko.Variable(2.0, name="var1"), ko.Variable(5.0, name="var2")
    opt = ko.optimizers.SGD(learning_rate=0.1)
    loss = lambda: 3 * var1 * var1 + 2 * var2 * var2  # noqa: E731
    result = opt.minimize(loss, var_list=[var1, var2])
    assert int(result) == 1
    np.testing.assert_allclose(var1.numpy(), 0.8, rtol=1e-6)
    np.testing.assert_allclose(var2.numpy(), 3.0, rtol=1e-6)


def test_seed_lazy_model_with_callable_var_list():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.rand(8, 3)
    model = torch.nn.Sequential(
        torch.nn.LazyLinear(16), torch.nn.ReLU(), torch.nn.LazyLinear(3), torch.nn.Sigmoid()
    )
    opt = ko.optimizers.SGD(learning_rate=0.1)
    loss_fn = lambda: torch.mean((model(x) - y) ** 2)  # noqa: E731
    losses = []
    for _ in range(5):
        losses.append(float(loss_fn()))
        opt.minimize(loss_fn, lambda: list(model.parameters()))
    assert int(opt.iterations) == 5
    assert losses[-1] < losses[0]
    assert len(opt._store.by_id) == 4


def test_seed_gradient_tape_then_apply_gradients():
    w = ko.Variable([[1.0, -2.0], [3.0, 4.0]], name="w")
    b = ko.Variable([0.5, -0.5], name="b")
    x = torch.tensor([[1.0, 2.0]])
    opt = ko.optimizers.SGD(learning_rate=0.1)
    with ko.GradientTape() as tape:
        loss = ((x @ w + b) ** 2).sum()
    grads = tape.gradient(loss, [w, b])
    opt.apply_gradients(zip([torch.clamp(g, -1, 1) for g in grads], [w, b]))
    out = (x @ torch.tensor([[1.0, -2.0], [3.0, 4.0]]) + torch.tensor([0.5, -0.5]))[0]
    gw = torch.clamp(2 * x.T @ out[None], -1, 1)
    gb = torch.clamp(2 * out, -1, 1)
    torch.testing.assert_close(w.detach(), torch.tensor([[1.0, -2.0], [3.0, 4.0]]) - 0.1 * gw)
    torch.testing.assert_close(b.detach(), torch.tensor([0.5, -0.5]) - 0.1 * gb)


# -- minimize forms ---------------------------------------------------------------------------
def test_minimize_var_list_forms_agree():
    results = []
    for form in ("list", "tuple", "generator", "callable", "module", "dict"):
        lin = torch.nn.Linear(3, 2)
        with torch.no_grad():
            lin.weight.copy_(torch.arange(6.0).reshape(2, 3) / 10)
            lin.bias.fill_(0.1)
        x = torch.ones(4, 3)
        var_list = {
            "list": [lin.weight, lin.bias],
            "tuple": (lin.weight, lin.bias),
            "generator": (p for p in lin.parameters()),
            "callable": lambda lin=lin: [lin.weight, lin.bias],
            "module": lin,
            "dict": {"weight": lin.weight, "bias": lin.bias},
        }[form]
        opt = ko.optimizers.Adam(0.1)
        opt.minimize(lambda lin=lin, x=x: lin(x).pow(2).mean(), var_list)
        results.append(torch.cat([lin.weight.detach().flatten(), lin.bias.detach()]))
    for r in results[1:]:
        assert torch.equal(r, results[0])


def test_module_var_list_registers_parameter_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    opt = ko.optimizers.SGD(0.1, momentum=0.5)
    opt.minimize(lambda: model(torch.ones(1, 2)).sum(), model)
    names = sorted(r.name for r in opt._store.by_id.values())
    assert names == ["0.bias", "0.weight"]


def test_minimize_tensor_loss_with_and_without_tape():
    a, b = ko.Variable([1.0, 2.0]), ko.Variable([1.0, 2.0])
    opt_a, opt_b = ko.optimizers.SGD(0.1), ko.optimizers.SGD(0.1)
    with ko.GradientTape() as tape:
        loss = (a * a).sum()
    opt_a.minimize(loss, [a], tape=tape)
    opt_b.minimize((b * b).sum(), [b])  # autograd directly: no tape needed in torch
    torch.testing.assert_close(a.detach(), torch.tensor([0.8, 1.6]))
    assert torch.equal(a.detach(), b.detach())


def test_minimize_grad_loss_scales_gradient():
    v = ko.Variable([1.0, 1.0])
    opt = ko.optimizers.SGD(1.0)
    opt.minimize(lambda: v * 3.0, [v], grad_loss=torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(v.detach(), torch.tensor([-2.0, -5.0]))


def test_minimize_watches_plain_tensor_in_list():
    t = torch.tensor([2.0])
    ko.optimizers.SGD(0.25).minimize(lambda: (t * t).sum(), [t])
    torch.testing.assert_close(t.detach(), torch.tensor([1.0]))


def test_minimize_rejects_non_loss():
    with pytest.raises(ValueError, match="`loss` must be a callable returning the loss"):
        ko.optimizers.SGD().minimize(3.0, [ko.Variable(1.0)])


def test_unconnected_variable_warns_and_others_update():
    a, b = ko.Variable(1.0, name="a"), ko.Variable(1.0, name="b")
    opt = ko.optimizers.SGD(0.5)
    with pytest.warns(UserWarning, match=r"Gradients do not exist for variables \['b'\]"):
        opt.minimize(lambda: a * a, [a, b])
    assert float(a) == 0.0 and float(b) == 1.0 and int(opt.iterations) == 1


# -- hyperparameters --------------------------------------------------------------------------
def test_learning_rate_setter_takes_effect_next_step_and_is_float32():
    v = ko.Variable(np.array([1.0]))  # float64
    opt = ko.optimizers.SGD(0.1)
    opt.apply_gradients([(torch.ones(1, dtype=torch.float64), v)])
    opt.learning_rate = 0.2
    opt.apply_gradients([(torch.ones(1, dtype=torch.float64), v)])
    expected = 1.0 - float(np.float32(0.1)) - float(np.float32(0.2))
    assert float(v) == expected
    assert opt.learning_rate.dtype == torch.float32
    assert float(opt.lr) == float(np.float32(0.2))


def test_plain_attributes_are_exact_in_float64():
    v = ko.Variable(np.array([0.0]))
    opt = ko.optimizers.Adam(0.1, epsilon=0.1)
    opt.apply_gradients([(torch.tensor([1e-3], dtype=torch.float64), v)])
    m = 0.1 * 1e-3
    vv = 0.001 * 1e-6
    lr = float(np.float32(0.1))
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    alpha = lr * np.sqrt(1 - b2) / (1 - b1)
    m, vv = (1 - b1) * 1e-3, (1 - b2) * 1e-6
    assert float(v) == pytest.approx(-(m * alpha) / (np.sqrt(vv) + 0.1), rel=1e-14)


@pytest.mark.parametrize("kind", ["callable", "step_callable", "schedule", "tensor"])
def test_hyperparameter_callables_and_schedules_evaluated_each_step(kind):
    v = ko.Variable(np.zeros(1))
    steps = []
    if kind == "callable":
        counter = iter([0.1, 0.2, 0.3])
        lr = lambda: next(counter)  # noqa: E731
    elif kind == "step_callable":
        lr = lambda step: 0.1 * (int(step) + 1)  # noqa: E731
    elif kind == "schedule":
        lr = ko.optimizers.schedules.PiecewiseConstantDecay([0, 1], [0.1, 0.2, 0.3])
    else:
        lr = torch.tensor(0.1)
    opt = ko.optimizers.SGD(lr)
    for i in range(3):
        if kind == "tensor":
            lr.fill_(0.1 * (i + 1))
        opt.apply_gradients([(torch.ones(1, dtype=torch.float64), v)])
        steps.append(float(v))
    expected = np.cumsum([-float(np.float32(x)) for x in (0.1, 0.2, 0.3)])
    # a tensor hyperparameter is kept by reference and read at every step, as TF keeps a
    # tf.Variable hyperparameter: changing it in place changes the next step
    np.testing.assert_allclose(steps, expected, rtol=1e-15)


def test_legacy_decay_divides_learning_rate():
    v = ko.Variable(np.zeros(1))
    opt = ko.optimizers.SGD(0.1, decay=0.5)
    got = []
    for _ in range(3):
        opt.apply_gradients([(torch.ones(1, dtype=torch.float64), v)])
        got.append(float(v))
    lr, d = float(np.float32(0.1)), float(np.float32(0.5))
    expected = np.cumsum([-lr / (1 + d * k) for k in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_lr_alias_warns_and_sets_learning_rate():
    with pytest.warns(UserWarning, match="`lr` argument is deprecated"):
        opt = ko.optimizers.Adam(lr=0.5)
    assert float(opt.learning_rate) == 0.5


def test_integer_learning_rate_and_epsilon_quirk():
    opt = ko.optimizers.Adam(learning_rate=1, epsilon=0)
    assert float(opt.learning_rate) == 1.0
    assert opt.epsilon == 1e-7
    assert ko.optimizers.Adam(epsilon=None).epsilon == 1e-7


# -- clipping -------------------------------------------------------------------------------
def test_clipnorm_clipvalue_global_clipnorm_values():
    a, b = ko.Variable([0.0, 0.0]), ko.Variable([0.0])
    ko.optimizers.SGD(1.0, clipnorm=1.0).apply_gradients([(torch.tensor([3.0, 4.0]), a)])
    torch.testing.assert_close(a.detach(), torch.tensor([-0.6, -0.8]))
    a.assign([0.0, 0.0])
    ko.optimizers.SGD(1.0, global_clipnorm=1.0).apply_gradients(
        [(torch.tensor([3.0, 0.0]), a), (torch.tensor([4.0]), b)]
    )
    torch.testing.assert_close(a.detach(), torch.tensor([-0.6, 0.0]))
    torch.testing.assert_close(b.detach(), torch.tensor([-0.8]))
    a.assign([0.0, 0.0])
    ko.optimizers.SGD(1.0, clipvalue=0.5, clipnorm=0.3).apply_gradients(
        [(torch.tensor([3.0, -0.1]), a)]
    )
    clipped = np.array([0.5, -0.1])
    expected = -clipped * 0.3 / max(np.linalg.norm(clipped), 0.3)
    np.testing.assert_allclose(a.numpy(), expected, rtol=1e-6)


def test_clipnorm_of_zero_gradient_stays_zero_and_global_nan():
    a = ko.Variable([1.0, 1.0])
    ko.optimizers.SGD(1.0, clipnorm=1.0).apply_gradients([(torch.zeros(2), a)])
    assert a.numpy().tolist() == [1.0, 1.0]
    ko.optimizers.SGD(1.0, global_clipnorm=1.0).apply_gradients([(torch.tensor([np.inf, 1.0]), a)])
    assert np.isnan(a.numpy()).all()


def test_clipping_acts_on_sparse_values():
    v = ko.Variable(torch.zeros(3, 2))
    g = ko.IndexedSlices(torch.tensor([[3.0, 4.0]]), torch.tensor([1]), (3, 2))
    ko.optimizers.SGD(1.0, clipnorm=1.0).apply_gradients([(g, v)])
    torch.testing.assert_close(v.detach()[1], torch.tensor([-0.6, -0.8]))


def test_gradient_transformers_run_after_clipping():
    seen = []

    def double(pairs):
        seen.append([g.clone() for g, _ in pairs])
        return [(g * 2, v) for g, v in pairs]

    v = ko.Variable([0.0])
    ko.optimizers.SGD(1.0, clipvalue=1.0, gradient_transformers=[double]).apply_gradients(
        [(torch.tensor([5.0]), v)]
    )
    assert seen[0][0].item() == 1.0
    assert float(v) == -2.0


# -- slots and weights -----------------------------------------------------------------------
def test_slot_creation_order_and_weights_order():
    a, b = ko.Variable([1.0, 2.0]), ko.Variable([[1.0]])
    opt = ko.optimizers.Adam(amsgrad=True)
    opt.apply_gradients([(torch.ones(2), a), (torch.ones(1, 1), b)])
    assert opt.get_slot_names() == ["m", "v", "vhat"]
    w = opt.variables()
    assert w[0] is opt.iterations
    expected = [opt.get_slot(v, s) for s in ("m", "v", "vhat") for v in (a, b)]
    assert all(x is y for x, y in zip(w[1:], expected))
    assert opt.weights == w
    assert [x.shape for x in opt.get_weights()] == [(), (2,), (1, 1), (2,), (1, 1), (2,), (1, 1)]


def test_new_variables_get_slots_lazily_like_a_gan():
    gen, disc = ko.Variable([1.0]), ko.Variable([2.0])
    opt = ko.optimizers.Adam()
    opt.apply_gradients([(torch.ones(1), gen)])
    opt.apply_gradients([(torch.ones(1), disc)])
    opt.apply_gradients([(torch.ones(1), gen), (torch.ones(1), disc)])
    assert int(opt.iterations) == 3
    assert float(opt.get_slot(disc, "m")) != 0.0


def test_set_weights_round_trip_continues_identically():
    torch.manual_seed(0)
    a = ko.Variable(torch.randn(3))
    b = ko.Variable(a.detach().clone())
    opt_a, opt_b = ko.optimizers.Adam(0.1), ko.optimizers.Adam(0.1)
    g = torch.tensor([0.1, -0.2, 0.3])
    opt_a.apply_gradients([(g, a)])
    opt_a.apply_gradients([(g, a)])
    b.assign(a.detach())
    opt_b.build([b])
    opt_b.set_weights(opt_a.get_weights())
    assert int(opt_b.iterations) == 2
    opt_a.apply_gradients([(g, a)])
    opt_b.apply_gradients([(g, b)])
    assert torch.equal(a.detach(), b.detach())


def test_add_slot_initializers():
    v = ko.Variable([1.0, 2.0])
    opt = ko.optimizers.SGD()
    assert opt.add_slot(v, "z").tolist() == [0.0, 0.0]
    assert opt.add_slot(v, "o", "ones").tolist() == [1.0, 1.0]
    assert opt.add_slot(v, "c", 0.5).tolist() == [0.5, 0.5]
    assert opt.add_slot(
        v, "f", lambda shape, dtype: torch.full(shape, 3.0, dtype=dtype)
    ).tolist() == [3.0, 3.0]
    assert opt.add_slot(v, "s", shape=(3,)).shape == (3,)
    t = torch.tensor([5.0, 6.0])
    copied = opt.add_slot(v, "t", t)
    assert copied.tolist() == [5.0, 6.0] and copied is not t
    assert opt.add_slot(v, "z", "ones").tolist() == [0.0, 0.0]  # created once
    assert opt.get_slot_names() == ["z", "o", "c", "f", "s", "t"]


# -- config and serialization ----------------------------------------------------------------
WITH_DEFAULTS = [s for s in OPTIMIZERS if s.default_config is not None]


@pytest.mark.parametrize("spec", WITH_DEFAULTS, ids=[s.name for s in WITH_DEFAULTS])
def test_default_config_matches_tf(spec):
    assert getattr(ko.optimizers, spec.name)().get_config() == spec.default_config


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_config_round_trip_and_json(spec, config):
    opt = make_optimizer(spec, dict(config, clipnorm=0.5))
    cfg = opt.get_config()
    json.dumps(cfg)
    again = type(opt).from_config(cfg)
    assert again.get_config() == cfg
    assert cfg["clipnorm"] == 0.5
    ser = ko.optimizers.serialize(opt)
    assert ser["class_name"] == spec.name and ser["registered_name"] is None
    assert ko.optimizers.deserialize(dict(ser, extra="ignored")).get_config() == cfg
    assert ko.optimizers.get(ser).get_config() == cfg


def test_schedule_in_config_round_trips():
    sched = ko.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9, staircase=True)
    cfg = ko.optimizers.Adam(sched).get_config()
    assert cfg["learning_rate"]["class_name"] == "ExponentialDecay"
    again = ko.optimizers.Adam.from_config(json.loads(json.dumps(cfg)))
    assert isinstance(again.learning_rate, ko.optimizers.schedules.ExponentialDecay)
    assert again.learning_rate.get_config() == sched.get_config()


def test_from_config_maps_lr_and_callable_serializes_as_value():
    opt = ko.optimizers.SGD.from_config({"lr": 0.3, "name": "x"})
    assert float(opt.learning_rate) == pytest.approx(0.3) and opt.name == "x"
    assert ko.optimizers.SGD(lambda: 0.25).get_config()["learning_rate"] == 0.25


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=[s.name for s in OPTIMIZERS])
def test_get_by_name_case_insensitive(spec):
    assert type(ko.optimizers.get(spec.name.lower())).__name__ == spec.name
    for alias in spec.aliases:
        assert type(ko.optimizers.get(alias)).__name__ == spec.name
    assert type(ko.optimizers.get(spec.name.upper())).__name__ == spec.name
    inst = ko.optimizers.get(spec.name)
    assert ko.optimizers.get(inst) is inst


# -- a user's TF-2.x-style subclass (seed-era hooks) ----------------------------------------
class MomentumTF2(ko.optimizers.Optimizer):
    """Written exactly as a TF 2.x optimizer_v2 subclass would be."""

    def __init__(self, learning_rate=0.01, momentum=0.5, name="MomentumTF2", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("momentum", momentum)

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "velocity")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        apply_state[(var_device, var_dtype)]["momentum"] = self._get_hyper("momentum", var_dtype)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        var_device, var_dtype = var.device, var.dtype
        coefficients = (apply_state or {}).get(
            (var_device, var_dtype)
        ) or self._fallback_apply_state(var_device, var_dtype)
        vel = self.get_slot(var, "velocity")
        vel.copy_(vel * coefficients["momentum"] + grad)
        var.sub_(coefficients["lr_t"] * vel)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        vel = self.get_slot(var, "velocity")
        lr = self._decayed_lr(var.dtype)
        vel[indices] = vel[indices] * self._get_hyper("momentum", var.dtype) + grad
        var[indices] -= lr * vel[indices]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate": self._serialize_hyperparameter("learning_rate"),
                "momentum": self._serialize_hyperparameter("momentum"),
            }
        )
        return config


def test_seed_era_subclass_dense_sparse_config():
    v = ko.Variable([1.0, 1.0])
    opt = MomentumTF2(learning_rate=0.5)
    opt.apply_gradients([(torch.tensor([1.0, 2.0]), v)])
    opt.apply_gradients([(torch.tensor([1.0, 2.0]), v)])
    # vel = 1, 1.5 (x g); var = 1 - 0.5*g - 0.5*1.5*g
    torch.testing.assert_close(v.detach(), torch.tensor([1 - 0.5 - 0.75, 1 - 1.0 - 1.5]))
    assert opt.get_slot_names() == ["velocity"]
    assert float(opt.momentum) == 0.5
    opt.momentum = 0.25
    assert float(opt.momentum) == 0.25
    cfg = opt.get_config()
    assert cfg["momentum"] == 0.25 and cfg["learning_rate"] == 0.5
    assert MomentumTF2.from_config(cfg).get_config() == cfg
    e = ko.Variable(torch.zeros(4, 1))
    g = ko.IndexedSlices(torch.ones(3, 1), torch.tensor([2, 0, 2]), (4, 1))
    opt.apply_gradients([(g, e)])
    torch.testing.assert_close(e.detach().flatten(), torch.tensor([-0.5, 0.0, -1.0, 0.0]))


def test_subclass_without_sparse_hook_raises_clearly():
    class DenseOnly(ko.optimizers.Optimizer):
        def __init__(self):
            super().__init__("DenseOnly")
            self._set_hyper("learning_rate", 0.1)

        def _resource_apply_dense(self, grad, var, apply_state=None):
            var.sub_(grad)

    e = ko.Variable(torch.zeros(2, 1))
    with pytest.raises(NotImplementedError, match="does not implement `_resource_apply_sparse`"):
        DenseOnly().apply_gradients(
            [(ko.IndexedSlices(torch.ones(1, 1), torch.tensor([0]), (2, 1)), e)]
        )


def test_numpy_gradients_are_accepted_and_dtype_checked():
    v = ko.Variable(np.array([1.0, 2.0], dtype=np.float32), name="v")
    opt = ko.optimizers.SGD(0.5)
    opt.apply_gradients([(np.array([2.0, 2.0], dtype=np.float32), v)])
    assert v.numpy().tolist() == [0.0, 1.0]
    with pytest.raises(
        ValueError,
        match=r"Gradient for variable 'v' has dtype torch\.float64, expected torch\.float32",
    ):
        opt.apply_gradients([(np.array([2.0, 2.0]), v)])
