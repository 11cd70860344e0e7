"""The access recorder behind ``GradientTape(watch_accessed_variables=True)``.

``_AccessRecorder`` is a ``TorchFunctionMode`` that notes the trainable leaf tensors torch
operations take as inputs while a tape is recording (TensorFlow's automatic watching), and lets
every call through unchanged; ``_NOT_READS`` and ``_ATTRIBUTE_ACCESS`` are the calls that look at
a tensor without computing from it, which do not count as accesses. Used by ``kerasopt.tape``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# Tensor methods and attributes that look at a tensor without computing from it; the access
# tracker ignores them so that `var.shape` or `print(var)` inside a tape does not "watch" var.
# Attribute reads and writes (`var.shape`, `var.grad`, `var.data = ...`) arrive as the
# descriptor's `__get__`/`__set__` and are filtered by name.
_NOT_READS = frozenset(
    {
        torch.Tensor.__format__,
        torch.Tensor.__len__,
        torch.Tensor.__repr__,
        torch.Tensor.data_ptr,
        torch.Tensor.detach,
        torch.Tensor.dim,
        torch.Tensor.element_size,
        torch.Tensor.is_complex,
        torch.Tensor.is_contiguous,
        torch.Tensor.is_floating_point,
        torch.Tensor.item,
        torch.Tensor.ndimension,
        torch.Tensor.nelement,
        torch.Tensor.numel,
        torch.Tensor.numpy,
        torch.Tensor.register_hook,
        torch.Tensor.requires_grad_,
        torch.Tensor.size,
        torch.Tensor.storage_offset,
        torch.Tensor.stride,
        torch.Tensor.tolist,
    }
)
_ATTRIBUTE_ACCESS = ("__get__", "__set__", "__delete__")


class _AccessRecorder(TorchFunctionMode):
    """Notes the trainable leaf tensors that torch operations take as inputs.

    It only scans the arguments (and lists/tuples among them, for `torch.cat` and friends) and
    calls `func` unchanged, so results are exactly those without the mode.
    """

    def __init__(self, accessed: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.accessed = accessed  # shared with the tape: id -> tensor, in first-use order
        self.active = True

    def _note(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.requires_grad and value.is_leaf:
                self.accessed.setdefault(id(value), value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, torch.Tensor) and item.requires_grad and item.is_leaf:
                    self.accessed.setdefault(id(item), item)

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        # Under no_grad nothing is recorded, so nothing counts as accessed (TF's stop_recording).
        if (
            self.active
            and torch.is_grad_enabled()
            and func not in _NOT_READS
            and getattr(func, "__name__", None) not in _ATTRIBUTE_ACCESS
        ):
            for arg in args:
                self._note(arg)
            for arg in kwargs.values():
                self._note(arg)
        return func(*args, **kwargs)
