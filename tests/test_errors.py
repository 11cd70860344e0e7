"""Bad input gets a clear error naming the culprit, and a failed step changes nothing."""

from __future__ import annotations

import pytest
import torch

import kerasopt as ko
from tests.helpers import make_optimizer
from tests.specs import case_ids, cases


def _snapshot(opt, variables):
    state = [v.detach().clone() for v in variables]
    state += [w.detach().clone() for w in opt.variables()]
    return state, list(opt.get_slot_names()), len(opt.variables())


def _assert_unchanged(opt, variables, snap):
    state, names, count = snap
    assert len(opt.variables()) == count
    assert opt.get_slot_names() == names
    now = [v.detach() for v in variables] + [w.detach() for w in opt.variables()]
    for a, b in zip(state, now):
        assert torch.equal(a, b)


def _named(name, value):
    return ko.Variable(value, name=name)


BAD_STEPS = {
    "shape": (
        lambda a, b, new: [(torch.ones(3), a), (torch.ones(5), b)],
        ValueError,
        r"Gradient for variable 'b' has shape \(5,\), expected \(2,\)",
    ),
    "dtype": (
        lambda a, b, new: [(torch.ones(3), a), (torch.ones(2, dtype=torch.float64), b)],
        ValueError,
        r"Gradient for variable 'b' has dtype torch.float64, expected torch.float32",
    ),
    "duplicate": (
        lambda a, b, new: [(torch.ones(3), a), (torch.ones(3), a)],
        ValueError,
        r"Variable 'a' appears more than once",
    ),
    "all_none": (
        lambda a, b, new: [(None, a), (None, b)],
        ValueError,
        r"No gradients provided for any variable: \('a', 'b'\)",
    ),
    "not_a_pair": (
        lambda a, b, new: [(torch.ones(3), a), torch.ones(2)],
        TypeError,
        r"item 1 must be a \(gradient, variable\) pair",
    ),
    "not_a_tensor_var": (
        lambda a, b, new: [(torch.ones(3), a), (torch.ones(2), [1.0, 2.0])],
        TypeError,
        r"item 1: the variable must be a torch tensor",
    ),
    "bad_grad_type": (
        lambda a, b, new: [(torch.ones(3), a), ("not a gradient", b)],
        TypeError,
        r"Gradient for variable 'b' must be a tensor, IndexedSlices or None",
    ),
    "integer_var": (
        lambda a, b, new: [
            (torch.ones(3), a),
            (torch.ones(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)),
        ],
        ValueError,
        r"has dtype torch.int64; optimizers update floating variables only",
    ),
    "sparse_out_of_range": (
        lambda a, b, new: [
            (torch.ones(3), a),
            (ko.IndexedSlices(torch.ones(1, 2), torch.tensor([4]), (3, 2)), new),
        ],
        ValueError,
        r"Sparse gradient for variable 'new' has indices outside \[0, 3\)",
    ),
    "sparse_rows": (
        lambda a, b, new: [
            (torch.ones(3), a),
            (ko.IndexedSlices(torch.ones(1, 5), torch.tensor([0]), (3, 5)), new),
        ],
        ValueError,
        r"Sparse gradient for variable 'new' has value rows of shape \(5,\)",
    ),
    "new_var_bad_shape": (
        lambda a, b, new: [(torch.ones(3), a), (torch.ones(4), new)],
        ValueError,
        r"Gradient for variable 'new' has shape \(4,\), expected \(3, 2\)",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_STEPS))
@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_failed_step_raises_and_changes_nothing(spec, config, bad):
    a, b = _named("a", [1.0, 2.0, 3.0]), _named("b", [4.0, 5.0])
    new = _named("new", torch.ones(3, 2))
    opt = make_optimizer(spec, config)
    opt.apply_gradients([(torch.full((3,), 0.5), a), (torch.full((2,), -0.5), b)])
    snap = _snapshot(opt, [a, b, new])
    make_pairs, exc, match = BAD_STEPS[bad]
    with pytest.raises(exc, match=match):
        opt.apply_gradients(make_pairs(a, b, new))
    _assert_unchanged(opt, [a, b, new], snap)
    with pytest.raises(KeyError, match="has no slots"):
        if opt.get_slot_names():
            opt.get_slot(new, opt.get_slot_names()[0])
        else:
            raise KeyError("has no slots")


@pytest.mark.parametrize(("spec", "config"), cases(), ids=case_ids())
def test_failing_hyperparameter_callable_changes_nothing(spec, config):
    a = _named("a", [1.0, 2.0])
    opt = make_optimizer(spec, config)
    opt.apply_gradients([(torch.ones(2), a)])
    snap = _snapshot(opt, [a])

    def broken():
        raise RuntimeError("schedule service down")

    opt.learning_rate = broken
    with pytest.raises(RuntimeError, match="schedule service down"):
        opt.apply_gradients([(torch.ones(2), a)])
    _assert_unchanged(opt, [a], snap)


def test_callable_returning_garbage_is_named():
    a = _named("a", [1.0])
    opt = ko.optimizers.SGD(lambda: "fast")
    with pytest.raises(
        ValueError, match="Hyperparameter `learning_rate` is a callable that returned 'fast'"
    ):
        opt.apply_gradients([(torch.ones(1), a)])
    assert int(opt.iterations) == 0


def test_non_leaf_variable_is_rejected():
    base = torch.ones(2, requires_grad=True)
    derived = base * 2
    with pytest.raises(ValueError, match="is not a leaf tensor"):
        ko.optimizers.SGD().apply_gradients([(torch.ones(2), derived)])


def test_grads_and_vars_not_iterable():
    with pytest.raises(TypeError, match="must be an iterable of \\(gradient, variable\\) pairs"):
        ko.optimizers.SGD().apply_gradients(5)


# -- constructor validation ------------------------------------------------------------------
CTOR_ERRORS = [
    (
        lambda: ko.optimizers.Adam(foo=1),
        TypeError,
        "Unexpected keyword argument passed to optimizer: foo",
    ),
    (
        lambda: ko.optimizers.SGD(clipnorm=-1.0),
        ValueError,
        "Expected clipnorm >= 0, received: -1.0",
    ),
    (lambda: ko.optimizers.SGD(clipvalue=-1.0), ValueError, "Expected clipvalue >= 0"),
    (lambda: ko.optimizers.SGD(global_clipnorm=-2), ValueError, "Expected global_clipnorm >= 0"),
    (lambda: ko.optimizers.SGD(decay=-0.1), ValueError, "Expected decay >= 0"),
    (lambda: ko.optimizers.SGD(lr=-0.1), ValueError, "Expected lr >= 0"),
    (lambda: ko.optimizers.SGD(-0.1), ValueError, "Expected learning_rate >= 0"),
    (
        lambda: ko.optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0),
        ValueError,
        "Cannot accept both `clipnorm` and `global_clipnorm`",
    ),
    (lambda: ko.optimizers.SGD(momentum=1.5), ValueError, r"`momentum` must be between \[0, 1\]"),
    (lambda: ko.optimizers.SGD(momentum=-0.1), ValueError, r"`momentum` must be between \[0, 1\]"),
    (
        lambda: ko.optimizers.Adam(learning_rate="fast"),
        ValueError,
        "Argument `learning_rate` should be float",
    ),
    (
        lambda: ko.optimizers.Adam(gradient_accumulation_steps=1),
        ValueError,
        "`gradient_accumulation_steps` must be an integer >= 2",
    ),
    (
        lambda: ko.optimizers.Adam(use_ema=True, ema_momentum=1.5),
        ValueError,
        r"`ema_momentum` must be in the range \[0, 1\]",
    ),
    (
        lambda: ko.optimizers.Adam(use_ema=True, ema_overwrite_frequency=0.5),
        ValueError,
        "`ema_overwrite_frequency` must be an integer >= 1 or None",
    ),
    (
        lambda: ko.optimizers.Adam(weight_decay="x"),
        ValueError,
        "Argument `weight_decay` must be a float",
    ),
]


@pytest.mark.parametrize(("make", "exc", "match"), CTOR_ERRORS, ids=[m for _, _, m in CTOR_ERRORS])
def test_constructor_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_setting_invalid_hyperparameter_names_it():
    opt = ko.optimizers.SGD(momentum=0.5)
    with pytest.raises(ValueError, match=r"`momentum` must be between \[0, 1\]"):
        opt.momentum = 2.0
    assert float(opt.momentum) == 0.5


def test_number_learning_rate_on_schedule_optimizer_is_type_error():
    sched = ko.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = ko.optimizers.Adam(sched)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.01
    opt.learning_rate = ko.optimizers.schedules.ExponentialDecay(0.2, 10, 0.5)


def test_subclass_must_call_super_first():
    class Broken(ko.optimizers.Optimizer):
        def __init__(self):
            self.foo = 1
            super().__init__("Broken")

    with pytest.raises(RuntimeError, match=r"forgot to call `super\(\).__init__\(\)`"):
        Broken()


@pytest.mark.parametrize("attribute", ["learning_rate", "epsilon"])  # a Hyper, a Param
def test_a_declared_attribute_set_before_super_init_is_refused_clearly(attribute):
    class Early(ko.optimizers.Adam):
        def __init__(self):
            setattr(self, attribute, 0.1)
            super().__init__()

    with pytest.raises(
        RuntimeError, match=rf"forgot to call `super\(\).__init__\(\)` .*{attribute}"
    ):
        Early()


def test_get_slot_errors_name_variable_and_slot():
    v = _named("kernel", [1.0])
    opt = ko.optimizers.Adam()
    with pytest.raises(KeyError, match="Variable kernel has no slots"):
        opt.get_slot(v, "m")
    opt.apply_gradients([(torch.ones(1), v)])
    with pytest.raises(KeyError, match="has no slot 'nope' for variable 'kernel'"):
        opt.get_slot(v, "nope")


def test_set_weights_errors_and_nothing_assigned():
    v = _named("v", [1.0, 2.0])
    opt = ko.optimizers.Adam()
    with pytest.raises(ValueError, match="before it created its weights"):
        opt.set_weights([0])
    opt.apply_gradients([(torch.ones(2), v)])
    before = opt.get_weights()
    with pytest.raises(
        ValueError, match="with a weight list of length 2, but the optimizer was expecting 3"
    ):
        opt.set_weights(before[:2])
    bad = [before[0], before[1], before[2].reshape(2, 1)]
    with pytest.raises(
        ValueError, match=r"shape \(2,\) not compatible with provided weight shape \(2, 1\)"
    ):
        opt.set_weights(bad)
    for a, b in zip(before, opt.get_weights()):
        assert (a == b).all()


def test_deserialize_rejects_unknown_and_malformed():
    with pytest.raises(ValueError, match=r"Unknown optimizer: 'os\.system'"):
        ko.optimizers.deserialize({"class_name": "os.system", "config": {}})
    with pytest.raises(ValueError, match="expects a dict"):
        ko.optimizers.deserialize("adam")
    with pytest.raises(ValueError, match="needs a string 'class_name'"):
        ko.optimizers.deserialize({"config": {}})
    with pytest.raises(ValueError, match="Invalid config for optimizer 'Adam'"):
        ko.optimizers.deserialize({"class_name": "Adam", "config": {"bogus": 1}})
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier: 'nope'"):
        ko.optimizers.get("nope")
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier: 3"):
        ko.optimizers.get(3)


def test_an_optimizer_that_never_calls_super_init_is_refused_clearly():
    class NoSuper(ko.optimizers.Optimizer):
        def __init__(self, lr=0.1):
            self.my_lr = lr

        def update(self, var, grad, *, c):
            var.sub_(grad)

    opt = NoSuper()
    v = ko.Variable([1.0])
    for call in (
        lambda: opt.apply_gradients([(torch.ones(1), v)]),
        lambda: opt.minimize(lambda: (v * v).sum(), [v]),
        lambda: opt.build([v]),
    ):
        with pytest.raises(RuntimeError, match=r"forgot to call `super\(\).__init__\(\)`"):
            call()
    assert v.item() == 1.0
