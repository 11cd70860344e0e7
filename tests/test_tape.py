"""Tests for kerasopt.tape.GradientTape."""

import math
import re
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch

from kerasopt.tape import GradientTape, UnconnectedGradients
from kerasopt.variables import Variable

NON_PERSISTENT = re.escape(
    "A non-persistent GradientTape can only be used to compute one set of gradients (or jacobians)"
)
NOT_RECORDING = re.escape("Tape is not recording.")


def _seed_loss() -> tuple[Variable, Variable, GradientTape, torch.Tensor]:
    """TensorFlow's documented example (docs/getting-started.md): loss = 3 * var1 * var1 + 2 * var2 * var2 at (2, 5)."""
    var1, var2 = Variable(2.0, name="var1"), Variable(5.0, name="var2")
    with GradientTape() as tape:
        loss = 3 * var1 * var1 + 2 * var2 * var2
    return var1, var2, tape, loss


# --- gradient values and structure ------------------------------------------------------------


def test_seed_example_gradients() -> None:
    var1, var2, tape, loss = _seed_loss()
    assert loss.item() == 62.0
    grads = tape.gradient(loss, [var1, var2])
    assert isinstance(grads, list)
    assert [g.item() for g in grads] == [12.0, 20.0]
    assert all(type(g) is torch.Tensor and not g.requires_grad for g in grads)


def test_single_tensor_source_gives_single_tensor() -> None:
    var1, _, tape, loss = _seed_loss()
    grad = tape.gradient(loss, var1)
    assert isinstance(grad, torch.Tensor) and grad.item() == 12.0


def test_nested_sources_keep_structure() -> None:
    pair = namedtuple("pair", ["first", "second"])
    var1, var2, tape, loss = _seed_loss()
    grads = tape.gradient(
        loss,
        {
            "a": var1,
            "b": [var2, (var1,)],
            "c": pair(var2, var1),
            "d": OrderedDict(z=var1),
        },
    )
    assert set(grads) == {"a", "b", "c", "d"}
    assert grads["a"].item() == 12.0
    assert isinstance(grads["b"], list) and isinstance(grads["b"][1], tuple)
    assert grads["b"][0].item() == 20.0 and grads["b"][1][0].item() == 12.0
    assert isinstance(grads["c"], pair)
    assert (grads["c"].first.item(), grads["c"].second.item()) == (20.0, 12.0)
    assert isinstance(grads["d"], OrderedDict) and grads["d"]["z"].item() == 12.0


def test_tuple_and_iterator_sources() -> None:
    model = torch.nn.Linear(2, 1)
    x = torch.tensor([[1.0, 2.0]])
    with GradientTape(persistent=True) as tape:
        loss = model(x).sum()
    grads = tape.gradient(loss, model.parameters())  # an iterator is read into a list
    assert isinstance(grads, list) and len(grads) == 2
    np.testing.assert_array_equal(grads[0].numpy(), [[1.0, 2.0]])
    np.testing.assert_array_equal(grads[1].numpy(), [1.0])
    as_tuple = tape.gradient(loss, (model.weight, model.bias))
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2


def test_matches_plain_autograd_bitwise() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(5, 4)
    params = list(model.parameters())
    expected = torch.autograd.grad(model(x).pow(2).mean(), params)
    with GradientTape() as tape:
        loss = model(x).pow(2).mean()
    for got, want in zip(tape.gradient(loss, params), expected):
        assert torch.equal(got, want)


def test_non_scalar_and_list_targets_are_summed() -> None:
    x = Variable([1.0, 2.0])
    with GradientTape(persistent=True) as tape:
        y = x * x
        z = 3.0 * x
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(tape.gradient([y, z], x).numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(tape.gradient({"y": y, "z": z}, x).numpy(), [5.0, 7.0])


def test_output_gradients_scale_the_target() -> None:
    x = Variable([1.0, 2.0])
    with GradientTape(persistent=True) as tape:
        y = x * x
        z = 3.0 * x
    grad = tape.gradient(y, x, output_gradients=torch.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(grad.numpy(), [2.0, 40.0])
    # One weight per target, None for ones; plain lists are converted to the target's dtype.
    grad = tape.gradient([y, z], x, output_gradients=[[0.5, 0.5], None])
    np.testing.assert_array_equal(grad.numpy(), [4.0, 5.0])


def test_output_gradients_must_match_target() -> None:
    x = Variable([1.0, 2.0])
    with GradientTape(persistent=True) as tape:
        y = x * x
    with pytest.raises(ValueError, match=re.escape("output_gradients has shape (3,) but target")):
        tape.gradient(y, x, output_gradients=torch.ones(3))
    with pytest.raises(ValueError, match=re.escape("output_gradients[1] has shape (1,)")):
        tape.gradient([y, y], x, output_gradients=[torch.ones(2), torch.ones(1)])
    with pytest.raises(ValueError, match="must be a sequence of 2 entries like target"):
        tape.gradient([y, y], x, output_gradients=[torch.ones(2)])
    with pytest.raises(ValueError, match="must be a mapping with the keys of target"):
        tape.gradient({"a": y}, x, output_gradients={"b": torch.ones(2)})


# --- unconnected sources ----------------------------------------------------------------------------


def test_unconnected_sources_give_none_or_zeros() -> None:
    var1, var2 = Variable(2.0), Variable([1.0, 2.0], name="unused")
    constant = torch.tensor([4.0, 5.0])  # does not require grad
    with GradientTape(persistent=True) as tape:
        loss = var1 * var1
    assert tape.gradient(loss, [var1, var2, constant])[1:] == [None, None]
    for flag in ("zero", "ZERO", UnconnectedGradients.ZERO):
        g1, g2, g3 = tape.gradient(loss, [var1, var2, constant], unconnected_gradients=flag)
        assert g1.item() == 4.0
        assert torch.equal(g2, torch.zeros(2)) and torch.equal(g3, torch.zeros(2))
    for flag in ("None", UnconnectedGradients.NONE):
        assert tape.gradient(loss, var2, unconnected_gradients=flag) is None


def test_unknown_unconnected_gradients_value() -> None:
    var1, _, tape, loss = _seed_loss()
    with pytest.raises(ValueError, match="Unknown value for unconnected_gradients: 'zeros'"):
        tape.gradient(loss, var1, unconnected_gradients="zeros")
    # A rejected call does not spend the tape.
    assert tape.gradient(loss, var1).item() == 12.0


def test_target_that_requires_no_grad_gives_unconnected_results() -> None:
    var1 = Variable(2.0)
    with GradientTape() as tape:
        loss = torch.tensor(3.0) * 2.0
    assert tape.gradient(loss, [var1]) == [None]
    with GradientTape() as tape:
        loss = torch.tensor(3.0) * 2.0
    assert torch.equal(tape.gradient(loss, var1, unconnected_gradients="zero"), torch.zeros(()))


def test_target_and_sources_must_be_tensors() -> None:
    var1, var2, tape, loss = _seed_loss()
    with pytest.raises(ValueError, match=r"target must be a torch.Tensor, got float"):
        tape.gradient(62.0, var1)
    with pytest.raises(ValueError, match=r"target\[1\] must be a torch.Tensor, got NoneType"):
        tape.gradient([loss, None], var1)
    with pytest.raises(TypeError, match=r"sources\[1\] must be a torch.Tensor, got float"):
        tape.gradient(loss, [var1, 5.0])
    with pytest.raises(TypeError, match=r"sources\['b'\]\[0\] must be a torch.Tensor, got str"):
        tape.gradient(loss, {"a": var1, "b": ["var2"]})
    assert tape.gradient(loss, var2).item() == 20.0  # the errors did not spend the tape


# --- persistence ----------------------------------------------------------------------------------


def test_non_persistent_tape_computes_one_set_of_gradients() -> None:
    var1, var2, tape, loss = _seed_loss()
    tape.gradient(loss, var1)
    with pytest.raises(RuntimeError, match=NON_PERSISTENT):
        tape.gradient(loss, var2)


def test_persistent_tape_computes_several() -> None:
    var1, var2 = Variable(2.0), Variable(5.0)
    with GradientTape(persistent=True) as tape:
        loss = 3 * var1 * var1 + 2 * var2 * var2
        other = var1 * var2
    assert tape.persistent
    assert tape.gradient(loss, var1).item() == 12.0
    assert tape.gradient(loss, var2).item() == 20.0
    assert [g.item() for g in tape.gradient(other, [var1, var2])] == [5.0, 2.0]


def test_spent_tape_reenters_fresh() -> None:
    var1, _, tape, loss = _seed_loss()
    tape.gradient(loss, var1)
    with tape:
        loss = var1 * 4.0
    assert tape.gradient(loss, var1).item() == 4.0
    assert tape.watched_variables() == (var1,)


def test_reentering_an_active_tape_raises() -> None:
    with GradientTape() as tape, pytest.raises(RuntimeError, match="Tape is still recording"):
        tape.__enter__()


def test_gradient_inside_its_own_block() -> None:
    var1 = Variable(2.0)
    with GradientTape() as tape:
        loss = var1 * var1 * var1
        grad = tape.gradient(loss, var1)
        # A spent non-persistent tape stops tracking accesses, as TF's stops recording.
        _ = Variable(1.0, name="late") * 2.0
    assert grad.item() == 12.0
    assert not grad.requires_grad  # no enclosing tape, so the gradient is not recorded
    assert tape.watched_variables() == (var1,)


# --- watch -------------------------------------------------------------------------------------------


def test_watch_plain_tensor() -> None:
    x = torch.tensor([1.0, 2.0])
    with GradientTape() as tape:
        tape.watch(x)
        assert x.requires_grad
        y = (x * x * x).sum()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [3.0, 12.0])
    assert not x.requires_grad  # given back once the tape is spent


def test_unwatched_plain_tensor_has_no_gradient() -> None:
    x = torch.tensor(3.0)
    with GradientTape() as tape:
        y = x * x
    assert tape.gradient(y, x) is None


def test_watch_nested_structure_and_non_trainable_variable() -> None:
    frozen = Variable(3.0, trainable=False, name="frozen")
    x = torch.tensor(2.0)
    with GradientTape(persistent=True) as tape:
        tape.watch({"x": x, "more": [frozen]})
        y = x * frozen
    assert tape.watched_variables() == (x, frozen)
    assert [g.item() for g in tape.gradient(y, [x, frozen])] == [3.0, 2.0]
    assert frozen.requires_grad  # a persistent tape keeps them until reset()
    tape.reset()
    assert not frozen.trainable and not x.requires_grad


def test_watch_rejects_integer_tensors_atomically() -> None:
    x, ints = torch.tensor(1.0), torch.tensor([1, 2])
    tape = GradientTape()
    with pytest.raises(ValueError, match=r"watch\(tensor\[1\]\): cannot watch a tensor of dtype"):
        tape.watch([x, ints])
    assert not x.requires_grad and tape.watched_variables() == ()
    with pytest.raises(ValueError, match=re.escape("torch.int64")):
        tape.watch(ints)
    with pytest.raises(TypeError, match=r"expected a torch.Tensor, got float"):
        tape.watch(1.0)


def test_watch_intermediate_tensor() -> None:
    x = Variable(2.0)
    with GradientTape() as tape:
        y = x * x
        tape.watch(y)  # already requires grad: only listed
        z = y * y
    assert tape.gradient(z, y).item() == 8.0


def test_watch_accessed_variables_false() -> None:
    a, b = Variable(2.0, name="a"), Variable(3.0, name="b")
    with GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(a)
        y = a * a
        z = b * b * b
        hidden = y * 2.0
    assert tape.watched_variables() == (a,)
    ga, gb, gh = tape.gradient(y + z + hidden, [a, b, hidden])
    assert ga.item() == 12.0
    assert gb is None  # b was not watched, as in TF
    assert gh.item() == 1.0  # intermediate (non-leaf) sources are on the tape


# --- watched_variables -------------------------------------------------------------------------


def test_watched_variables_in_first_use_order() -> None:
    a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
    frozen = Variable(3.0, name="frozen", trainable=False)
    plain = torch.tensor(4.0)
    with GradientTape() as tape:
        _ = b * a + b * frozen + plain * a
        assert a.shape == ()  # attribute reads are not uses
    assert tape.watched_variables() == (b, a)


def test_watched_variables_explicit_first_then_accessed() -> None:
    a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
    x = torch.tensor(5.0)
    with GradientTape() as tape:
        tape.watch(x)
        y = torch.cat([a.reshape(1), (x * b).reshape(1)]).sum()
        tape.watch(a)  # already seen: not duplicated
    assert tape.watched_variables() == (x, a, b)
    assert [g.item() for g in tape.gradient(y, [a, b, x])] == [1.0, 5.0, 2.0]


def test_watched_variables_of_a_module() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    model[2].bias.requires_grad_(False)
    with GradientTape() as tape:
        model(torch.ones(2, 3)).sum()
    expected = [model[0].weight, model[0].bias, model[2].weight]
    assert list(tape.watched_variables()) == expected


def test_watched_variables_outside_recording_are_not_tracked() -> None:
    a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
    _ = a * 2.0  # before the tape
    with GradientTape() as tape:
        with torch.no_grad():
            _ = a * 3.0
        with tape.stop_recording():
            _ = a * 4.0
        _ = b * 2.0
    _ = a * 5.0  # after the tape
    assert tape.watched_variables() == (b,)


def test_reset_clears_watched_state() -> None:
    a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
    x = torch.tensor(1.0)
    with GradientTape() as tape:
        tape.watch(x)
        _ = a * x
        tape.reset()
        assert not x.requires_grad
        y = b * 2.0
    assert tape.watched_variables() == (b,)
    assert tape.gradient(y, b).item() == 2.0


# --- stop_recording -------------------------------------------------------------------------------


def test_stop_recording_ops_do_not_contribute() -> None:
    x = Variable(3.0)
    with GradientTape() as tape:
        y = x * x
        with tape.stop_recording():
            assert not torch.is_grad_enabled()
            z = x * 10.0
        assert torch.is_grad_enabled()
        total = y + z
    assert total.item() == 39.0
    assert tape.gradient(total, x).item() == 6.0


def test_stop_recording_requires_an_active_tape() -> None:
    tape = GradientTape()
    with pytest.raises(RuntimeError, match=NOT_RECORDING), tape.stop_recording():
        pass
    with (
        tape,
        tape.stop_recording(),
        pytest.raises(RuntimeError, match=NOT_RECORDING),
        tape.stop_recording(),
    ):
        pass
    with pytest.raises(RuntimeError, match=NOT_RECORDING), tape.stop_recording():
        pass


# --- grad mode ------------------------------------------------------------------------------------


def test_tape_enables_and_restores_grad_mode() -> None:
    x = Variable(2.0)
    with torch.no_grad():
        with GradientTape() as tape:
            assert torch.is_grad_enabled()
            y = x * x
        assert not torch.is_grad_enabled()
        grad = tape.gradient(y, x)
    assert grad.item() == 4.0


def test_exception_inside_tape_restores_state() -> None:
    x = Variable(2.0)
    tape = GradientTape()
    with torch.no_grad():
        with pytest.raises(KeyError), tape:
            _ = x * x
            raise KeyError("boom")
        assert not torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match=NOT_RECORDING), tape.stop_recording():
        pass
    _ = Variable(1.0, name="after") * 2.0
    assert tape.watched_variables() == (x,)


# --- sparse -----------------------------------------------------------------------------------------


def test_sparse_gradient_from_embedding() -> None:
    embedding = torch.nn.Embedding(5, 3, sparse=True)
    ids = torch.tensor([1, 1, 3])
    with GradientTape() as tape:
        loss = embedding(ids).sum()
    grad = tape.gradient(loss, embedding.weight)
    assert grad.is_sparse and grad.layout == torch.sparse_coo
    expected = np.zeros((5, 3), dtype=np.float32)
    expected[1] = 2.0
    expected[3] = 1.0
    np.testing.assert_array_equal(grad.to_dense().numpy(), expected)


# --- higher order -------------------------------------------------------------------------------


@pytest.mark.parametrize("outer_persistent", [False, True])
def test_second_order_with_nested_tapes(outer_persistent: bool) -> None:
    x = Variable(3.0)
    with GradientTape(persistent=outer_persistent) as outer:
        with GradientTape() as inner:
            y = x * x * x
        dy_dx = inner.gradient(y, x)
    assert dy_dx.item() == 27.0 and dy_dx.requires_grad
    assert outer.gradient(dy_dx, x).item() == 18.0


def test_second_order_through_intermediate_results() -> None:
    # z = (2 sin x)^2: dz/dx = 4 sin(2x), d2z/dx2 = 8 cos(2x). The second derivative goes back
    # through the first graph, so the inner gradient must keep it.
    x = Variable(0.3, dtype="float64")
    with GradientTape() as outer:
        with GradientTape() as inner:
            y = torch.sin(x) * 2.0
            z = y * y
        dz_dx = inner.gradient(z, x)
    d2z_dx2 = outer.gradient(dz_dx, x)
    assert dz_dx.item() == pytest.approx(4.0 * math.sin(0.6), rel=1e-12)
    assert d2z_dx2.item() == pytest.approx(8.0 * math.cos(0.6), rel=1e-12)


def test_second_order_with_one_persistent_tape() -> None:
    x = torch.tensor(2.0)
    with GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = x * x * x
        dy_dx = tape.gradient(y, x)  # recorded: this persistent tape is still recording
    assert dy_dx.item() == 12.0
    assert tape.gradient(dy_dx, x).item() == 12.0


def test_repr() -> None:
    tape = GradientTape(persistent=True)
    assert repr(tape) == "<kerasopt.GradientTape persistent=True recording=False>"
    with tape:
        assert repr(tape) == "<kerasopt.GradientTape persistent=True recording=True>"
