"""`kerasopt.Variable`: a `tf.Variable`-shaped `torch.nn.Parameter`.

TensorFlow optimizers update `tf.Variable`s through `assign`, `assign_add` and `assign_sub`, key
their slots on the variable and name those slots after `variable.name`. `Variable` gives a torch
tensor that API while staying a real `torch.nn.Parameter`, so it can be registered in an
`nn.Module`, differentiated with `torch.autograd`, saved with `torch.save` and copied with
`copy.deepcopy`.

Example:
    >>> import torch
    >>> from kerasopt.variables import Variable
    >>> var1 = Variable([1.0, 2.0], name="var1")
    >>> var1
    <kerasopt.Variable 'var1' shape=(2,) dtype=float32, numpy=array([1., 2.], dtype=float32)>
    >>> var1.assign_sub([0.5, 0.5]).numpy()
    array([0.5, 1.5], dtype=float32)
    >>> type(3 * var1 * var1).__name__
    'Tensor'
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import torch

__all__ = ["DTypeLike", "Variable"]

#: What `Variable(dtype=...)` accepts: a `torch.dtype`, its name (`"float32"`, `"bfloat16"`,
#: `"torch.float16"`) or anything `numpy.dtype` understands (`np.float64`).
DTypeLike: TypeAlias = torch.dtype | str | np.dtype[Any] | type

Constraint: TypeAlias = Callable[[torch.Tensor], torch.Tensor]

# TensorFlow's floatx: Python floats become float32 whatever torch's default dtype is, so a
# port gives the same numbers as the TensorFlow program it comes from.
_FLOATX = torch.float32
_COMPLEX_FLOATX = torch.complex64

# Floating dtypes numpy can hold; the others (bfloat16, float8 variants) are widened to float32
# by `numpy()`, since numpy has no such dtype and torch refuses to convert them.
_NUMPY_FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _as_torch_dtype(dtype: DTypeLike) -> torch.dtype:
    """Resolves a `DTypeLike` to a `torch.dtype`, raising `TypeError` if it names none."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        candidate = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(candidate, torch.dtype):
            return candidate
        raise TypeError(f"Unknown dtype {dtype!r}: expected a torch dtype name such as 'float32'.")
    try:
        np_dtype = np.dtype(dtype)
        return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype
    except TypeError as err:
        raise TypeError(f"Cannot interpret {dtype!r} as a torch dtype.") from err


def _initial_tensor(initial_value: Any, dtype: torch.dtype | None) -> torch.Tensor:
    """Builds a fresh tensor, never sharing memory with `initial_value`."""
    if callable(initial_value):
        initial_value = initial_value()
    if isinstance(initial_value, torch.Tensor):
        # detach() first so that the copy is not recorded as an op on the caller's graph.
        data = initial_value.detach().clone()
        return data if dtype is None else data.to(dtype)
    if isinstance(initial_value, (np.ndarray, np.generic)):
        data = torch.tensor(np.asarray(initial_value))
        return data if dtype is None else data.to(dtype)
    if dtype is not None:
        # Converting the Python numbers straight to the target dtype rounds once, as TF does.
        return torch.tensor(initial_value, dtype=dtype)
    data = torch.tensor(initial_value)
    if data.is_floating_point() and data.dtype != _FLOATX:
        data = torch.tensor(initial_value, dtype=_FLOATX)
    elif data.is_complex() and data.dtype != _COMPLEX_FLOATX:
        data = torch.tensor(initial_value, dtype=_COMPLEX_FLOATX)
    return data


def _check_trainable(name: str, dtype: torch.dtype, trainable: bool) -> None:
    if trainable and not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(
            f"Variable {name!r} has dtype {_dtype_name(dtype)} and cannot be trainable: torch "
            "computes gradients only for floating-point and complex tensors. Pass "
            "trainable=False for integer and boolean variables."
        )


def compact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or a copy of it with its own storage when it is a window of a larger one
    (flat storage makes variables and slots such windows).

    Plain ``pickle`` writes a tensor's whole storage, once per tensor that views it (it does not
    keep views sharing a storage either), so a model of 2,000 windows would pickle the buffer
    2,000 times. ``torch.save`` stores each storage once and needs none of this. A tensor in
    shared memory is left as it is: ``torch.multiprocessing`` hands its storage to the other
    process, whose variable is to share it.
    """
    if tensor.layout is not torch.strided or tensor.device.type == "meta" or tensor.is_shared():
        return tensor  # (shared memory: torch.multiprocessing shares the storage itself)
    if tensor.untyped_storage().nbytes() <= tensor.numel() * tensor.element_size():
        return tensor
    return tensor.detach().clone(memory_format=torch.preserve_format)


def _rebuild_variable(
    data: torch.Tensor, trainable: bool, name: str, constraint: Constraint | None
) -> Variable:
    """Unpickles a `Variable` (see `Variable.__reduce_ex__`)."""
    return Variable._wrap(data, trainable, name, constraint)


class Variable(torch.nn.Parameter):
    """A named, assignable `torch.nn.Parameter`, the PyTorch counterpart of `tf.Variable`.

    The dtype follows TensorFlow where torch would differ: Python floats (and nested sequences of
    them) become float32 even if torch's default dtype is float64, Python ints become int64 and
    Python bools become bool. NumPy arrays and torch tensors keep their dtype unless `dtype` is
    given. The variable always owns its storage: the initial value is copied.

    Arithmetic on a variable gives plain `torch.Tensor`s (with a `grad_fn` when the variable is
    trainable), exactly as for `nn.Parameter`, so no per-op Python overhead is added.
    Variables hash by identity, so optimizers can key their state on them.

    Args:
        initial_value: A Python number, a (nested) sequence of numbers, a NumPy array or scalar,
            a torch tensor, or a zero-argument callable returning one of those.
        trainable: Whether gradients are computed for the variable (`requires_grad`). Only
            floating-point and complex variables can be trainable.
        name: The variable's name; optimizers name slot variables after it. Defaults to
            `"Variable"`, as in TensorFlow.
        dtype: If given, the initial value is converted to this dtype. A `torch.dtype`, a dtype
            name such as `"float32"` or `"bfloat16"`, or a NumPy dtype.
        constraint: An optional projection function applied by optimizers to the variable after
            each update (e.g. a norm constraint); it takes and returns a tensor.

    Raises:
        ValueError: If `trainable` is true for an integer or boolean dtype, or if `constraint`
            is not callable.
        TypeError: If `name` is not a string or `dtype` is not a dtype.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from kerasopt.variables import Variable
        >>> v = Variable(1.0)
        >>> v
        <kerasopt.Variable 'Variable' shape=() dtype=float32, numpy=1.0>
        >>> Variable(np.zeros(2)).dtype
        torch.float64
        >>> step = Variable(0, trainable=False, name="step")
        >>> step.assign_add(1).numpy()
        array(1)
        >>> loss = 3 * v * v
        >>> torch.autograd.grad(loss, v)
        (tensor(6.),)
    """

    _name: str
    constraint: Constraint | None

    def __new__(
        cls,
        initial_value: Any,
        trainable: bool = True,
        name: str | None = None,
        dtype: DTypeLike | None = None,
        constraint: Constraint | None = None,
    ) -> Variable:
        name = "Variable" if name is None else name
        if not isinstance(name, str):
            raise TypeError(f"Variable name must be a string, got {type(name).__name__}.")
        if constraint is not None and not callable(constraint):
            raise ValueError("The `constraint` argument must be a callable.")
        data = _initial_tensor(initial_value, None if dtype is None else _as_torch_dtype(dtype))
        _check_trainable(name, data.dtype, bool(trainable))
        return cls._wrap(data, bool(trainable), name, constraint)

    @classmethod
    def _wrap(
        cls, data: torch.Tensor, trainable: bool, name: str, constraint: Constraint | None
    ) -> Variable:
        """Makes a `Variable` that takes over `data`'s storage (no copy, no checks)."""
        self = torch.Tensor._make_subclass(cls, data, trainable)
        self._name = name
        self.constraint = constraint
        return self

    @property
    def name(self) -> str:
        """The variable's name (`"Variable"` unless given)."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Variable name must be a string, got {type(value).__name__}.")
        self._name = value

    @property
    def trainable(self) -> bool:
        """Whether gradients are computed for this variable; the same flag as `requires_grad`."""
        return self.requires_grad

    @trainable.setter
    def trainable(self, value: bool) -> None:
        _check_trainable(self._name, self.dtype, bool(value))
        self.requires_grad_(bool(value))

    def _coerce(self, value: Any, action: str) -> torch.Tensor:
        """Turns `value` into a tensor of this variable's dtype and device that broadcasts to it."""
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to(device=self.device, dtype=self.dtype)
            # An overlapping in-place copy (`v.assign(v.flip(0))`) is refused by torch; TF reads
            # the value before writing, so read it into fresh memory first.
            if tensor.untyped_storage().data_ptr() == self.untyped_storage().data_ptr():
                tensor = tensor.clone()
        else:
            if isinstance(value, np.generic):
                value = np.asarray(value)
            tensor = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        try:
            broadcast = torch.broadcast_shapes(tensor.shape, self.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != self.shape:
            raise ValueError(
                f"Cannot {action} a value of shape {tuple(tensor.shape)} to variable "
                f"{self._name!r} of shape {tuple(self.shape)}: the shapes are incompatible."
            )
        return tensor

    def assign(self, value: Any) -> Variable:
        """Sets the variable's value in place.

        Args:
            value: A number, array or tensor broadcastable to the variable's shape. It is
                converted to the variable's dtype and device (torch's `copy_` casting; TensorFlow
                would refuse a tensor of another dtype).

        Returns:
            The variable itself.

        Raises:
            ValueError: If `value` does not broadcast to the variable's shape.

        Example:
            >>> from kerasopt.variables import Variable
            >>> v = Variable([1.0, 2.0])
            >>> v.assign([3.0, 4.0]).numpy()
            array([3., 4.], dtype=float32)
            >>> v.assign(0.0).numpy()
            array([0., 0.], dtype=float32)
        """
        tensor = self._coerce(value, "assign")
        # no_grad: a leaf that requires grad may only be written in place outside autograd.
        with torch.no_grad():
            self.copy_(tensor)
        return self

    def assign_add(self, delta: Any) -> Variable:
        """Adds `delta` to the variable in place.

        Args:
            delta: A number, array or tensor broadcastable to the variable's shape, converted to
                the variable's dtype before the addition.

        Returns:
            The variable itself.

        Raises:
            ValueError: If `delta` does not broadcast to the variable's shape.

        Example:
            >>> from kerasopt.variables import Variable
            >>> Variable([1.0, 2.0]).assign_add([0.5, 0.25]).numpy()
            array([1.5 , 2.25], dtype=float32)
        """
        tensor = self._coerce(delta, "add")
        with torch.no_grad():
            self.add_(tensor)
        return self

    def assign_sub(self, delta: Any) -> Variable:
        """Subtracts `delta` from the variable in place.

        Args:
            delta: A number, array or tensor broadcastable to the variable's shape, converted to
                the variable's dtype before the subtraction.

        Returns:
            The variable itself.

        Raises:
            ValueError: If `delta` does not broadcast to the variable's shape.

        Example:
            >>> from kerasopt.variables import Variable
            >>> Variable([1.0, 2.0]).assign_sub(1.0).numpy()
            array([0., 1.], dtype=float32)
        """
        tensor = self._coerce(delta, "subtract")
        with torch.no_grad():
            self.sub_(tensor)
        return self

    def read_value(self) -> torch.Tensor:
        """Returns a copy of the current value as a plain tensor, detached from autograd.

        Example:
            >>> from kerasopt.variables import Variable
            >>> v = Variable([1.0, 2.0])
            >>> snapshot = v.read_value()
            >>> _ = v.assign_add(1.0)
            >>> snapshot
            tensor([1., 2.])
        """
        return self.detach().clone()

    def numpy(self, *, force: bool = False) -> np.ndarray[Any, Any]:
        """Returns a NumPy copy of the value, from any device and even when trainable.

        NumPy has no bfloat16 or float8, so those variables come back as float32 arrays.

        Args:
            force: Accepted for compatibility with `torch.Tensor.numpy`; a copy is always made.

        Returns:
            A new `numpy.ndarray` with the variable's shape.

        Example:
            >>> from kerasopt.variables import Variable
            >>> Variable([1.5, 2.5], dtype="bfloat16").numpy()
            array([1.5, 2.5], dtype=float32)
        """
        data = self.detach()
        if data.is_floating_point() and data.dtype not in _NUMPY_FLOAT_DTYPES:
            data = data.to(torch.float32)
        if data.device.type == "cpu":
            # .cpu() would return the same memory; the caller must get a copy.
            data = data.clone()
        return data.cpu().resolve_conj().resolve_neg().numpy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        # np.asarray(variable) works even when the variable requires grad, as for tf.Variable.
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __float__(self) -> float:
        # float(tf_variable) reads the value; torch warns on a tensor that requires grad because
        # the result leaves autograd, which is the point of reading a variable.
        return float(self.detach())

    def __format__(self, format_spec: str) -> str:
        # torch applies a format spec only to 0-d tensors of exact type torch.Tensor, so
        # f"{var:.3f}" would raise for a Variable (and an nn.Parameter).
        if format_spec and self.dim() == 0:
            return format(self.detach().item(), format_spec)
        return super().__format__(format_spec)

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        # `tensor_contents` mirrors torch.Tensor.__repr__'s signature; it is not used.
        try:
            array = self.numpy()
            # TF prints 0-d values bare ("numpy=1.0") and arrays with their repr.
            value = repr(array) if array.ndim else str(array)
        except (RuntimeError, TypeError, NotImplementedError):
            value = "<unavailable>"
        return (
            f"<kerasopt.Variable {self._name!r} shape={tuple(self.shape)} "
            f"dtype={_dtype_name(self.dtype)}, numpy={value}>"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Variable:
        if id(self) in memo:
            return memo[id(self)]
        result = Variable._wrap(
            self.data.clone(memory_format=torch.preserve_format),
            self.requires_grad,
            self._name,
            copy.deepcopy(self.constraint, memo),
        )
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, proto: Any) -> tuple[Any, ...]:
        # nn.Parameter's reduction rebuilds a plain nn.Parameter; rebuild a Variable instead.
        # Hooks are not saved, as for nn.Parameter.
        # A window of flat storage pickles as a copy of its own elements (`compact`).
        data = compact(self.data)
        return (_rebuild_variable, (data, self.requires_grad, self._name, self.constraint))
