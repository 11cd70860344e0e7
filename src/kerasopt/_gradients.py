"""Gradients on their way into a step: computed, checked, unscaled, accumulated and clipped.

Everything here runs in the optimizer's plan, so it changes no optimizer state and may raise;
the messages name the variable (through the optimizer's ``SlotStore``). The optimizer calls,
in this order (``Optimizer._plan``):

1. ``PairChecks.pairs``: drop ``None`` gradients (with TF's warning), check every (grad, var)
   pair — type, dtype, shape, device, leafness, duplicates — and convert NumPy arrays, Python
   numbers and torch sparse COO tensors;
2. ``unaliased``: copy gradients that share memory with a variable of the step;
3. ``divide``: ``loss_scale_factor``;
4. ``accumulated``: ``(gradient + accumulator) / K`` on an update call of gradient accumulation;
5. ``clip``: ``clipvalue``, then ``clipnorm``, then ``global_clipnorm`` (TF's formulas).

``compute_gradients`` is ``minimize``'s autograd step.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from . import _distributed
from ._types import Record, made_for
from .sparse import IndexedSlices, from_torch_sparse
from .variables import Variable

if TYPE_CHECKING:
    from ._slots import SlotStore

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)

Grad = Tensor | IndexedSlices
Pairs = list[tuple[Grad, Tensor]]


def differentiable(dtype: torch.dtype) -> bool:
    return dtype in FLOAT_DTYPES or dtype in COMPLEX_DTYPES


def materialize(grads_and_vars: Iterable[tuple[Any, Tensor]]) -> list[Any]:
    try:
        return list(grads_and_vars)
    except TypeError:
        raise TypeError(
            "`grads_and_vars` must be an iterable of (gradient, variable) pairs; got "
            f"{type(grads_and_vars).__name__}."
        ) from None


def map_grad(g: Grad, fn: Callable[[Tensor], Tensor]) -> Grad:
    """``fn`` applied to a dense gradient, or to the values of an ``IndexedSlices``."""
    return g.with_values(fn(g.values)) if isinstance(g, IndexedSlices) else fn(g)


def densify(g: IndexedSlices, var: Tensor) -> Tensor:
    return IndexedSlices(g.values, g.indices, tuple(var.shape)).to_dense()


def split(
    pairs: Sequence[tuple[Any, Tensor]], densify_sparse: bool, label: Callable[[Tensor], str]
) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, IndexedSlices]]]:
    """A step's checked pairs as (variable, dense gradient) and (variable, sparse gradient)
    lists; ``densify_sparse`` turns sparse gradients dense. Sharded (FSDP2) variables take no
    sparse gradient (``label`` names the variable). A variable with no elements is left out:
    there is nothing to update, and a whole-tensor rule's means over no elements would write
    NaN into its slots (Adafactor's ``c`` of a (0, n) variable)."""
    dense: list[tuple[Tensor, Tensor]] = []
    sparse: list[tuple[Tensor, IndexedSlices]] = []
    for g, v in pairs:
        if v.numel() == 0 and not _distributed.is_dtensor(v):
            continue
        if not isinstance(g, IndexedSlices):
            dense.append((v, g))
            continue
        if _distributed.active() and _distributed.is_dtensor(v):
            raise NotImplementedError(
                f"Variable {label(v)} is a DTensor (FSDP2): sparse gradients are not supported "
                "for sharded variables."
            )
        if densify_sparse:
            dense.append((v, densify(g, v)))
        else:
            sparse.append((v, g))
    return dense, sparse


def check_updatable(var: Tensor, label: str) -> None:
    """Refuses a variable no step can update in place: a meta tensor (no values) or an
    inference tensor. ``label`` names it."""
    if var.device.type == "meta":
        raise ValueError(
            f"Variable {label} is on the meta device: it holds no values to update. "
            "Materialize it first (e.g. `module.to_empty(device=...)` and an initialization), "
            "then pass the real tensor."
        )
    if var.layout != torch.strided:
        raise ValueError(
            f"Variable {label} has layout {var.layout}: optimizers update dense (strided) tensors."
        )
    if 0 in var.stride() and var.numel() > 1:
        raise ValueError(
            f"Variable {label} has elements that share memory (an expanded view, stride 0): an "
            "update would write one memory location several times. Pass a materialized tensor "
            "(e.g. `.clone()`)."
        )
    if var.is_inference():
        raise ValueError(
            f"Variable {label} is an inference tensor (made under `torch.inference_mode()`): it "
            "cannot be updated in place outside inference mode. Create the variable outside "
            "inference mode, or pass a clone of it."
        )


@dataclass
class PairChecks:
    """The checks of (gradient, variable) pairs for one optimizer.

    Args:
        store: the optimizer's registry (variable names for messages).
        owner: the optimizer's class name, for messages.
        complex_ok: whether complex variables are accepted.

    ``foreign`` becomes True when a checked gradient or variable runs code of its own inside
    torch operations (``runs_foreign_code``): the commit of such a step snapshots first.
    """

    store: SlotStore
    owner: str
    complex_ok: bool
    foreign: bool = False

    def _label(self, var: Tensor) -> str:
        return repr(self.store.name_of(var))

    def pairs(
        self, grads_and_vars: Iterable[tuple[Any, Tensor]], transformed: bool = False
    ) -> Pairs:
        items = materialize(grads_and_vars)
        kept: Pairs = []
        dropped: list[str] = []
        seen: set[int] = set()
        for position, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"`grads_and_vars` item {position} must be a (gradient, variable) pair; got {item!r}."
                )
            grad, var = item
            if not isinstance(var, Tensor):
                raise TypeError(
                    f"`grads_and_vars` item {position}: the variable must be a torch tensor "
                    f"(e.g. kerasopt.Variable or nn.Parameter); got {type(var).__name__}."
                )
            if id(var) in seen:
                raise ValueError(
                    f"Variable {self._label(var)} appears more than once in `grads_and_vars`."
                )
            seen.add(id(var))
            if grad is None:
                dropped.append(self.store.name_of(var))
                continue
            kept.append((self.grad(grad, var), var))
        if not kept:
            names = [
                self.store.name_of(item[1]) for item in items if isinstance(item, (tuple, list))
            ]
            raise ValueError(f"No gradients provided for any variable: {tuple(names)}.")
        if dropped and not transformed:
            # stacklevel: this method, Optimizer._plan, then the step's caller.
            warnings.warn(
                f"Gradients do not exist for variables {dropped} when minimizing the loss. If "
                "you're using `model.compile()`, did you forget to provide a `loss` argument?",
                UserWarning,
                stacklevel=3,
            )
        return kept

    def grad(self, grad: Any, var: Tensor) -> Grad:
        # Labels are built only on the error paths: this runs for every pair of every step.
        if (type(grad) not in _PLAIN or type(var) not in _PLAIN) and (
            runs_foreign_code(grad) or runs_foreign_code(var)
        ):
            self.foreign = True
        if var.dtype not in FLOAT_DTYPES:
            if var.dtype in COMPLEX_DTYPES:
                if not self.complex_ok:
                    raise ValueError(
                        f"Variable {self._label(var)} has dtype {var.dtype}: {self.owner} "
                        "does not support complex variables (as in TensorFlow). SGD, Adagrad, "
                        "Adadelta and RMSprop do."
                    )
            else:
                raise ValueError(
                    f"Variable {self._label(var)} has dtype {var.dtype}; optimizers update floating "
                    "variables only (float16, bfloat16, float32, float64; complex64 and "
                    "complex128 for SGD, Adagrad, Adadelta and RMSprop)."
                )
        if var.device.type == "meta" or var.is_inference() or var.layout != torch.strided:
            check_updatable(var, self._label(var))
        if 0 in var.stride() and var.numel() > 1:
            check_updatable(var, self._label(var))
        if not var.is_leaf:
            raise ValueError(
                f"Variable {self._label(var)} is not a leaf tensor (it was computed from other tensors); "
                "pass the parameter itself."
            )
        if isinstance(grad, np.ndarray):
            # TF converts array gradients to tensors (their dtype is then checked like any other).
            if grad.dtype == object or grad.dtype.kind not in "biufc":
                raise TypeError(
                    f"Gradient for variable {self._label(var)} is a NumPy array of dtype "
                    f"{grad.dtype}; it must hold numbers."
                )
            grad = torch.from_numpy(np.array(grad)).to(var.device)
        elif isinstance(grad, (list, tuple, numbers.Number)):
            # TF's convert_to_tensor: Python numbers take the variable's dtype.
            try:
                grad = torch.tensor(grad, dtype=var.dtype, device=var.device)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(
                    f"Gradient for variable {self._label(var)} could not be converted to a tensor "
                    f"of dtype {var.dtype}: {e}"
                ) from None
        if isinstance(grad, Tensor) and grad.layout == torch.sparse_coo:
            if tuple(grad.shape) != tuple(var.shape):
                raise ValueError(
                    f"Sparse gradient for variable {self._label(var)} has dense shape "
                    f"{tuple(grad.shape)}, expected {tuple(var.shape)}."
                )
            grad = from_torch_sparse(grad)
        if isinstance(grad, IndexedSlices):
            if grad.dtype != var.dtype:
                raise ValueError(
                    f"Gradient for variable {self._label(var)} has dtype {grad.dtype}, expected {var.dtype}."
                )
            if grad.device != var.device or grad.indices.device != var.device:
                raise ValueError(
                    f"Gradient for variable {self._label(var)} is on {grad.device} (indices on "
                    f"{grad.indices.device}), the variable on {var.device}."
                )
            if var.dim() == 0 or tuple(grad.values.shape[1:]) != tuple(var.shape[1:]):
                raise ValueError(
                    f"Sparse gradient for variable {self._label(var)} has value rows of shape "
                    f"{tuple(grad.values.shape[1:])}, incompatible with the variable's shape "
                    f"{tuple(var.shape)}."
                )
            if grad.dense_shape is not None and tuple(grad.dense_shape) != tuple(var.shape):
                raise ValueError(
                    f"Sparse gradient for variable {self._label(var)} has dense shape "
                    f"{tuple(grad.dense_shape)}, expected {tuple(var.shape)}."
                )
            if grad.indices.numel() and (
                bool(grad.indices.min() < 0) or bool(grad.indices.max() >= var.shape[0])
            ):
                raise ValueError(
                    f"Sparse gradient for variable {self._label(var)} has indices outside [0, {var.shape[0]})."
                )
            return grad
        if not isinstance(grad, Tensor):
            raise TypeError(
                f"Gradient for variable {self._label(var)} must be a tensor, IndexedSlices or None; got "
                f"{type(grad).__name__}."
            )
        if grad.layout != torch.strided:
            raise TypeError(
                f"Gradient for variable {self._label(var)} has layout {grad.layout}; pass a dense "
                "tensor, a torch sparse COO tensor or an IndexedSlices."
            )
        if grad.is_leaf and grad.requires_grad and not var.requires_grad:
            raise ValueError(
                f"The pair for variable {self._label(var)} looks swapped: its 'gradient' is a "
                "trainable parameter (requires grad) and its 'variable' is not. `grads_and_vars` "
                "takes (gradient, variable) pairs, gradient first."
            )
        if grad.dtype != var.dtype:
            raise ValueError(
                f"Gradient for variable {self._label(var)} has dtype {grad.dtype}, expected {var.dtype}."
            )
        if tuple(grad.shape) != tuple(var.shape):
            raise ValueError(
                f"Gradient for variable {self._label(var)} has shape {tuple(grad.shape)}, expected "
                f"{tuple(var.shape)}."
            )
        if grad.device != var.device:
            raise ValueError(
                f"Gradient for variable {self._label(var)} is on {grad.device}, the variable on {var.device}."
            )
        return grad.detach()


_OWN_TORCH_FUNCTION = (
    getattr(Tensor.__torch_function__, "__func__", Tensor.__torch_function__),
    torch._C._disabled_torch_function_impl,
)
_OWN_TORCH_DISPATCH = (torch._C._disabled_torch_dispatch_impl,)
_PLAIN = frozenset({Tensor, nn.Parameter, Variable})  # classes known to run torch's code only


def runs_foreign_code(t: Any) -> bool:
    """Whether torch operations on ``t`` run code that is not torch's: a tensor subclass with
    its own ``__torch_function__`` / ``__torch_dispatch__`` (FSDP2's DTensor excepted). Such
    code can raise anywhere inside a rule, so a step with one is committed with a snapshot."""
    if isinstance(t, IndexedSlices):
        return _foreign_class(type(t.values)) or _foreign_class(type(t.indices))
    return _foreign_class(type(t))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _foreign_class(cls: type) -> bool:
    if cls is Tensor or not issubclass(cls, Tensor):
        return False
    function = getattr(cls.__torch_function__, "__func__", cls.__torch_function__)
    dispatch = getattr(cls, "__torch_dispatch__", torch._C._disabled_torch_dispatch_impl)
    dispatch = getattr(dispatch, "__func__", dispatch)
    if function in _OWN_TORCH_FUNCTION and dispatch in _OWN_TORCH_DISPATCH:
        return False
    return not (_distributed.DTensor is not None and issubclass(cls, _distributed.DTensor))


def _not_made_for(record: Record, var: Tensor, owner: str) -> str:
    """Why ``var`` no longer fits its slots (``made_for``), naming it."""
    if tuple(var.shape) != record.shape:
        return (
            f"Variable {record.name!r} has shape {tuple(var.shape)}, but its slots in "
            f"optimizer {owner!r} were made for shape {record.shape} (was "
            "`param.data` replaced by a tensor of another shape?). Create a new "
            "optimizer, or give the variable its old shape back."
        )
    what = "dtype" if record.dtype is not None and var.dtype != record.dtype else "device"
    now, then = (var.dtype, record.dtype) if what == "dtype" else (var.device, record.device)
    return (
        f"Variable {record.name!r} has {what} {now}, but its slots in optimizer {owner!r} "
        f"were made for {what} {then} (was the model converted, e.g. by `model.double()` or "
        "`model.to(...)`, after the optimizer made its slots?). Convert the model before the "
        "optimizer's first step or build, or give the variable its old "
        f"{what} back."
    )


def unaliased(pairs: Pairs, store: SlotStore, owner: str) -> Pairs:
    """Checks each known variable against its slots and copies gradients that share memory
    with a variable of the step (``(w, w)``, swapped pairs of two parameters): every engine
    then reads every gradient as it was before any variable was written. ``owner`` is the
    optimizer's name, for messages."""
    storages: dict[int, list[Tensor]] = {}
    new = False
    for _, var in pairs:
        record = store.record_of(var)
        if record is None:
            new = True
        elif not made_for(record, var):
            raise ValueError(_not_made_for(record, var, owner))
        storages.setdefault(_distributed.local(var).untyped_storage().data_ptr(), []).append(var)
    if new:
        # A new variable must not be another view of the memory of a tracked one (`w.detach()`,
        # `w.data`): it would get slots of its own and be updated twice per step.
        stepped = {id(v) for _, v in pairs}
        disjoint(
            [v for vs in storages.values() for v in vs]
            + [r.var for r in store.records() if id(r.var) not in stepped],
            store.name_of,
            owner,
        )
    elif len(storages) < len(pairs):  # views of one storage (e.g. one packed buffer)
        disjoint([v for _, v in pairs], store.name_of, owner)
    out = []
    for g, var in pairs:
        values = _distributed.local(g.values if isinstance(g, IndexedSlices) else g)
        if values.untyped_storage().data_ptr() in storages:
            g = g.with_values(values.clone()) if isinstance(g, IndexedSlices) else g.clone()
        out.append((g, var))
    return out


# ----------------------------------------------------------------------------------------------
# the steady step: the same known variables as before, plain dense gradients
def _span(t: Tensor) -> tuple[int, int]:
    """The bytes ``t`` can address: [first, last + 1) within its storage."""
    first = int(t.storage_offset())
    last = first + sum(int(n - 1) * int(s) for n, s in zip(t.shape, t.stride()) if n > 0)
    size = t.element_size()
    return (first * size, (last + 1) * size if t.numel() else first * size)


def _add_span(storages: dict[int, list[tuple[int, int, Tensor]]], var: Tensor) -> None:
    local = _distributed.local(var)
    storages.setdefault(local.untyped_storage().data_ptr(), []).append((*_span(local), var))


def disjoint(variables: Iterable[Tensor], name_of: Callable[[Tensor], str], owner: str) -> None:
    """Raises a ValueError naming both if two of ``variables`` share memory (one a view of the
    other); ``owner`` names the optimizer."""
    storages: dict[int, list[tuple[int, int, Tensor]]] = {}
    for var in variables:
        _add_span(storages, var)
    for spans in storages.values():
        _refuse_overlaps(spans, name_of, owner)


def _refuse_overlaps(
    spans: list[tuple[int, int, Tensor]], name_of: Callable[[Tensor], str], owner: str
) -> None:
    """Raises if two of the variables in ``spans`` (one storage's) share memory, naming both."""
    if len(spans) < 2:
        return
    spans = sorted(spans, key=lambda s: (s[0], s[1]))
    reach, widest = spans[0][1], spans[0][2]
    for start, end, var in spans[1:]:
        if start < reach and start < end:
            raise ValueError(
                f"Variables {name_of(widest)!r} and {name_of(var)!r} of optimizer "
                f"{owner!r} share memory (one is a view of the other, e.g. `w.detach()` or "
                "`w.data`): each would get its own slots and be updated separately. Pass the "
                "variable itself, once."
            )
        if end > reach:
            reach, widest = end, var


def divide(pairs: Pairs, scale: Any) -> Pairs:
    """Every gradient divided by ``scale`` (``loss_scale_factor``)."""
    return [(map_grad(g, lambda t: t / scale), v) for g, v in pairs]


def accumulated(g: Grad, var: Tensor, k: int, new_index: int, store: SlotStore) -> Tensor:
    """``(g + accumulator) / k``: the gradient an update call of accumulation applies.

    A variable not seen yet (it would be the ``new_index``-th) has a zero accumulator, or the
    one a loaded state holds for it.
    """
    record = store.record_of(var)
    dense = densify(g, var) if isinstance(g, IndexedSlices) else g
    if record is not None:
        return (dense + record.slots["gradient_accumulator"]) / k
    # First sight on an update call: the accumulator is zero, or what a loaded state holds.
    acc = store.pending_slot(var, new_index, "gradient_accumulator")
    if acc is None or tuple(acc.shape) != tuple(dense.shape) or acc.dtype != dense.dtype:
        acc = torch.zeros_like(dense)  # a mismatch is reported when the state is adopted
    return (dense + acc.to(dense.device)) / k


def clip(pairs: Pairs, clipvalue: Any, clipnorm: Any, global_clipnorm: Any) -> Pairs:
    """TF's clipping, in TF's order: by value, by each gradient's norm, by the global norm."""
    if clipvalue is not None:
        c = clipvalue
        clamp = lambda t: _distributed.map_local(t, lambda x: torch.clamp(x, -c, c))  # noqa: E731
        pairs = [(map_grad(g, clamp), v) for g, v in pairs]
    if clipnorm is not None:
        by_norm = lambda t: clip_by_norm(t, clipnorm)  # noqa: E731
        pairs = [(map_grad(g, by_norm), v) for g, v in pairs]
    if global_clipnorm is not None:
        pairs = clip_by_global_norm(pairs, global_clipnorm)
    return pairs


def clip_by_norm(t: Tensor, clipnorm: Any) -> Tensor:
    # TF's clip_by_norm: t * c / max(||t||, c), with a zero tensor left at zero.
    c = torch.tensor(clipnorm, dtype=t.dtype, device=t.device)
    l2sum = _distributed.reduced((t * t).sum())  # over every shard of a DTensor
    norm = torch.where(l2sum > 0, torch.sqrt(torch.where(l2sum > 0, l2sum, 1)), l2sum)
    divisor = torch.maximum(norm, c)
    return _distributed.map_local(t, lambda x: (x * c) / divisor)


def clip_by_global_norm(pairs: Pairs, global_clipnorm: Any) -> Pairs:
    # TF's clip_by_global_norm: scale = c * min(1/N, 1/c); an inf/NaN norm makes it NaN.
    values = [g.values if isinstance(g, IndexedSlices) else g for g, _ in pairs]
    acc_dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
    device = values[0].device
    half_sq = [_distributed.reduced((v.to(acc_dtype) ** 2).sum() / 2).to(device) for v in values]
    norm = torch.sqrt(torch.stack(half_sq).sum() * 2)
    c = torch.tensor(global_clipnorm, dtype=acc_dtype, device=device)
    scale = c * torch.minimum(1.0 / norm, 1.0 / c)
    scale = scale + (norm - norm)
    scaled = lambda t: _distributed.map_local(  # noqa: E731
        t, lambda x: x * scale.to(x.dtype).to(x.device)
    )
    return [(map_grad(g, scaled), v) for g, v in pairs]


# ----------------------------------------------------------------------------------------------
# minimize's gradients
def compute_gradients(
    loss: Any,
    var_list: Any,
    grad_loss: Tensor | None,
    tape: Any,
    flatten: Callable[[Any], list[Tensor]],
    loss_scale_factor: Any,
) -> list[tuple[Grad | None, Tensor]]:
    """TF's ``_compute_gradients``: the (gradient, variable) pairs ``minimize`` applies.

    ``flatten`` turns ``var_list`` into tensors (the optimizer's, which records their names).
    """
    if not callable(loss) and not isinstance(loss, Tensor):
        raise ValueError(
            "`loss` must be a callable returning the loss, or a loss tensor; got "
            f"{type(loss).__name__}."
        )
    variables: list[Tensor] | None = None
    if callable(loss):
        if not callable(var_list) or isinstance(var_list, nn.Module):
            variables = flatten(var_list)
            for v in variables:
                # TF watches the listed variables before computing the loss.
                if v.is_leaf and not v.requires_grad and differentiable(v.dtype):
                    v.requires_grad_(True)
        with torch.enable_grad():
            loss_value = loss()
    else:
        loss_value = loss
    if variables is None:
        variables = flatten(var_list)
    if loss_scale_factor is not None:
        loss_value = loss_value * loss_scale_factor
    if tape is not None:
        grads = tape.gradient(loss_value, variables, output_gradients=grad_loss)
    else:
        grads = autograd(loss_value, variables, grad_loss)
    return list(zip(grads, variables))


def autograd(loss: Tensor, variables: Sequence[Tensor], grad_loss: Tensor | None) -> list[Any]:
    """Gradients of ``loss`` for ``variables`` (None where it does not depend on one)."""
    if not isinstance(loss, Tensor):
        raise ValueError(
            f"The loss must be a tensor; the loss callable returned {type(loss).__name__}."
        )
    wanted = [i for i, v in enumerate(variables) if v.requires_grad]
    grads: list[Any] = [None] * len(variables)
    if not wanted or not loss.requires_grad:
        return grads
    if grad_loss is None and (loss.numel() != 1 or loss.is_complex()):
        # TF's implicit sum over a non-scalar (or complex) target: output gradient of ones
        grad_loss = torch.ones_like(loss)
    inputs = [variables[i] for i in wanted]
    if _distributed.active():
        # DDP / FSDP2 reduce gradients in backward hooks, which autograd.grad never runs
        # (kerasopt._distributed): one backward, reduced once, read from `.grad`.
        seed = torch.ones_like(loss) if grad_loss is None else grad_loss
        computed: Sequence[Any] = _distributed.backward_gradients(
            [loss], [seed], inputs, retain_graph=False
        )
    else:
        computed = torch.autograd.grad(loss, inputs, grad_outputs=grad_loss, allow_unused=True)
    for i, g in zip(wanted, computed):
        grads[i] = g
    return grads
