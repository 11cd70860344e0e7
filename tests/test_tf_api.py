"""TF API fidelity found by running TensorFlow's own tf_keras legacy optimizer tests.

Hyperparameters and slots are variables (``opt.lr.assign(x)``, ``get_slot(v, "m").assign(x)``),
``opt.lr = x`` assigns, ``opt.iterations = variable`` adopts it, complex variables for the
optimizers TF defines them for, Python-list gradients, empty ``apply_gradients``/``minimize``,
``gradient_aggregator``, ``tape.gradient`` over modules, Nadam's ``decay`` and Keras V1 weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import kerasopt as ko
from kerasopt._hyper import Hyper, declared
from tests.reference import REFERENCES
from tests.specs import OPTIMIZERS

f32 = lambda x: float(np.float32(x))  # noqa: E731

# TensorFlow registers complex kernels for these legacy optimizers (training_ops.cc) and its
# tests loop over complex64/complex128 for them; the others have no complex kernels.
TF_COMPLEX = {"SGD", "Adagrad", "Adadelta", "RMSprop"}
SPECS = {spec.name: spec for spec in OPTIMIZERS}


def _opt(name: str, **config):
    return getattr(ko.optimizers, name)(**config)


# -- hyperparameters are variables ---------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPECS))
def test_lr_alias_is_the_learning_rate_variable(name):
    opt = _opt(name, **SPECS[name].configs[0])
    lr = opt.learning_rate
    assert isinstance(lr, ko.Variable) and opt.lr is lr
    assert {"lr", "learning_rate"} <= set(dir(opt))
    opt.lr = 0.5  # TF's __setattr__ maps lr -> learning_rate; before the fix it was shadowed
    assert opt.learning_rate is lr and float(lr) == 0.5
    assert "lr" not in vars(opt)
    lr.assign(0.25)
    assert float(opt.lr) == 0.25 and opt.get_config()["learning_rate"] == 0.25


def test_assigned_learning_rate_drives_the_next_step_exactly():
    v = ko.Variable(np.array([1.0]))  # float64: TF's float32 hyperparameter value shows exactly
    opt = ko.optimizers.SGD(0.1)
    g = torch.ones(1, dtype=torch.float64)
    expected = 1.0
    for set_lr, lr in (
        (None, 0.1),
        (lambda: opt.learning_rate.assign(0.3), 0.3),  # tf.Variable.assign
        (lambda: opt.lr.assign(np.float32(0.7)), 0.7),  # backend.set_value(opt.lr, x)
        (lambda: setattr(opt, "lr", 0.11), 0.11),
        (lambda: setattr(opt, "learning_rate", 0.13), 0.13),
    ):
        if set_lr is not None:
            set_lr()
        opt.apply_gradients([(g, v)])
        expected -= f32(lr)
        assert float(v) == expected
    state = opt.state_dict()
    assert float(state["hyper/learning_rate"]) == 0.13  # the exact value set, as config
    assert ko.optimizers.SGD.from_config(opt.get_config()).get_config() == opt.get_config()


def test_assigned_decay_and_momentum_are_used():
    v = ko.Variable(np.array([0.0]))
    opt = ko.optimizers.SGD(1.0, momentum=0.5)
    g = torch.ones(1, dtype=torch.float64)
    opt.apply_gradients([(g, v)])  # accum = -1, var = -1
    opt.momentum.assign(0.25)
    opt.decay.assign(1.0)
    opt.apply_gradients([(g, v)])  # lr = 1 / (1 + 1 * 1) = 0.5; accum = -0.25 - 0.5
    assert float(opt.get_slot(v, "momentum")) == -0.75
    assert float(v) == -1.75
    assert opt.get_config()["momentum"] == 0.25 and opt.get_config()["decay"] == 1.0


# TF reads these once, at construction: Nadam's momentum schedule uses `self._initial_decay`.
STATIC_HYPERS = {("Nadam", "decay")}


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.name)
def test_every_hyperparameter_assign_equals_setattr(spec):
    """opt.<hyper>.assign(x) mid-run gives bit-identical numbers to opt.<hyper> = x, and the
    change matters (a third optimizer left alone ends elsewhere)."""
    config = spec.configs[-1]
    names = [
        d.name
        for d in declared(getattr(ko.optimizers, spec.name))
        if isinstance(d, Hyper)
        and isinstance(getattr(_opt(spec.name, **config), d.name), ko.Variable)
    ]
    assert "learning_rate" in names
    rng = np.random.default_rng(1)
    grads = [torch.tensor(rng.normal(size=(3, 2))) for _ in range(3)]
    for hyper in names:
        a, b, c = (_opt(spec.name, **config) for _ in range(3))
        va, vb, vc = (ko.Variable(np.linspace(0.5, 1.5, 6).reshape(3, 2)) for _ in range(3))
        if (spec.name, hyper) in STATIC_HYPERS:
            continue
        new = float(getattr(a, hyper)) * 0.5 + (-0.003 if hyper == "learning_rate_power" else 0.003)
        for step, g in enumerate(grads):
            if step == 1:
                getattr(a, hyper).assign(new)
                setattr(b, hyper, new)
            for opt, v in ((a, va), (b, vb), (c, vc)):
                opt.apply_gradients([(g.clone(), v)])
        assert torch.equal(va, vb), hyper
        assert not torch.equal(va, vc), hyper


def test_tensor_hyperparameter_is_read_every_step():
    lr = ko.Variable(0.5)  # TF keeps a tf.Variable hyperparameter by reference
    v = ko.Variable([1.0])
    opt = ko.optimizers.SGD(lr)
    opt.apply_gradients([(torch.ones(1), v)])
    lr.assign(0.25)
    opt.apply_gradients([(torch.ones(1), v)])
    assert float(v) == 0.25 and opt.learning_rate is lr


def test_deepcopy_keeps_hyperparameter_variables_linked():
    opt = ko.optimizers.SGD(0.42)
    twin = copy.deepcopy(opt)
    assert twin.get_config()["learning_rate"] == 0.42
    twin.lr.assign(0.5)
    v = ko.Variable([1.0])
    twin.apply_gradients([(torch.ones(1), v)])
    assert float(v) == 0.5 and float(opt.lr) == f32(0.42)


# -- iterations ------------------------------------------------------------------------------
def test_iterations_adopts_a_variable_before_build():
    step = ko.Variable(5, dtype=torch.int64, trainable=False, name="global_step")
    v = ko.Variable([1.0, 2.0])
    opt = ko.optimizers.SGD(1.0, decay=1.0)
    opt.iterations = step
    assert opt.iterations is step
    opt.minimize(lambda: (3 * v).sum(), [v])
    assert int(step) == 6
    np.testing.assert_allclose(v.numpy(), [1 - 3 / 6, 2 - 3 / 6], rtol=1e-6)  # lr/(1+decay*5)
    step.assign(0)  # changed behind the optimizer's back: the next step sees it
    opt.minimize(lambda: (3 * v).sum(), [v])
    assert int(step) == 1
    np.testing.assert_allclose(v.numpy(), [1 - 0.5 - 3, 2 - 0.5 - 3], rtol=1e-6)


def test_iterations_refuses_a_new_variable_after_build_and_non_integers():
    v = ko.Variable([1.0])
    opt = ko.optimizers.Adam()
    with pytest.raises(TypeError, match="0-d integer tensor"):
        opt.iterations = ko.Variable(1.0)
    opt.apply_gradients([(torch.ones(1), v)])
    before = opt.iterations
    with pytest.raises(RuntimeError, match="after the Optimizer weights have been created"):
        opt.iterations = ko.Variable(7, dtype=torch.int64, trainable=False)
    assert opt.iterations is before and int(before) == 1
    opt.iterations.assign(5)  # TF: `opt.iterations.assign(5)`
    opt.apply_gradients([(torch.ones(1), v)])
    assert int(opt.iterations) == 6
    opt.iterations = 2  # a number assigns the value
    assert int(opt.iterations) == 2 and opt.iterations is before


# -- slots are variables ---------------------------------------------------------------------
class VelocitySGD(ko.Optimizer):
    """A TF-2.x custom optimizer (the seed's subclass API) writing its slot through the
    Variable API: velocity = momentum * velocity - lr * g; var += velocity; a second slot counts
    the steps with assign_add/assign_sub."""

    def __init__(self, learning_rate=0.1, momentum=0.9, name="VelocitySGD", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", learning_rate)
        self._set_hyper("momentum", momentum)

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "velocity")
        for var in var_list:
            self.add_slot(var, "count", initializer="ones")

    def _resource_apply_dense(self, grad, var, apply_state=None):
        velocity = self.get_slot(var, "velocity")
        lr = self._get_hyper("learning_rate", var.dtype)
        momentum = self._get_hyper("momentum", var.dtype)
        velocity.assign(momentum * velocity.read_value() - lr * grad)
        count = self.get_slot(var, "count")
        count.assign_add(2.0)
        count.assign_sub(1.0)
        var.assign_add(velocity)

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self._serialize_hyperparameter("momentum")
        return config


def test_seed_era_subclass_writes_slots_through_the_variable_api():
    rng = np.random.default_rng(0)
    var0 = rng.normal(size=(3, 2))
    var = ko.Variable(var0.copy())
    opt = VelocitySGD(0.1, 0.9)
    ref_var, ref_vel = var0.copy(), np.zeros_like(var0)
    for step in range(4):
        g = rng.normal(size=(3, 2))
        opt.apply_gradients([(torch.tensor(g), var)])
        ref_vel = f32(0.9) * ref_vel - f32(0.1) * g
        ref_var = ref_var + ref_vel
        np.testing.assert_allclose(var.numpy(), ref_var, rtol=1e-13)
        np.testing.assert_allclose(opt.get_slot(var, "velocity").numpy(), ref_vel, rtol=1e-13)
        assert float(opt.get_slot(var, "count")[0, 0]) == step + 2
    assert opt.momentum is opt._get_hyper("momentum") and float(opt.momentum) == f32(0.9)
    assert VelocitySGD.from_config(opt.get_config()).get_config() == opt.get_config()


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.name)
def test_slots_are_variables_the_rule_keeps_using(spec):
    v = ko.Variable(np.ones((2, 3)), name="w")
    opt = _opt(spec.name, **spec.configs[0])
    opt.apply_gradients([(torch.full((2, 3), 0.5, dtype=torch.float64), v)])
    for slot_name in opt.get_slot_names():
        slot = opt.get_slot(v, slot_name)
        assert isinstance(slot, ko.Variable) and not slot.requires_grad
        assert any(slot is w for w in opt.variables())
    # an assigned slot is what the next step reads: zeroing every slot and the variable's
    # history equals a fresh optimizer's first step from the same point (for rules whose state is
    # only slots; the counter is set back too)
    twin = _opt(spec.name, **spec.configs[0])
    w2 = ko.Variable(v.numpy(), name="w")
    twin.build([w2])
    for slot_name in opt.get_slot_names():
        opt.get_slot(v, slot_name).assign(twin.get_slot(w2, slot_name))
    for weight, fresh in zip(opt.variables()[1:], twin.variables()[1:]):
        weight.copy_(fresh)  # Nadam's momentum_cache and feature state
    opt.iterations.assign(0)
    g = torch.full((2, 3), -0.25, dtype=torch.float64)
    opt.apply_gradients([(g, v)])
    twin.apply_gradients([(g.clone(), w2)])
    assert torch.equal(v, w2)


# -- complex variables -------------------------------------------------------------------------
def test_complex_support_is_what_tensorflow_registers():
    assert {s.name for s in OPTIMIZERS if getattr(ko.optimizers, s.name).supports_complex} == (
        TF_COMPLEX
    )


COMPLEX_CASES = [
    (spec, i) for spec in OPTIMIZERS if spec.name in TF_COMPLEX for i in range(len(spec.configs))
]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("spec,index", COMPLEX_CASES, ids=lambda x: getattr(x, "name", str(x)))
def test_complex_steps_match_reference(spec, index, sparse, dtype):
    config = spec.configs[index]
    rng = np.random.default_rng(index)
    shape = (5, 3)
    cplx = lambda *s: rng.normal(size=s) + 1j * rng.normal(size=s)  # noqa: E731
    var0 = cplx(*shape)
    np_dtype = np.complex64 if dtype == torch.complex64 else np.complex128
    var0 = var0.astype(np_dtype).astype(np.complex128)  # the start both sides see
    var = ko.Variable(torch.tensor(var0, dtype=dtype), name="z")
    opt = _opt(spec.name, **config)
    ref_config = spec.reference_config(config)
    ref = REFERENCES[spec.name](**ref_config)
    ref_var, slots = var0.copy(), ref.init_slots(var0)
    rtol, atol = (2e-5, 1e-6) if dtype == torch.complex64 else (1e-12, 1e-14)
    for t in range(1, 5):
        if sparse:
            indices = np.array([0, 3, 3, 1])
            values = cplx(4, 3).astype(np_dtype).astype(np.complex128)
            grad = ko.IndexedSlices(torch.tensor(values, dtype=dtype), torch.tensor(indices), shape)
            ref_var = ref.sparse(ref_var, indices, values, slots, t, ref_config["learning_rate"])
        else:
            g = cplx(*shape).astype(np_dtype).astype(np.complex128)
            grad = torch.tensor(g, dtype=dtype)
            ref_var = ref.dense(ref_var, g, slots, t, ref_config["learning_rate"])
        opt.apply_gradients([(grad, var)])
        np.testing.assert_allclose(var.numpy(), ref_var, rtol=rtol, atol=atol)
        for name, expected in slots.items():
            got = opt.get_slot(var, name).numpy()
            assert got.dtype == np_dtype
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)
        assert np.abs(np.imag(ref_var)).max() > 0.1  # genuinely complex values


def test_minimize_real_loss_over_complex_variable():
    # d|z|^2 = 2z under torch's (and TF's) conjugate-Wirtinger convention: plain descent shrinks z
    z = ko.Variable(np.array([1 + 2j, -0.5 + 0.1j]), name="z")
    opt = ko.optimizers.SGD(0.1)
    opt.minimize(lambda: (z * z.conj()).real.sum(), [z])
    expected = np.array([1 + 2j, -0.5 + 0.1j]) * (1 - 2 * f32(0.1))
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-15)


def test_minimize_complex_loss_seeds_with_ones_as_tf():
    # tf_keras adagrad_test.testMinimizeSparseResourceVariable: a complex [1, 1] loss
    var = ko.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.complex64))
    x = torch.tensor([[4.0], [5.0]], dtype=torch.complex64)

    def loss():
        pred = var[[0]] @ x
        return pred * pred

    ko.optimizers.Adagrad(1.0).minimize(loss, var_list=[var])
    # gradient of row 0: conj(2 * pred) * conj(x)^T = 2 * 14 * [4, 5]
    g = np.array([112.0, 140.0])
    expected = np.array([1.0, 2.0]) - g / (np.sqrt(f32(0.1) + g * g) + 1e-7)
    np.testing.assert_allclose(var.numpy()[0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(var.numpy()[1], [3.0, 4.0])


@pytest.mark.parametrize(
    "name", sorted(n for n in SPECS if n not in TF_COMPLEX and SPECS[n].elementwise)
)
def test_complex_refused_by_optimizers_tf_does_not_define_it_for(name):
    z = ko.Variable(np.array([1 + 1j, 2 - 1j], dtype=np.complex64), name="z")
    w = ko.Variable([1.0, 1.0], name="w")
    opt = _opt(name, **SPECS[name].configs[0])
    opt.apply_gradients([(torch.ones(2), w)])
    before = (z.numpy(), w.numpy(), int(opt.iterations))
    with pytest.raises(ValueError, match=rf"Variable 'z' .*{name} does not support complex"):
        opt.apply_gradients([(torch.ones(2), w), (torch.ones(2, dtype=torch.complex64), z)])
    np.testing.assert_array_equal(z.numpy(), before[0])
    np.testing.assert_array_equal(w.numpy(), before[1])
    assert int(opt.iterations) == before[2]


# -- gradients as Python lists, empty lists ------------------------------------------------------
def test_python_list_gradients_are_converted():
    v = ko.Variable([1.0, 2.0])
    ko.optimizers.SGD(3.0).apply_gradients([([0.1, 0.1], v)])  # TF testAggregationTrue
    np.testing.assert_allclose(v.numpy(), [0.7, 1.7], rtol=1e-6)
    m = ko.Variable(np.ones((2, 2)))  # float64: the list takes the variable's dtype
    ko.optimizers.SGD(1.0).apply_gradients([([[0.5, 0.25], [0.0, 1.0]], m)])
    np.testing.assert_array_equal(m.numpy(), [[0.5, 0.75], [1.0, 0.0]])


def test_bad_list_gradient_is_refused_and_changes_nothing():
    v = ko.Variable([1.0, 2.0], name="v")
    opt = ko.optimizers.SGD(1.0)
    with pytest.raises(TypeError, match="Gradient for variable 'v' could not be converted"):
        opt.apply_gradients([([0.1, [0.2]], v)])
    with pytest.raises(ValueError, match="Gradient for variable 'v' has shape"):
        opt.apply_gradients([([0.1, 0.2, 0.3], v)])
    assert v.numpy().tolist() == [1.0, 2.0] and int(opt.iterations) == 0


@pytest.mark.parametrize("name", ["SGD", "Adam", "Nadam", "LossScaleOptimizer"])
def test_empty_apply_and_minimize_are_no_ops(name):
    opt = (
        ko.optimizers.LossScaleOptimizer(ko.optimizers.SGD())
        if name == "LossScaleOptimizer"
        else _opt(name)
    )
    assert int(opt.apply_gradients([])) == 0
    assert int(opt.minimize(lambda: torch.tensor(1.0), [])) == 0
    assert int(opt.iterations) == 0 and opt.built


def test_set_weights_empty_on_fresh_optimizer():
    opt = ko.optimizers.Adam()
    opt.set_weights([])  # TF: a fresh optimizer has no weights
    assert int(opt.iterations) == 0
    with pytest.raises(ValueError, match="before it created its weights"):
        opt.set_weights([np.array(3)])
    assert int(opt.iterations) == 0


def test_compute_gradients_has_tf_defaults():
    v = ko.Variable([1.0, 2.0])
    opt = ko.optimizers.SGD()
    pairs = opt._compute_gradients(lambda: (v * v).sum(), [v])
    assert len(pairs) == 1 and pairs[0][1] is v
    np.testing.assert_array_equal(pairs[0][0].numpy(), [2.0, 4.0])


# -- gradient_aggregator / _aggregate_gradients --------------------------------------------------
def _halve(grads_and_vars):
    return [(g * 0.5, v) for g, v in grads_and_vars]


def test_gradient_aggregator_runs_before_clipping():
    # tf_keras optimizer_v2_test.test_gradient_aggregator: loss = 2 * var, var = 2, lr = 1
    var = ko.Variable(2.0)
    ko.optimizers.SGD(1.0, gradient_aggregator=_halve).minimize(lambda: 2 * var, [var])
    assert float(var) == 1.0
    var2 = ko.Variable(2.0)
    opt = ko.optimizers.SGD(1.0, gradient_aggregator=_halve, clipvalue=0.75)
    opt.apply_gradients([(torch.tensor(2.0), var2)], experimental_aggregate_gradients=True)
    assert float(var2) == 1.25  # halved to 1.0, then clipped to 0.75
    opt.apply_gradients([(torch.tensor(1.0), var2)], experimental_aggregate_gradients=False)
    assert float(var2) == 0.5  # not halved: clipped to 0.75


def test_overridden_aggregate_gradients_hook():
    class Halving(ko.optimizers.SGD):
        def _aggregate_gradients(self, grads_and_vars):
            return _halve(grads_and_vars)

    var = ko.Variable(2.0)
    Halving(1.0).minimize(lambda: 2 * var, [var])
    assert float(var) == 1.0


# -- tape.gradient over modules and nests --------------------------------------------------------
def test_tape_gradient_accepts_modules_in_nests():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1))
    w = ko.Variable([0.5, -0.5])
    x = torch.randn(4, 3)
    with ko.GradientTape(persistent=True) as tape:
        loss = model(x).sum() + (w * w).sum()
    grads = tape.gradient(loss, model)
    expected = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    assert isinstance(grads, list) and len(grads) == 4
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
    nested = tape.gradient(loss, {"model": model, "extra": (w,)})
    assert set(nested) == {"model", "extra"} and isinstance(nested["extra"], tuple)
    assert len(nested["model"]) == 4
    torch.testing.assert_close(nested["extra"][0], 2 * w.detach())
    ko.optimizers.SGD(0.1).apply_gradients(zip(grads, model.parameters()))


# -- Nadam's decay, Keras V1 weights --------------------------------------------------------------
def test_nadam_decay_keyword_is_overwritten_by_schedule_decay():
    assert float(ko.optimizers.Nadam(decay=0.1).decay) == f32(0.004)  # TF overwrites it
    opt = ko.optimizers.Nadam(schedule_decay=0.2)
    assert isinstance(opt.decay, ko.Variable) and float(opt.decay) == f32(0.2)
    again = ko.optimizers.Nadam.from_config(opt.get_config())
    assert float(again.decay) == f32(0.2)


def test_set_weights_reads_keras_v1_weight_lists():
    a, b = ko.Variable([1.0, 2.0]), ko.Variable([3.0])
    ada = ko.optimizers.Adagrad(0.1)
    ada.apply_gradients([(torch.ones(2), a), (torch.ones(1), b)])
    ada.iterations.assign(4)
    v1 = [np.array([5.0, 6.0], np.float32), np.array([7.0], np.float32)]  # no iterations
    ada.set_weights(v1)
    assert int(ada.iterations) == 0
    np.testing.assert_array_equal(ada.get_slot(a, "accumulator").numpy(), [5.0, 6.0])
    adam = ko.optimizers.Adam()
    adam.apply_gradients([(torch.ones(2), a)])
    m, v, vhat = (np.full(2, x, np.float32) for x in (0.1, 0.2, 0.3))
    adam.set_weights([np.array(3), m, v, vhat])  # Keras V1 Adam keeps vhat slots
    assert int(adam.iterations) == 3
    np.testing.assert_array_equal(adam.get_slot(a, "v").numpy(), v)
    with pytest.raises(ValueError, match="but the optimizer was expecting 3 weights"):
        adam.set_weights([np.array(3), m])


# -- `_set_hyper` names next to the base's own attributes ------------------------------------
class DecoupledSGD(ko.Optimizer):
    """tfa's SGDW pattern: the subclass keeps its own `weight_decay` hyperparameter and applies
    it in its hook; the base's decoupled `weight_decay` feature must stay off (it is None)."""

    def __init__(self, learning_rate=0.1, weight_decay=0.5, name="DecoupledSGD", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", learning_rate)
        self._set_hyper("weight_decay", weight_decay)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        lr = self._get_hyper("learning_rate", var.dtype)
        wd = self._get_hyper("weight_decay", var.dtype)
        var.sub_(lr * (grad + wd * var))


def test_a_set_hyper_name_the_base_owns_does_not_turn_on_the_base_feature():
    v = ko.Variable([1.0], dtype=torch.float64)
    opt = DecoupledSGD()
    opt.apply_gradients([(torch.zeros(1, dtype=torch.float64), v)])
    assert v.item() == 1.0 - float(np.float32(0.1)) * float(np.float32(0.5))  # once, not twice
    assert opt.weight_decay is None and "weight_decay" not in opt.get_config()
    assert float(opt._get_hyper("weight_decay")) == 0.5


class ClassDefaultMomentum(ko.Optimizer):
    momentum = 0.0  # a plain class default of the name `_set_hyper` then uses

    def __init__(self, momentum=0.5, set_it=True, name="ClassDefaultMomentum"):
        super().__init__(name)
        self._set_hyper("learning_rate", 0.1)
        if set_it:
            self._set_hyper("momentum", momentum)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        var.sub_(self._get_hyper("momentum", var.dtype) * grad)


def test_assigning_a_set_hyper_name_with_a_class_default_reaches_the_hyperparameter():
    opt = ClassDefaultMomentum()
    opt.momentum = 0.25
    assert float(opt.momentum) == 0.25 and float(opt._get_hyper("momentum")) == 0.25
    v = ko.Variable([1.0])
    opt.apply_gradients([(torch.ones(1), v)])
    assert v.item() == 0.75
    # an instance that never set it still reads the class default
    assert ClassDefaultMomentum(set_it=False).momentum == 0.0


@pytest.mark.parametrize("copier", [copy.deepcopy, copy.copy], ids=["deepcopy", "copy"])
def test_a_copy_keeps_a_value_assigned_into_the_hyperparameter_variable(copier):
    opt = ko.optimizers.Adam(0.001)
    opt.learning_rate.assign(0.5)  # not read back by anything yet
    twin = copier(opt)
    assert twin.get_config()["learning_rate"] == 0.5
    assert float(twin.learning_rate) == 0.5
