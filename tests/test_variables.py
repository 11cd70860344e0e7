"""Tests for kerasopt.variables.Variable."""

import copy
import io
import re
import warnings

import numpy as np
import pytest
import torch

from kerasopt.variables import Variable

# --- construction and dtypes -------------------------------------------------------------------


def test_python_float_is_float32() -> None:
    v = Variable(1.5)
    assert v.dtype == torch.float32
    assert v.shape == ()
    assert v.item() == 1.5
    assert v.requires_grad and v.trainable
    assert v.is_leaf and v.grad_fn is None


def test_nested_float_sequence_is_float32() -> None:
    v = Variable([[1.0, 2.0], [3.0, 4.0]])
    assert v.dtype == torch.float32
    assert v.shape == (2, 2)
    np.testing.assert_array_equal(v.numpy(), [[1.0, 2.0], [3.0, 4.0]])


def test_python_float_is_float32_even_with_float64_default_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert Variable(0.1).dtype == torch.float32
        assert Variable([0.1, 0.2]).dtype == torch.float32
        # Rounded once from the Python double, as tf.Variable(0.1) is.
        assert Variable(0.1).item() == float(np.float32(0.1))
    finally:
        torch.set_default_dtype(previous)


def test_python_int_is_int64_and_must_not_be_trainable() -> None:
    step = Variable(3, trainable=False, name="step")
    assert step.dtype == torch.int64
    assert not step.trainable and not step.requires_grad
    with pytest.raises(
        ValueError, match=r"Variable 'step' has dtype int64 and cannot be trainable"
    ):
        Variable(3, name="step")


def test_bool_and_integer_array_must_not_be_trainable() -> None:
    assert Variable(True, trainable=False).dtype == torch.bool
    with pytest.raises(ValueError, match=r"'flag' has dtype bool"):
        Variable([True, False], name="flag")
    with pytest.raises(ValueError, match=r"'counts' has dtype int32"):
        Variable(np.array([1, 2], dtype=np.int32), name="counts")


def test_numpy_arrays_keep_their_dtype() -> None:
    assert Variable(np.zeros(3)).dtype == torch.float64
    assert Variable(np.zeros(3, dtype=np.float32)).dtype == torch.float32
    assert Variable(np.zeros(3, dtype=np.float16)).dtype == torch.float16
    assert Variable(np.array([1, 2], dtype=np.int32), trainable=False).dtype == torch.int32
    scalar = Variable(np.float64(2.5))
    assert scalar.dtype == torch.float64 and scalar.shape == () and scalar.item() == 2.5


def test_tensors_keep_their_dtype_unless_given() -> None:
    source = torch.tensor([1.0, 2.0], dtype=torch.float16)
    assert Variable(source).dtype == torch.float16
    assert Variable(source, dtype="float64").dtype == torch.float64
    assert Variable(source, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("float64", torch.float64),
        ("torch.float64", torch.float64),
        (torch.bfloat16, torch.bfloat16),
        (np.float64, torch.float64),
        (np.dtype("float16"), torch.float16),
    ],
)
def test_dtype_argument(dtype: object, expected: torch.dtype) -> None:
    v = Variable([0.1, 0.5], dtype=dtype)  # type: ignore[arg-type]
    assert v.dtype == expected
    assert v.trainable
    # Python numbers convert straight to the dtype: one rounding.
    assert v[0].item() == torch.tensor(0.1, dtype=expected).item()


@pytest.mark.parametrize("dtype", ["floaty", "Parameter", object()])
def test_unknown_dtype_raises_type_error(dtype: object) -> None:
    with pytest.raises(TypeError, match="dtype"):
        Variable(1.0, dtype=dtype)  # type: ignore[arg-type]


def test_callable_initial_value() -> None:
    v = Variable(lambda: torch.full((2,), 7.0), name="lazy")
    assert v.name == "lazy"
    np.testing.assert_array_equal(v.numpy(), [7.0, 7.0])
    assert Variable(lambda: 2.0).dtype == torch.float32


def test_initial_value_is_copied_not_aliased() -> None:
    source = torch.tensor([1.0, 2.0])
    array = np.array([1.0, 2.0])
    from_tensor, from_array = Variable(source), Variable(array)
    source.add_(10.0)
    array += 10.0
    np.testing.assert_array_equal(from_tensor.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(from_array.numpy(), [1.0, 2.0])
    from_tensor.assign_add(1.0)
    np.testing.assert_array_equal(source.numpy(), [11.0, 12.0])


def test_initial_value_from_graph_tensor_is_a_fresh_leaf() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    v = Variable(x * 3.0)
    assert v.is_leaf and v.grad_fn is None and v.requires_grad
    assert v.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    np.testing.assert_array_equal(v.numpy(), [3.0, 6.0])


def test_constraint_and_name_validation() -> None:
    def clip(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0.0, 1.0)

    assert Variable(1.0, constraint=clip).constraint is clip
    assert Variable(1.0).constraint is None
    with pytest.raises(
        ValueError, match=re.escape("The `constraint` argument must be a callable.")
    ):
        Variable(1.0, constraint=3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a string"):
        Variable(1.0, name=3)  # type: ignore[arg-type]


# --- attributes ---------------------------------------------------------------------------------


def test_name_defaults_to_variable_and_is_assignable() -> None:
    v = Variable(1.0)
    assert v.name == "Variable"
    v.name = "renamed"
    assert v.name == "renamed"
    with pytest.raises(TypeError, match="name must be a string"):
        v.name = None  # type: ignore[assignment]


def test_trainable_mirrors_requires_grad() -> None:
    v = Variable([1.0, 2.0], trainable=False)
    assert not v.trainable and not v.requires_grad
    v.trainable = True
    assert v.requires_grad
    v.requires_grad_(False)
    assert not v.trainable
    step = Variable(0, trainable=False, name="step")
    with pytest.raises(ValueError, match=r"'step' has dtype int64"):
        step.trainable = True
    assert not step.requires_grad


def test_shape_dtype_device_come_from_the_tensor() -> None:
    v = Variable(np.zeros((2, 3), dtype=np.float32))
    assert v.shape == torch.Size([2, 3])
    assert v.dtype == torch.float32
    assert v.device == torch.device("cpu")
    assert isinstance(v, torch.nn.Parameter) and isinstance(v, torch.Tensor)


# --- assign / assign_add / assign_sub -------------------------------------------------------------


def test_assign_family_values_and_return_self() -> None:
    v = Variable([1.0, 2.0], name="v")
    assert v.assign([3.0, 4.0]) is v
    np.testing.assert_array_equal(v.numpy(), [3.0, 4.0])
    assert v.assign_add(np.array([0.5, 0.25])) is v
    np.testing.assert_array_equal(v.numpy(), [3.5, 4.25])
    assert v.assign_sub(torch.tensor([1.5, 0.25])) is v
    np.testing.assert_array_equal(v.numpy(), [2.0, 4.0])
    v.assign(7.0)  # a scalar broadcasts
    np.testing.assert_array_equal(v.numpy(), [7.0, 7.0])
    assert v.dtype == torch.float32 and v.is_leaf and v.requires_grad


def test_assign_casts_to_variable_dtype() -> None:
    v = Variable([0.0, 0.0])
    v.assign(torch.tensor([0.1, 0.2], dtype=torch.float64))
    assert v.dtype == torch.float32
    np.testing.assert_array_equal(v.numpy(), np.array([0.1, 0.2], dtype=np.float32))
    step = Variable(5, trainable=False)
    step.assign_add(2)
    step.assign_sub(np.int64(1))
    assert step.dtype == torch.int64 and step.item() == 6


def test_assign_broadcasts_rows() -> None:
    v = Variable(np.zeros((2, 3), dtype=np.float32))
    v.assign_add([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(v.numpy(), [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    ("method", "verb"), [("assign", "assign"), ("assign_add", "add"), ("assign_sub", "subtract")]
)
def test_shape_mismatch_raises_and_changes_nothing(method: str, verb: str) -> None:
    v = Variable([1.0, 2.0], name="var1")
    expected = re.escape(f"Cannot {verb} a value of shape (3,) to variable 'var1' of shape (2,)")
    with pytest.raises(ValueError, match=expected):
        getattr(v, method)([1.0, 2.0, 3.0])
    # A value with more dimensions than the variable does not broadcast into it either.
    with pytest.raises(
        ValueError, match=re.escape("shape (2, 2) to variable 'var1' of shape (2,)")
    ):
        getattr(v, method)(torch.ones(2, 2))
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_assign_from_an_overlapping_view_of_itself() -> None:
    v = Variable([0.0, 1.0, 2.0])
    v.assign(v.flip(0))
    np.testing.assert_array_equal(v.numpy(), [2.0, 1.0, 0.0])
    v.assign_add(v)
    np.testing.assert_array_equal(v.numpy(), [4.0, 2.0, 0.0])


def test_assign_is_not_recorded_by_autograd() -> None:
    v = Variable(2.0)
    loss = v * v
    v.assign(3.0)
    assert v.is_leaf and v.grad_fn is None
    # The value saved for backward was overwritten: torch says so rather than give wrong numbers.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, v)


# --- read_value / numpy / repr ----------------------------------------------------------------------


def test_read_value_is_a_detached_copy() -> None:
    v = Variable([1.0, 2.0])
    value = v.read_value()
    assert type(value) is torch.Tensor
    assert not value.requires_grad
    v.assign_add(1.0)
    np.testing.assert_array_equal(value.numpy(), [1.0, 2.0])


def test_numpy_returns_a_copy_even_when_trainable() -> None:
    v = Variable([1.0, 2.0])
    array = v.numpy()
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    array[0] = 100.0
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(v), [1.0, 2.0])
    assert Variable(np.zeros(2)).numpy().dtype == np.float64


def test_numpy_widens_bfloat16_to_float32() -> None:
    array = Variable([1.5, -2.0], dtype="bfloat16").numpy()
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, [1.5, -2.0])


def test_repr_matches_tensorflow_layout() -> None:
    assert (
        repr(Variable([1.0, 2.0], name="var1"))
        == "<kerasopt.Variable 'var1' shape=(2,) dtype=float32, "
        "numpy=array([1., 2.], dtype=float32)>"
    )
    assert repr(Variable(1.0)) == "<kerasopt.Variable 'Variable' shape=() dtype=float32, numpy=1.0>"
    assert (
        repr(Variable(3, trainable=False, name="step"))
        == "<kerasopt.Variable 'step' shape=() dtype=int64, numpy=3>"
    )
    assert (
        repr(Variable([1.0], dtype="bfloat16"))
        == "<kerasopt.Variable 'Variable' shape=(1,) dtype=bfloat16, "
        "numpy=array([1.], dtype=float32)>"
    )
    assert str(Variable([0.5], name="s")) == repr(Variable([0.5], name="s"))


# --- torch integration --------------------------------------------------------------------------


def test_arithmetic_returns_plain_tensors_with_grad_fn() -> None:
    var1 = Variable(2.0, name="var1")
    loss = 3 * var1 * var1
    assert type(loss) is torch.Tensor
    assert loss.grad_fn is not None
    assert type(var1 + 1.0) is torch.Tensor
    assert type(torch.sin(var1)) is torch.Tensor
    assert type(var1.detach()) is torch.Tensor
    (grad,) = torch.autograd.grad(loss, var1)
    assert grad.item() == 12.0


def test_hashable_by_identity() -> None:
    a, b = Variable([1.0, 2.0]), Variable([1.0, 2.0])
    state = {a: "a", b: "b"}
    assert state[a] == "a" and state[b] == "b"
    assert hash(a) == hash(a) and a in state
    a.assign_add(1.0)
    assert state[a] == "a"  # the value changes, the key does not


def test_deepcopy_keeps_name_trainable_and_constraint() -> None:
    def clip(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0.0, 1.0)

    v = Variable([1.0, 2.0], name="w", constraint=clip)
    frozen = Variable([3.0], name="f", trainable=False)
    v_copy, frozen_copy = copy.deepcopy([v, frozen])
    assert type(v_copy) is Variable
    assert v_copy.name == "w" and v_copy.trainable and v_copy.constraint is clip
    assert frozen_copy.name == "f" and not frozen_copy.trainable
    assert v_copy.untyped_storage().data_ptr() != v.untyped_storage().data_ptr()
    v_copy.assign(0.0)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = Variable([[1.0, 2.0], [3.0, 4.0]], name="kernel")
        self.bias = Variable([0.5, -0.5], name="bias")
        self.alias = self.kernel  # the same parameter twice: deepcopy must keep it shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel + self.bias


def test_variable_in_nn_module() -> None:
    model = _Model()
    assert [name for name, _ in model.named_parameters()] == ["kernel", "bias"]
    out = model(torch.tensor([[1.0, 1.0]]))
    np.testing.assert_array_equal(out.detach().numpy(), [[4.5, 5.5]])
    kernel_grad, bias_grad = torch.autograd.grad(out.sum(), [model.kernel, model.bias])
    np.testing.assert_array_equal(kernel_grad.numpy(), [[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(bias_grad.numpy(), [1.0, 1.0])


def test_module_dtype_conversion_keeps_the_variable() -> None:
    model = _Model()
    kernel = model.kernel
    model.double()
    assert model.kernel is kernel and type(model.kernel) is Variable
    assert model.kernel.dtype == torch.float64 and model.kernel.name == "kernel"


def test_module_deepcopy_keeps_variables_and_sharing() -> None:
    model = copy.deepcopy(_Model())
    assert type(model.kernel) is Variable and model.kernel.name == "kernel"
    assert model.alias is model.kernel


def test_state_dict_round_trip_with_weights_only() -> None:
    model = _Model()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    model.kernel.assign(0.0)
    model.bias.assign(0.0)
    buffer.seek(0)
    model.load_state_dict(torch.load(buffer, weights_only=True))
    assert type(model.kernel) is Variable and model.kernel.name == "kernel"
    np.testing.assert_array_equal(model.kernel.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(model.bias.numpy(), [0.5, -0.5])


def test_torch_save_of_a_variable_keeps_its_type_and_name() -> None:
    v = Variable([1.0, 2.0], name="saved", trainable=False)
    buffer = io.BytesIO()
    torch.save(v, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is Variable
    assert loaded.name == "saved" and not loaded.trainable
    np.testing.assert_array_equal(loaded.numpy(), [1.0, 2.0])


def test_torch_optim_updates_a_variable_in_place() -> None:
    v = Variable([1.0, 2.0], name="v")
    opt = torch.optim.SGD([v], lr=0.5)
    (v * v).sum().backward()
    opt.step()
    assert type(v) is Variable
    np.testing.assert_array_equal(v.numpy(), [0.0, 0.0])


def test_float_and_format_read_the_value_without_warning() -> None:
    v = Variable(2.5, name="lr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on float() of a tensor requiring grad
        assert float(v) == 2.5
        assert f"{v:.3f}" == "2.500"
    assert int(Variable(7, trainable=False)) == 7
    assert f"{v}" == repr(v)
