"""``LossScaleOptimizer``: dynamic (or static) loss scaling around another optimizer.

Semantics are tf_keras's ``LossScaleOptimizerV3`` (docs/reference-behaviour.md Part 2 §5): ``apply_gradients``
receives gradients that are already unscaled, a step with a non-finite gradient is skipped but
still counts in the inner optimizer's ``iterations``, and the scale never drops below 1.

The wrapper holds no optimizer math: it validates the step through the inner optimizer's plan,
decides from the gradients whether to commit it, and keeps the scale state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import _distributed, _traced
from .. import step as _step
from .._serialization import serialize
from .._state import StateError, expect
from .._sync import locked
from ..optimizer import Optimizer
from ..sparse import IndexedSlices
from ..step import pairs as read_pairs
from ._base import Transaction, Wrapper

__all__ = ["LossScaleOptimizer"]

_DEFAULT_INITIAL_SCALE = 2**15
_DEFAULT_GROWTH_STEPS = 2000
_MULTIPLIER = 2.0

_EXAMPLE_USAGE = """
    with ko.GradientTape() as tape:
      loss = loss_fn()
      scaled_loss = opt.get_scaled_loss(loss)
    scaled_grads = tape.gradient(scaled_loss, vars)
    grads = opt.get_unscaled_gradients(scaled_grads)
    opt.apply_gradients(zip(grads, vars))"""


def _maybe_warn_about_scaling(
    loss_has_been_scaled: bool, gradients_have_been_unscaled: bool
) -> None:
    """TF's three warnings for a manual loop that forgot to scale the loss or unscale gradients."""
    if loss_has_been_scaled and gradients_have_been_unscaled:
        return
    if not loss_has_been_scaled and not gradients_have_been_unscaled:
        message = (
            "You forgot to call LossScaleOptimizer.get_scaled_loss() and "
            "LossScaleOptimizer.get_unscaled_gradients() before calling "
            "LossScaleOptimizer.apply_gradients(). This will likely result in worse model "
            "quality, so please call them in the correct places! For example:"
        )
    elif not loss_has_been_scaled:
        message = (
            "You forgot to call LossScaleOptimizer.get_scaled_loss() before calling "
            "LossScaleOptimizer.apply_gradients() (you did call get_unscaled_gradients() "
            "however). This will likely result in worse model quality, so please call "
            "get_scaled_loss() in the correct place! For example:"
        )
    else:
        message = (
            "You forgot to call LossScaleOptimizer.get_unscaled_gradients() before calling "
            "LossScaleOptimizer.apply_gradients() (you did call get_scaled_loss() however). "
            "This will likely result in worse model quality, so please call "
            "get_unscaled_gradients() in the correct place! For example:"
        )
    warnings.warn(message + _EXAMPLE_USAGE, UserWarning, stacklevel=3)


def _all_finite(grads: Sequence[Tensor | IndexedSlices]) -> bool:
    """Whether every element of every gradient is finite (one host sync for the whole list)."""
    flags = []
    for g in grads:
        values = g.values if isinstance(g, IndexedSlices) else g
        if values.layout == torch.sparse_coo:
            values = values.coalesce().values()
        flags.append(torch.isfinite(_distributed.local(values)).all())
    if not flags:
        return True
    device = flags[0].device
    flag = torch.stack([f.to(device) for f in flags]).all()
    # FSDP2: each rank checks its shards; every rank must take the same decision
    return bool(_distributed.all_ranks_true(flag, [g for g in grads if isinstance(g, Tensor)]))


def _delegated(name: str) -> Any:
    """A property that reads and writes the inner optimizer's attribute ``name``."""

    def fget(self: LossScaleOptimizer) -> Any:
        return getattr(self._optimizer, name)

    def fset(self: LossScaleOptimizer, value: Any) -> None:
        setattr(self._optimizer, name, value)

    return property(fget, fset, doc=f"The inner optimizer's ``{name}``.")


class LossScaleOptimizer(Wrapper):
    """Loss scaling around another optimizer, with tf_keras's dynamic scale (LossScaleOptimizerV3).

    Loss scaling keeps small float16 gradients from underflowing: the loss is multiplied by a
    scale ``S`` before differentiation and the gradients are multiplied by ``1/S`` afterwards.
    ``minimize`` does both automatically; with a ``GradientTape`` call ``get_scaled_loss`` and
    ``get_unscaled_gradients`` yourself, then ``apply_gradients``.

    **Update rule** (docs/reference-behaviour.md Part 2 §5.2), dynamic scaling, ``finite`` = every element of every
    gradient is finite::

        if finite:
            if c + 1 >= N:   S' = 2·S;  S ← S' only if S' is finite;  c ← 0
            else:            c ← c + 1
            inner.apply_gradients(grads_and_vars)          # normal step
        else:
            S ← max(S / 2, 1);  c ← 0
            inner.iterations += 1                          # nothing else happens

    A skipped step leaves variables, slots, EMA averages and gradient accumulators untouched;
    only the inner optimizer's ``iterations`` advances (with gradient accumulation: by one
    update, so the accumulation cycle stays aligned). Static scaling applies every step and never
    changes ``S``.

    Unlike ``torch.amp.GradScaler``, the scale never falls below 1 and a skipped step still
    advances ``iterations`` (so Adam's bias correction and schedules move on).

    Args:
        inner_optimizer: the ``kerasopt`` optimizer to wrap. Its ``loss_scale_factor`` is set to
            None (the wrapper does the scaling) and it is flagged as wrapped.
        dynamic: whether the scale adapts. Must be a bool.
        initial_scale: the first scale (dynamic: defaults to 2**15; static: required).
        dynamic_growth_steps: dynamic only: finite steps in a row before the scale doubles
            (defaults to 2000).

    Raises:
        TypeError: ``inner_optimizer`` is not an optimizer or is a wrapper (a
            ``LossScaleOptimizer`` or ``MultiOptimizer``); ``dynamic`` is not a bool.
        ValueError: ``inner_optimizer`` is already wrapped; ``dynamic=False`` without
            ``initial_scale`` or with ``dynamic_growth_steps``.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable(1.0)
        >>> opt = ko.optimizers.LossScaleOptimizer(ko.optimizers.SGD(0.25))
        >>> _ = opt.minimize(lambda: var**2, [var])
        >>> float(var)
        0.5
        >>> with ko.GradientTape() as tape:
        ...     scaled_loss = opt.get_scaled_loss(var**2)
        >>> grads = opt.get_unscaled_gradients(tape.gradient(scaled_loss, [var]))
        >>> _ = opt.apply_gradients(zip(grads, [var]))
        >>> float(var)
        0.25
        >>> float(opt.loss_scale), int(opt.dynamic_counter)
        (32768.0, 2)
        >>> import torch
        >>> _ = opt.apply_gradients([(torch.tensor(float("inf")), var)])  # skipped
        >>> float(var), float(opt.loss_scale), int(opt.iterations)
        (0.25, 16384.0, 3)
    """

    def __init__(
        self,
        inner_optimizer: Optimizer,
        dynamic: bool = True,
        initial_scale: float | None = None,
        dynamic_growth_steps: int | None = None,
    ) -> None:
        # Everything is checked before anything changes: a failed construction leaves the inner
        # optimizer unflagged (TF flags it before checking the static-mode arguments).
        if not isinstance(inner_optimizer, Optimizer):
            raise TypeError(
                f'"inner_optimizer" must be an instance of Optimizer, but got: {inner_optimizer}.'
            )
        if not isinstance(dynamic, bool):
            raise TypeError(
                '"dynamic" argument to LossScaleOptimizer.__init__ must be a bool, but got: '
                f"{dynamic!r}"
            )
        if isinstance(inner_optimizer, LossScaleOptimizer):
            raise TypeError(
                f"LossScaleOptimizer cannot wrap another LossScaleOptimizer, but got: {inner_optimizer}"
            )
        if isinstance(inner_optimizer, Wrapper):
            raise TypeError(
                f"LossScaleOptimizer cannot wrap a {type(inner_optimizer).__name__} (it drives "
                "its inner optimizers' steps itself), but got: "
                f"{inner_optimizer}. A MultiOptimizer takes a static `loss_scale_factor`."
            )
        if _step.loss_scaled(inner_optimizer):
            _step.claim_for_loss_scaling(inner_optimizer)  # raises: one wrapper per optimizer
        if dynamic:
            initial = float(_DEFAULT_INITIAL_SCALE if initial_scale is None else initial_scale)
            growth: int | None = int(
                _DEFAULT_GROWTH_STEPS if dynamic_growth_steps is None else dynamic_growth_steps
            )
        else:
            if initial_scale is None:
                raise ValueError('"initial_scale" must be specified if "dynamic" is False')
            if dynamic_growth_steps is not None:
                raise ValueError(
                    '"dynamic_growth_steps" must be None if "dynamic" is False, but got: '
                    f"{dynamic_growth_steps}"
                )
            initial = float(initial_scale)
            growth = None
        # The wrapper owns no hyperparameters, slots or counter of its own (as in TF): those
        # are the inner optimizer's.
        super().__init__("LossScaleOptimizer")
        self._optimizer = inner_optimizer
        self._dynamic = dynamic
        self._initial_scale = initial
        self._growth_steps = growth
        self._scale: Tensor | None = None
        self._counter: Tensor | None = None
        if dynamic:
            self._scale = torch.tensor(initial, dtype=torch.float32)
            self._counter = torch.zeros((), dtype=torch.int64)
        self._loss_has_been_scaled = False
        self._gradients_have_been_unscaled = False
        if hasattr(inner_optimizer, "loss_scale_factor"):
            inner_optimizer.loss_scale_factor = None
        _step.claim_for_loss_scaling(inner_optimizer)

    # ------------------------------------------------------------------------------------------
    # loss scale
    @property
    def dynamic(self) -> bool:
        """Whether the loss scale is updated dynamically."""
        return self._dynamic

    @property
    def loss_scale(self) -> Tensor:
        """The current loss scale ``S`` as a float32 0-d tensor (a snapshot of its value)."""
        if self._scale is None:
            return torch.tensor(self._initial_scale, dtype=torch.float32)
        return self._scale.detach().clone()

    @property
    def dynamic_counter(self) -> Tensor | None:
        """The int64 counter ``c`` of finite steps since the last change of the scale (live)."""
        return self._counter

    @property
    def initial_scale(self) -> float:
        """The initial loss scale (the static scale when ``dynamic`` is False)."""
        return self._initial_scale

    @property
    def dynamic_growth_steps(self) -> int | None:
        """``N``: finite steps in a row before the scale doubles (None if static)."""
        return self._growth_steps

    @property
    def loss_scale_state(self) -> dict[str, Tensor]:
        """The live dynamic state tensors, keyed as TF checkpoints them (empty when static).

        ``{"current_loss_scale": S (float32), "good_steps": c (int64)}``; writing into these
        tensors (e.g. when loading a checkpoint) changes the optimizer's state.
        """
        if self._scale is None or self._counter is None:
            return {}
        return {"current_loss_scale": self._scale, "good_steps": self._counter}

    @property
    def inner_optimizer(self) -> Optimizer:
        """The wrapped optimizer."""
        return self._optimizer

    def _current_scale(self) -> Tensor:
        if self._scale is None:
            return torch.tensor(self._initial_scale, dtype=torch.float32)
        return self._scale

    def get_scaled_loss(self, loss: Any) -> Any:
        """``loss * S`` (S cast to the loss dtype); a callable loss gives a callable.

        Args:
            loss: a loss tensor, or a zero-argument callable returning one.

        Returns:
            The scaled loss, or a zero-argument callable computing it.
        """
        self._loss_has_been_scaled = True
        if callable(loss):
            fn: Callable[[], Tensor] = loss

            def scaled_loss() -> Tensor:
                value = fn()
                return value * self._current_scale().to(value.dtype).to(value.device)

            return scaled_loss
        return loss * self._current_scale().to(loss.dtype).to(loss.device)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """Keras 3's name for ``get_scaled_loss``."""
        result: Tensor = self.get_scaled_loss(loss)
        return result

    def get_unscaled_gradients(self, grads: Iterable[Any]) -> list[Any]:
        """Multiplies each gradient by ``1/S`` (the reciprocal computed in float32, then cast).

        Args:
            grads: gradients (dense tensors, ``IndexedSlices``, torch sparse COO tensors or
                None, which is kept).

        Returns:
            The unscaled gradients, in a list.
        """
        self._gradients_have_been_unscaled = True
        reciprocal = 1.0 / self._current_scale()
        out: list[Any] = []
        for g in grads:
            if g is None:
                out.append(None)
            elif isinstance(g, IndexedSlices):
                r = reciprocal.to(g.dtype).to(g.device)
                out.append(g.with_values(g.values * r))
            else:
                out.append(g * reciprocal.to(g.dtype).to(g.device))
        return out

    def _update_scale(self, finite: bool) -> None:
        scale, counter, growth = self._scale, self._counter, self._growth_steps
        assert scale is not None and counter is not None and growth is not None
        if finite:
            grow = counter + 1 >= growth
            doubled = scale * _MULTIPLIER
            scale.copy_(torch.where(grow & torch.isfinite(doubled), doubled, scale))
            counter.copy_(torch.where(grow, torch.zeros_like(counter), counter + 1))
        else:
            scale.copy_(torch.clamp(scale / _MULTIPLIER, min=1.0))
            counter.zero_()

    # ------------------------------------------------------------------------------------------
    # gradients and steps
    def compute_gradients(
        self, loss: Any, var_list: Any, tape: Any = None, grad_loss: Tensor | None = None
    ) -> list[tuple[Any, Tensor]]:
        """Scales the loss, differentiates it and unscales the gradients.

        Args:
            loss: a zero-argument callable returning the loss, or a loss tensor (recorded by
                ``tape`` if given, otherwise differentiated through autograd).
            var_list: as for ``Optimizer.minimize``.
            tape: a ``kerasopt.GradientTape`` that recorded a tensor ``loss``.
            grad_loss: optional gradient of the loss.

        Returns:
            ``(unscaled gradient, variable)`` pairs.
        """
        with torch.enable_grad():
            scaled = self.get_scaled_loss(loss)
        pairs = _step.gradients(self._optimizer, scaled, var_list, grad_loss, tape)
        grads = self.get_unscaled_gradients([g for g, _ in pairs])
        return list(zip(grads, [v for _, v in pairs]))

    def minimize(
        self,
        loss: Any,
        var_list: Any,
        grad_loss: Tensor | None = None,
        name: str | None = None,
        tape: Any = None,
    ) -> Tensor:
        """Scaled loss → gradients → unscaled gradients → ``apply_gradients`` (all automatic).

        Args:
            loss: a zero-argument callable returning the loss, or a loss tensor.
            var_list: tensors, an ``nn.Module``, a dict of named tensors, or a callable.
            grad_loss: optional gradient of the loss.
            name: ignored (TF's op name).
            tape: a ``kerasopt.GradientTape`` that recorded a tensor ``loss``.

        Returns:
            The inner optimizer's ``iterations`` after the step.
        """
        return self._apply(self.compute_gradients(loss, var_list, tape=tape, grad_loss=grad_loss))

    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[Any, Tensor]],
        name: str | None = None,
        experimental_aggregate_gradients: bool = True,
    ) -> Tensor:
        """Applies already-unscaled gradients, or skips the step if one is not finite.

        Warns (three variants, as TF) when ``get_scaled_loss`` and/or ``get_unscaled_gradients``
        were never called.

        Args:
            grads_and_vars: (gradient, variable) pairs, gradients already unscaled.
            name: ignored (TF's op name).
            experimental_aggregate_gradients: accepted for TF compatibility.

        Returns:
            The inner optimizer's ``iterations`` after this call.

        Raises:
            ValueError: no gradient at all, or an invalid pair (nothing changes then).
        """
        if torch.compiler.is_compiling():
            # Traced by torch.compile: the inner optimizer's traced step, skipped by selection
            # where a gradient is not finite (kerasopt._traced); anything else (or a warning
            # to give) runs the eager step below.
            pairs = list(grads_and_vars)
            if (
                self._loss_has_been_scaled
                and self._gradients_have_been_unscaled
                and _traced.ready(self._optimizer, pairs, experimental_aggregate_gradients)
            ):
                return self._traced_apply(pairs)
            grads_and_vars = pairs
        return self._apply_gradients(grads_and_vars)

    # The eager step is bookkeeping (checks, the transaction, locks) around engines that compile
    # themselves: where a traced function reaches it, it runs as it does eagerly (one graph
    # break) instead of being traced in fragments.
    @torch.compiler.disable
    def _apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        _maybe_warn_about_scaling(self._loss_has_been_scaled, self._gradients_have_been_unscaled)
        return self._apply(grads_and_vars)

    def _traced_apply(self, pairs: list[Any]) -> Tensor:
        """The step while dynamo traces: the inner step, a no-op but for ``iterations`` where a
        gradient is not finite, then the scale's update, all selected by tensors (the eager
        step's branches)."""
        inner = self._optimizer
        if not self._dynamic:
            return _traced.apply(inner, pairs)
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(g).all() for g, _ in pairs]).all()
            _traced.apply(inner, pairs, finite)
            scale, counter, growth = self._scale, self._counter, self._growth_steps
            assert scale is not None and counter is not None and growth is not None
            grow = finite & (counter + 1 >= growth)
            doubled = scale * _MULTIPLIER
            up = torch.where(grow & torch.isfinite(doubled), doubled, scale)
            down = torch.clamp(scale / _MULTIPLIER, min=1.0)
            counter.copy_(torch.where(finite & ~grow, counter + 1, torch.zeros_like(counter)))
            scale.copy_(torch.where(finite, up, down))
        return inner.iterations

    def _apply(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        inner = self._optimizer
        grads_and_vars = read_pairs(grads_and_vars)
        if not grads_and_vars:
            return inner.apply_gradients([])  # TF: builds, applies nothing
        # The inner optimizer's plan validates and filters the pairs and changes nothing; the
        # scale is touched only once the step is known to be valid.
        with self._step_lock, Transaction() as step:
            step.plan(inner, grads_and_vars)
            if self._dynamic:
                finite = _all_finite([g for g, _ in step.raw_grads()])
                if not finite:
                    self._update_scale(finite)
                    _step.skip(inner)  # TF counts the skipped update
                    return inner.iterations
            step.commit()
            if self._dynamic:
                # After the inner commit: a step that raises (a variable constraint) leaves the
                # scale and its good-step counter as they were.
                self._update_scale(True)
            return inner.iterations

    # ------------------------------------------------------------------------------------------
    # delegation to the inner optimizer
    learning_rate = _delegated("learning_rate")
    lr = _delegated("learning_rate")
    decay = _delegated("decay")
    clipnorm = _delegated("clipnorm")
    clipvalue = _delegated("clipvalue")
    global_clipnorm = _delegated("global_clipnorm")
    weight_decay = _delegated("weight_decay")
    use_ema = _delegated("use_ema")
    ema_momentum = _delegated("ema_momentum")
    ema_overwrite_frequency = _delegated("ema_overwrite_frequency")
    gradient_accumulation_steps = _delegated("gradient_accumulation_steps")
    gradient_transformers = _delegated("gradient_transformers")
    gradient_aggregator = _delegated("gradient_aggregator")
    jit_compile = _delegated("jit_compile")
    implementation = _delegated("implementation")
    slot_dtype = _delegated("slot_dtype")
    # (every feature of kerasopt._features.FEATURES but loss_scale_factor, which the wrapper
    # answers itself: test_features walks the table)

    @property
    def loss_scale_factor(self) -> None:
        """Always None: the wrapper scales the loss itself."""
        return None

    @property
    def iterations(self) -> Tensor:
        """The inner optimizer's ``iterations`` (skipped steps included)."""
        return self._optimizer.iterations

    @iterations.setter
    def iterations(self, value: int | Tensor) -> None:
        self._optimizer.iterations = value

    @property
    def built(self) -> bool:
        return self._optimizer.built

    def build(self, var_list: Any) -> None:
        """Creates the inner optimizer's slots for ``var_list``."""
        self._optimizer.build(var_list)

    @locked
    def set_weights(self, weights: Sequence[Any]) -> None:
        """The inner optimizer's ``set_weights`` (the loss-scale state is not among the
        weights, as in TF)."""
        self._optimizer.set_weights(weights)

    def add_slot(
        self,
        var: Tensor,
        slot_name: str,
        initializer: Any = "zeros",
        shape: Sequence[int] | None = None,
    ) -> Tensor:
        return self._optimizer.add_slot(var, slot_name, initializer, shape)

    def exclude_from_weight_decay(
        self, var_list: Sequence[Tensor] | None = None, var_names: Sequence[str] | None = None
    ) -> None:
        self._optimizer.exclude_from_weight_decay(var_list, var_names)

    # what the Wrapper base forwards: variables / weights / get_weights (the inner
    # optimizer's: the loss-scale state is not among them, as in TF), get_slot,
    # get_slot_names, finalize_variable_values
    def _inners(self) -> list[Optimizer]:
        return [self._optimizer]

    def _owner_of(self, var: Tensor) -> Optimizer:
        return self._optimizer

    def _flatten_var_list(self, var_list: Any) -> list[Tensor]:
        return _step.variables(self._optimizer, var_list)

    def _state_prefix(self, index: int) -> str:
        return "inner/"

    # ------------------------------------------------------------------------------------------
    # state
    @locked
    def state_dict(self) -> dict[str, Tensor]:
        """The inner optimizer's state under ``inner/`` plus ``loss_scale/current_loss_scale``
        and ``loss_scale/good_steps`` (dynamic scaling only)."""
        state = self._inner_state()
        for key, value in self.loss_scale_state.items():
            state[f"loss_scale/{key}"] = value.detach().clone()
        return state

    @locked
    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        """Restores ``state_dict()`` output; everything is checked before anything changes.

        Raises:
            ValueError: a key, shape or dtype that does not fit (the message names the key).
        """
        if not isinstance(state_dict, dict):
            raise StateError(f"A state dict must be a dict; got {type(state_dict).__name__}.")
        parts, own = self._split_state(state_dict)
        expected = {f"loss_scale/{k}": v for k, v in self.loss_scale_state.items()}
        for key, value in own.items():
            if key not in expected:
                raise StateError(f"Unknown state key {key!r} for LossScaleOptimizer.")
            expect(key, value, (), expected[key].dtype)
        missing = sorted(set(expected) - set(own))
        if missing:
            raise StateError(f"State dict has no {missing[0]!r} key (dynamic loss scaling state).")
        if own and not torch.isfinite(own["loss_scale/current_loss_scale"]):
            raise StateError("State key 'loss_scale/current_loss_scale' is not finite.")
        self._load_inner_state(parts, strict)  # validated before assigning
        with torch.no_grad():
            for key, value in own.items():
                expected[key].copy_(value)

    # ------------------------------------------------------------------------------------------
    # config
    def get_config(self) -> dict[str, Any]:
        """``{inner_optimizer: serialized inner, dynamic, initial_scale, dynamic_growth_steps}``."""
        return {
            "inner_optimizer": serialize(self._optimizer),
            "dynamic": self._dynamic,
            "initial_scale": self._initial_scale,
            "dynamic_growth_steps": self._growth_steps,
        }

    _optimizer_arguments = ("inner_optimizer",)  # from_config deserializes it

    def _describe(self) -> str:
        scale = float(self._current_scale())
        return f"inner={self._optimizer!r} dynamic={self._dynamic} loss_scale={scale}"
