"""`kerasopt.GradientTape`: TensorFlow's gradient tape over `torch.autograd`.

torch records every operation on tensors that require grad, so the tape has little to record
itself. It gives TensorFlow's API on top of autograd: a context that turns grad mode on,
`watch` for plain tensors, `watched_variables`, `stop_recording`, and a `gradient` that takes
and returns nested structures, returns `None` (or zeros) for unconnected sources and follows
TensorFlow's persistent/non-persistent rule.

Example:
    >>> import torch
    >>> from kerasopt.tape import GradientTape
    >>> from kerasopt.variables import Variable
    >>> var1, var2 = Variable(2.0, name="var1"), Variable(5.0, name="var2")
    >>> with GradientTape() as tape:
    ...     loss = 3 * var1 * var1 + 2 * var2 * var2
    >>> tape.gradient(loss, {"a": var1, "b": [var2]})
    {'a': tensor(12.), 'b': [tensor(20.)]}
    >>> [v.name for v in tape.watched_variables()]
    ['var1', 'var2']

Where torch cannot behave like TensorFlow:

- Recording is global in torch: a tensor that requires grad is recorded whether or not a tape
  is active, so `gradient` also follows computation done before the tape was entered (TensorFlow
  returns `None` for it). Only `watch_accessed_variables=False` restricts which leaf sources get
  gradients (to the watched ones), as in TensorFlow.
- `watch()` makes a plain tensor require grad; only operations run after that are recorded.
  A tensor computed from it earlier is not connected to it.
- `stop_recording()` is `torch.no_grad()`: it pauses every active tape, not only this one.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Iterator
from typing import Any

import torch

from . import _distributed
from ._nest import _expand_modules as _expand_modules
from ._nest import _leaves as _leaves
from ._nest import _leaves_along as _leaves_along
from ._nest import _pack as _pack
from ._tape_access import _ATTRIBUTE_ACCESS as _ATTRIBUTE_ACCESS
from ._tape_access import _NOT_READS as _NOT_READS
from ._tape_access import _AccessRecorder as _AccessRecorder

__all__ = ["GradientTape", "UnconnectedGradients"]

_NON_PERSISTENT_MESSAGE = (
    "A non-persistent GradientTape can only be used to compute one set of gradients (or jacobians)"
)


class UnconnectedGradients(enum.Enum):
    """What `GradientTape.gradient` returns for a source the target does not depend on.

    Attributes:
        NONE: `None`, TensorFlow's default.
        ZERO: `torch.zeros_like(source)`.
    """

    NONE = "none"
    ZERO = "zero"


def _parse_unconnected(value: UnconnectedGradients | str) -> UnconnectedGradients:
    if isinstance(value, UnconnectedGradients):
        return value
    if isinstance(value, str):
        try:
            return UnconnectedGradients(value.lower())
        except ValueError:
            pass
    raise ValueError(
        f"Unknown value for unconnected_gradients: {value!r}; expected 'none', 'zero' or an "
        "UnconnectedGradients member."
    )


class _RecordingTapes(threading.local):
    """The tapes recording in this thread, innermost last (TensorFlow keeps the same stack).

    `gradient` consults it to decide whether the gradient computation itself must be recorded
    (`create_graph=True`) for an enclosing tape to differentiate it again.
    """

    def __init__(self) -> None:
        self.tapes: list[GradientTape] = []


_RECORDING = _RecordingTapes()


class GradientTape:
    """Records operations for automatic differentiation, like `tf.GradientTape`.

    Inside the `with` block torch's grad mode is on. Trainable tensors (`kerasopt.Variable`,
    `nn.Parameter`, any tensor with `requires_grad=True`) are recorded by torch itself; plain
    tensors are recorded once `watch()`ed. `gradient` then differentiates a target with respect
    to any nest of sources.

    Args:
        persistent: Whether `gradient` may be called more than once. A non-persistent tape lets
            torch free the graph after the first call.
        watch_accessed_variables: Whether trainable leaf tensors used while recording are
            listed by `watched_variables()` automatically. If false, only tensors passed to
            `watch()` are, and `gradient` returns no gradient (None or zeros) for a leaf source
            that was not watched, as TensorFlow does.

    Example:
        >>> import torch
        >>> from kerasopt.tape import GradientTape
        >>> x = torch.tensor(3.0)
        >>> with GradientTape(persistent=True) as tape:
        ...     tape.watch(x)
        ...     y = x * x
        ...     z = y * y
        >>> tape.gradient(z, x)
        tensor(108.)
        >>> tape.gradient(y, x)
        tensor(6.)

        Nested tapes give higher-order gradients:

        >>> from kerasopt.variables import Variable
        >>> v = Variable(3.0)
        >>> with GradientTape() as outer:
        ...     with GradientTape() as inner:
        ...         y = v * v * v
        ...     dy_dv = inner.gradient(y, v)
        >>> dy_dv, outer.gradient(dy_dv, v)
        (tensor(27., grad_fn=<AddBackward0>), tensor(18.))
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True) -> None:
        self._persistent = bool(persistent)
        self._watch_accessed_variables = bool(watch_accessed_variables)
        # id -> tensor in first-watch order; _AccessRecorder appends to the same dict.
        self._watched: dict[int, torch.Tensor] = {}
        # Tensors whose requires_grad watch() switched on; switched off again when the tape is
        # done with them, so that watching a non-trainable variable does not make it trainable.
        self._switched_on: dict[int, torch.Tensor] = {}
        self._recorder: _AccessRecorder | None = None
        self._grad_mode: torch.enable_grad | None = None
        self._recording = False
        self._paused = False
        self._used = False

    @property
    def persistent(self) -> bool:
        """Whether `gradient` may be called more than once."""
        return self._persistent

    def __enter__(self) -> GradientTape:
        if self._recording:
            raise RuntimeError(
                "Tape is still recording, This can happen if you try to re-enter an "
                "already-active tape."
            )
        if self._used:
            # TensorFlow starts a fresh tape when a spent non-persistent tape is re-entered.
            self.reset()
        self._grad_mode = torch.enable_grad()
        self._grad_mode.__enter__()
        if self._watch_accessed_variables:
            self._recorder = _AccessRecorder(self._watched)
            self._recorder.__enter__()
        self._recording = True
        _RECORDING.tapes.append(self)
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        _RECORDING.tapes.remove(self)
        self._recording = False
        if self._recorder is not None:
            self._recorder.__exit__(exc_type, exc_value, traceback)
            self._recorder = None
        if self._grad_mode is not None:
            self._grad_mode.__exit__(exc_type, exc_value, traceback)
            self._grad_mode = None

    def __repr__(self) -> str:
        return (
            f"<kerasopt.GradientTape persistent={self._persistent} "
            f"recording={self._recording and not self._paused}>"
        )

    def watch(self, tensor: Any) -> None:
        """Ensures that `tensor` is traced by this tape.

        A floating-point leaf tensor that does not require grad is switched to
        `requires_grad=True`; operations on it *after* this call are recorded. The tape switches
        it back when it is done: after `gradient` on a non-persistent tape, or on `reset()`.
        Tensors that already require grad (variables, intermediate results) are only listed.

        Args:
            tensor: A tensor or a nest (lists, tuples, dicts) of tensors.

        Raises:
            TypeError: If a leaf of `tensor` is not a `torch.Tensor`.
            ValueError: If a tensor is not floating point or complex (torch cannot
                differentiate integers; TensorFlow only warns and returns no gradient).

        Example:
            >>> import torch
            >>> from kerasopt.tape import GradientTape
            >>> x = torch.tensor([1.0, 2.0])
            >>> with GradientTape() as tape:
            ...     tape.watch(x)
            ...     y = (x * x).sum()
            >>> tape.gradient(y, x)
            tensor([2., 4.])
            >>> x.requires_grad
            False
        """
        tensors = []
        for path, leaf in _leaves(tensor):
            where = f"watch(tensor{path})"
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(f"{where}: expected a torch.Tensor, got {type(leaf).__name__}.")
            if not (leaf.is_floating_point() or leaf.is_complex()):
                raise ValueError(
                    f"{where}: cannot watch a tensor of dtype {leaf.dtype}; gradients exist "
                    "only for floating-point and complex tensors."
                )
            if not leaf.requires_grad and not leaf.is_leaf:
                # Unreachable with today's autograd (a tensor that does not require grad is a
                # leaf), kept so that a future non-leaf case fails clearly rather than silently.
                raise ValueError(
                    f"{where}: the tensor is the result of operations that were not recorded; "
                    "watch the tensors it is computed from before computing it."
                )
            tensors.append(leaf)
        for leaf in tensors:
            if not leaf.requires_grad:
                leaf.requires_grad_(True)
                self._switched_on.setdefault(id(leaf), leaf)
            self._watched.setdefault(id(leaf), leaf)

    def watched_variables(self) -> tuple[torch.Tensor, ...]:
        """Returns the tensors this tape watches, in the order first watched or used.

        These are the tensors passed to `watch()` and, when `watch_accessed_variables` is true,
        the trainable leaf tensors (variables, parameters) that torch operations took as inputs
        while the tape was recording (not inside `stop_recording()` or `torch.no_grad()`).

        Example:
            >>> from kerasopt.tape import GradientTape
            >>> from kerasopt.variables import Variable
            >>> a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
            >>> with GradientTape() as tape:
            ...     y = b * a + b
            >>> [v.name for v in tape.watched_variables()]
            ['b', 'a']
        """
        return tuple(self._watched.values())

    @contextlib.contextmanager
    def stop_recording(self) -> Iterator[None]:
        """Temporarily stops recording operations (and variable accesses) on this tape.

        This is `torch.no_grad()`, so it pauses every active tape and the whole of autograd,
        where TensorFlow pauses only this tape.

        Raises:
            RuntimeError: If the tape is not recording (outside its `with` block, or already
                inside `stop_recording()`).

        Example:
            >>> import torch
            >>> from kerasopt.tape import GradientTape
            >>> x = torch.tensor(3.0, requires_grad=True)
            >>> with GradientTape() as tape:
            ...     y = x * x
            ...     with tape.stop_recording():
            ...         z = x * 10.0
            ...     total = y + z
            >>> tape.gradient(total, x)
            tensor(6.)
        """
        if not self._recording or self._paused:
            raise RuntimeError("Tape is not recording.")
        self._paused = True
        if self._recorder is not None:
            self._recorder.active = False
        try:
            with torch.no_grad():
                yield
        finally:
            self._paused = False
            self._sync_recorder()

    def reset(self) -> None:
        """Clears what the tape watches, as if it were exited and entered again.

        Tensors that `watch()` made require grad are switched back, and a spent non-persistent
        tape may compute gradients again. torch keeps the graph in the tensors themselves, so a
        target computed before `reset()` still has gradients (TensorFlow's would be `None`).

        Example:
            >>> from kerasopt.tape import GradientTape
            >>> from kerasopt.variables import Variable
            >>> a, b = Variable(1.0, name="a"), Variable(2.0, name="b")
            >>> with GradientTape() as tape:
            ...     _ = a * 2
            ...     tape.reset()
            ...     _ = b * 2
            >>> [v.name for v in tape.watched_variables()]
            ['b']
        """
        self._release_watched()
        self._watched.clear()
        self._used = False
        self._sync_recorder()

    def _sync_recorder(self) -> None:
        if self._recorder is not None:
            spent = self._used and not self._persistent
            self._recorder.active = self._recording and not self._paused and not spent

    def _release_watched(self) -> None:
        for tensor in self._switched_on.values():
            tensor.requires_grad_(False)
        self._switched_on.clear()

    def gradient(
        self,
        target: Any,
        sources: Any,
        output_gradients: Any = None,
        unconnected_gradients: UnconnectedGradients | str = UnconnectedGradients.NONE,
    ) -> Any:
        """Computes the gradient of `target` with respect to `sources`.

        Several targets (a list or other nest) are summed, as in TensorFlow; a non-scalar
        target is summed too unless `output_gradients` weights it. The result has the
        structure of `sources`. Sparse gradients (e.g. from `nn.Embedding(sparse=True)`) come
        back as the sparse tensors autograd produces.

        When another tape is recording (this call sits inside an outer tape's `with` block, or
        inside this persistent tape's own block), the gradient computation is itself recorded
        (`create_graph=True`), so the outer tape can differentiate the result again.

        Args:
            target: A tensor, or a nest of tensors, to differentiate.
            sources: A tensor or a nest (lists, tuples, dicts) of tensors. An iterator, such as
                `model.parameters()`, is read into a list; an `nn.Module` (anywhere in the nest)
                stands for the list of its trainable parameters.
            output_gradients: Optional weights with the structure of `target`: one tensor (or
                `None` for ones) per target tensor, of the same shape.
            unconnected_gradients: What to return for a source the target does not depend on
                (or that does not require grad): `"none"` (default) or `"zero"`, case
                insensitive, or an `UnconnectedGradients` member.

        Returns:
            The gradients, in the structure of `sources`. If no target tensor requires grad,
            every source is unconnected: TensorFlow returns `None`s in that case too, and the
            usual cause is a loss computed outside any tape from tensors that do not require
            grad.

        Raises:
            RuntimeError: On a second call on a non-persistent tape.
            ValueError: If `target` or `output_gradients` holds something other than tensors,
                if their structures or shapes differ, or if `unconnected_gradients` is unknown.
            TypeError: If a source is not a tensor.

        Example:
            >>> import torch
            >>> from kerasopt.tape import GradientTape
            >>> from kerasopt.variables import Variable
            >>> w, unused = Variable([1.0, 2.0]), Variable(0.0)
            >>> with GradientTape() as tape:
            ...     y = w * w
            >>> tape.gradient(y, [w, unused], output_gradients=torch.tensor([1.0, 10.0]))
            [tensor([ 2., 40.]), None]
        """
        if self._used and not self._persistent:
            raise RuntimeError(_NON_PERSISTENT_MESSAGE)
        unconnected = _parse_unconnected(unconnected_gradients)

        flat_targets = []
        for path, leaf in _leaves(target):
            if not isinstance(leaf, torch.Tensor):
                raise ValueError(
                    f"gradient(): target{path} must be a torch.Tensor, got {type(leaf).__name__}."
                )
            flat_targets.append(leaf)
        if not flat_targets:
            raise ValueError("gradient(): target holds no tensors.")
        weights = self._output_gradients(target, output_gradients)

        if isinstance(sources, Iterator):
            sources = list(sources)
        sources = _expand_modules(sources)
        flat_sources = []
        for path, leaf in _leaves(sources):
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    f"gradient(): sources{path} must be a torch.Tensor, got {type(leaf).__name__}."
                )
            flat_sources.append(leaf)

        outputs, grad_outputs = [], []
        for tensor, weight in zip(flat_targets, weights):
            # A target that does not require grad depends on no source: it adds nothing.
            if tensor.requires_grad:
                outputs.append(tensor)
                grad_outputs.append(torch.ones_like(tensor) if weight is None else weight)
        # Distinct sources autograd can differentiate; the others are unconnected.
        inputs: dict[int, torch.Tensor] = {}
        for source in flat_sources:
            if source.requires_grad and (
                self._watch_accessed_variables or not source.is_leaf or id(source) in self._watched
            ):
                inputs.setdefault(id(source), source)

        create_graph = torch.is_grad_enabled() and any(
            tape is not self or self._persistent for tape in _RECORDING.tapes
        )
        if not self._persistent:
            # TensorFlow stops a non-persistent tape when it computes its gradient.
            self._used = True
        grads: dict[int, torch.Tensor | None] = {}
        # The tape's own bookkeeping ops must not show up as accesses.
        if self._recorder is not None:
            self._recorder.active = False
        try:
            if outputs and inputs and _distributed.active() and not create_graph:
                # DDP / FSDP2 reduce gradients in backward hooks that autograd.grad never runs:
                # one backward (reduced once by torch), read from `.grad` (kerasopt._distributed)
                results = _distributed.backward_gradients(
                    outputs, grad_outputs, list(inputs.values()), retain_graph=self._persistent
                )
                grads = dict(zip(inputs, results))
            elif outputs and inputs:
                results = torch.autograd.grad(  # type: ignore[assignment]
                    outputs,
                    list(inputs.values()),
                    grad_outputs=grad_outputs,
                    # Keeping the graph is needed to differentiate through it again, both for
                    # a persistent tape and for the recorded gradient (create_graph).
                    retain_graph=self._persistent or create_graph,
                    create_graph=create_graph,
                    allow_unused=True,
                )
                grads = dict(zip(inputs, results))
            flat_grads = []
            for source in flat_sources:
                grad = grads.get(id(source))
                if grad is None and unconnected is UnconnectedGradients.ZERO:
                    grad = torch.zeros_like(source)
                flat_grads.append(grad)
        finally:
            self._sync_recorder()
            if self._used:
                self._release_watched()
        return _pack(sources, iter(flat_grads))

    @staticmethod
    def _output_gradients(target: Any, output_gradients: Any) -> list[torch.Tensor | None]:
        """Flattens `output_gradients` along `target`'s structure, checking shapes."""
        weights: list[torch.Tensor | None] = []
        for path, tensor, weight in _leaves_along(target, output_gradients):
            if weight is not None:
                if not isinstance(weight, torch.Tensor):
                    weight = torch.as_tensor(weight, dtype=tensor.dtype, device=tensor.device)
                if weight.shape != tensor.shape:
                    raise ValueError(
                        f"gradient(): output_gradients{path} has shape {tuple(weight.shape)} "
                        f"but target{path} has shape {tuple(tensor.shape)}."
                    )
            weights.append(weight)
        return weights
