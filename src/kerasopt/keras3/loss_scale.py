"""``LossScaleOptimizer`` — Keras 3's ``keras.optimizers.LossScaleOptimizer``.

The wrapper machinery (delegation to the inner optimizer, one all-or-nothing ``Transaction`` per
step, state dict) is ``kerasopt.optimizers.LossScaleOptimizer``'s; what Keras 3 does differently
is the scale's rule and where the gradients are unscaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import _state, _traced
from .. import step as _step
from ..optimizer import Optimizer
from ..sparse import IndexedSlices
from ..step import pairs as read_pairs
from ..wrappers import loss_scale as _legacy
from ..wrappers._base import Transaction
from ._base import CLASSES, VariableList

# Keras 3 accepts these base keywords only at their defaults (configs of older Keras versions).
_BASE_DEFAULTS: dict[str, Any] = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def _not_in_keras3(name: str) -> property:
    def fget(self: LossScaleOptimizer) -> Any:
        raise AttributeError(
            f"Keras 3's LossScaleOptimizer has no `{name}`: scale the loss with `scale_loss(loss)` "
            "and pass the scaled gradients to `apply_gradients`, which unscales them "
            "(kerasopt.optimizers.LossScaleOptimizer is tf_keras's, with `{name}`)."
        )

    return property(fget)


class LossScaleOptimizer(_legacy.LossScaleOptimizer):
    """Dynamic loss scaling around another optimizer, as Keras 3 does it.

    ``scale_loss(loss)`` multiplies the loss by the scale ``S``; ``apply_gradients`` receives the
    **scaled** gradients and divides them by ``S`` itself. ``minimize`` does all of it.

    **Update rule** (``finite`` = every element of every gradient is finite)::

        if finite:
            inner.apply_gradients(g / S)
            if c == N - 1:  c = 0;  S = 2 * S
            else:           c = c + 1
        else:
            c = 0;  S = S / 2                 # nothing else happens: no inner step

    Unlike tf_keras's (``kerasopt.optimizers.LossScaleOptimizer``): a skipped step does not
    count in ``iterations``, ``S`` has no floor of 1 (and is doubled without a finiteness check),
    ``dynamic=False`` is refused, and there is no ``get_scaled_loss`` / ``get_unscaled_gradients``.
    ``variables`` is Keras 3's: the wrapper's ``iteration`` and ``learning_rate`` (unused, 0),
    ``step_counter``, ``dynamic_scale``, then the inner optimizer's variables.

    Args:
        inner_optimizer: the optimizer to wrap (its ``loss_scale_factor`` is set to None).
        initial_scale: the first scale. Defaults to 2**15.
        dynamic_growth_steps: finite steps in a row before the scale doubles. Defaults to 2000.
        name: defaults to ``"loss_scale_optimizer"``.
        **kwargs: ``dynamic=True`` and the base keywords at their defaults only (older configs).

    Raises:
        ValueError: ``dynamic=False``, a base keyword not at its default, or an unknown keyword.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable(1.0)
        >>> opt = ko.keras3.LossScaleOptimizer(ko.keras3.SGD(0.25), initial_scale=4.0)
        >>> scaled_grad = opt.scale_loss(torch.tensor(2.0))  # a gradient of 2, scaled
        >>> _ = opt.apply_gradients([(scaled_grad, var)])
        >>> float(var), float(opt.loss_scale), int(opt.iterations)
        (0.5, 4.0, 1)
        >>> _ = opt.apply_gradients([(torch.tensor(float("inf")), var)])  # skipped
        >>> float(var), float(opt.loss_scale), int(opt.iterations)
        (0.5, 2.0, 1)
    """

    get_scaled_loss = _not_in_keras3("get_scaled_loss")
    get_unscaled_gradients = _not_in_keras3("get_unscaled_gradients")

    def __init__(
        self,
        inner_optimizer: Optimizer,
        initial_scale: float = 2.0**15,
        dynamic_growth_steps: int = 2000,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not kwargs.pop("dynamic", True):
            raise ValueError(
                "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
                "`loss_scale_factor` directly on the `inner_optimizer`."
            )
        for arg, default in _BASE_DEFAULTS.items():
            if arg in kwargs and kwargs.pop(arg) != default:
                raise ValueError(
                    f"LossScaleOptimizer does not support `{arg}`. Instead, set `{arg}` on the "
                    "`inner_optimizer`."
                )
        if kwargs:
            raise ValueError(
                f"LossScaleOptimizer does not support arguments: `{'`, `'.join(kwargs)}`."
            )
        super().__init__(
            inner_optimizer,
            dynamic=True,
            initial_scale=initial_scale,
            dynamic_growth_steps=dynamic_growth_steps,
        )
        self._name = name if name is not None else "loss_scale_optimizer"
        self._own_iteration = torch.zeros((), dtype=torch.int64)
        self._own_learning_rate = torch.zeros((), dtype=torch.float32)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """``loss * S``."""
        return loss * self._current_scale().to(loss.dtype).to(loss.device)

    def _own_variables(self) -> list[Tensor]:
        # Keras 3's own: the base class's `iteration` and `learning_rate` (never used by the
        # wrapper: both stay 0), then the dynamic state.
        assert self._counter is not None and self._scale is not None
        return [self._own_iteration, self._own_learning_rate, self._counter, self._scale]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assigns ``weights`` in ``variables`` order (the wrapper's four, then the inner's).

        Raises:
            ValueError: a count or shape mismatch (nothing is assigned then).
        """
        own = self._own_variables()
        weights = list(weights)
        values = _state.checked_weights(self._name, own, weights[: len(own)])
        self._optimizer.set_weights(weights[len(own) :])
        with torch.no_grad():
            for target, value in zip(own, values):
                target.copy_(value.to(target.dtype))

    @property
    def variables(self) -> VariableList:
        """``[iteration, learning_rate, step_counter, dynamic_scale, inner variables...]``."""
        return VariableList(_legacy.LossScaleOptimizer.variables(self))

    def compute_gradients(
        self, loss: Any, var_list: Any, tape: Any = None, grad_loss: Tensor | None = None
    ) -> list[tuple[Any, Tensor]]:
        """Scales the loss and differentiates it: the (scaled) gradients ``apply_gradients``
        takes."""
        if callable(loss):
            fn = loss

            def scaled() -> Tensor:
                return self.scale_loss(fn())

            target: Any = scaled
        else:
            target = self.scale_loss(loss)
        with torch.enable_grad():
            return _step.gradients(self._optimizer, target, var_list, grad_loss, tape)

    def minimize(
        self,
        loss: Any,
        var_list: Any,
        grad_loss: Tensor | None = None,
        name: str | None = None,
        tape: Any = None,
    ) -> Tensor:
        """Scaled loss → scaled gradients → ``apply_gradients`` (which unscales them)."""
        return self._apply(self.compute_gradients(loss, var_list, tape=tape, grad_loss=grad_loss))

    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[Any, Tensor]],
        name: str | None = None,
        experimental_aggregate_gradients: bool = True,
    ) -> Tensor:
        """Unscales the (scaled) gradients and applies them, or skips the step if one is not
        finite.

        Returns:
            The inner optimizer's ``iterations`` after this call.

        Raises:
            ValueError: no gradient at all, or an invalid pair (nothing changes then).
        """
        if torch.compiler.is_compiling():
            # Traced by torch.compile (kerasopt._traced): the unscaled inner step, a no-op where
            # a gradient is not finite; anything else runs the eager step below.
            pairs = list(grads_and_vars)
            if _traced.ready(self._optimizer, pairs, experimental_aggregate_gradients):
                return self._traced_apply(pairs)
            grads_and_vars = pairs
        return self._apply_gradients(grads_and_vars)

    # The eager step is bookkeeping (checks, the transaction, locks) around engines that compile
    # themselves: where a traced function reaches it, it runs as it does eagerly (one graph
    # break) instead of being traced in fragments.
    @torch.compiler.disable
    def _apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        return self._apply(grads_and_vars)

    def _traced_apply(self, pairs: list[Any]) -> Tensor:
        """The step while dynamo traces: ``_apply``'s branches as selections by tensors (a
        skipped step changes nothing, ``iterations`` included, as in Keras 3)."""
        inner = self._optimizer
        with torch.no_grad():
            scale = self._current_scale()
            unscaled = [(_divide(g, scale), v) for g, v in pairs]
            finite = torch.stack([torch.isfinite(g).all() for g, _ in unscaled]).all()
            _traced.apply(inner, unscaled, finite, count_skip=False)
            counter, growth = self._counter, self._growth_steps
            assert counter is not None and growth is not None
            grow = finite & (counter == growth - 1)
            counter.copy_(torch.where(finite & ~grow, counter + 1, torch.zeros_like(counter)))
            scale.copy_(torch.where(finite, torch.where(grow, scale * 2.0, scale), scale * 0.5))
        return inner.iterations

    def _apply(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        inner = self._optimizer
        pairs = read_pairs(grads_and_vars)
        if not pairs:
            return inner.apply_gradients([])
        with self._step_lock, Transaction() as step:
            scale = self._current_scale()
            unscaled = [(_divide(g, scale), v) for g, v in pairs]
            step.plan(inner, unscaled)  # validates everything; changes nothing
            counter, growth = self._counter, self._growth_steps
            assert counter is not None and growth is not None
            if not _legacy._all_finite([g for g, _ in step.raw_grads()]):
                counter.zero_()
                scale.copy_(scale * 0.5)
                return inner.iterations
            step.commit()
            if int(counter) == growth - 1:
                counter.zero_()
                scale.copy_(scale * 2.0)
            else:
                counter.add_(1)
            return inner.iterations

    def get_config(self) -> dict[str, Any]:
        """``{name, inner_optimizer, initial_scale, dynamic_growth_steps}`` (Keras 3's keys)."""
        config = super().get_config()
        del config["dynamic"]
        return {"name": self._name, **config}

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> LossScaleOptimizer:
        """As the base's, reading the inner optimizer's class name as a ``kerasopt.keras3``
        class (``custom_objects`` first)."""
        return super().from_config(config, {**CLASSES, **(custom_objects or {})})


def _divide(grad: Any, scale: Tensor) -> Any:
    """``ops.divide(grad, S)``: a division, not a multiplication by ``1/S``."""
    if grad is None:
        return None
    if isinstance(grad, IndexedSlices):
        return grad.with_values(grad.values / scale.to(grad.values.dtype).to(grad.values.device))
    if not isinstance(grad, Tensor):
        grad = torch.as_tensor(grad)
    return grad / scale.to(grad.dtype).to(grad.device)
