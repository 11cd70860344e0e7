"""ScheduleFreeAdamW — Keras 3's ``ScheduleFreeAdamW`` (Defazio et al., 2024; not in tf_keras)."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, number_value, tf_cast_value
from ..optimizer import Coefficients
from ._keras3 import Keras3Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords


def _number(name: str, value: Any) -> None:
    # Keras 3 does not check; a non-number would fail only inside a step, so kerasopt refuses it
    # at construction (a failed step must change nothing).
    if number_value(value) is None:
        raise ValueError(f"Argument `{name}` must be a number. Received: {name}={value!r}")


def _copy_of(var: Tensor) -> Any:
    """A slot initializer ``(shape, dtype) -> tensor`` giving a contiguous copy of ``var``."""

    def initializer(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        return var.detach().clone(memory_format=torch.contiguous_format)

    return initializer


def _cast_count(value: Any) -> float:
    # Keras 3 `ops.cast(warmup_steps, dtype)`: an int goes through int32 (exact), a float through
    # float32.
    if isinstance(value, numbers.Integral):
        return float(value)
    return tf_cast_value(value)


class ScheduleFreeAdamWCoefficients(Coefficients):
    """ScheduleFreeAdamW's step coefficients (``prepare`` sets them, the rule reads them)."""

    beta_1: Tensor
    one_minus_beta_1: Tensor
    one_minus_beta_2: Tensor
    bias_correction_2: Tensor
    epsilon: Tensor
    lr: Tensor
    weight: Tensor
    one_minus_weight: Tensor


class ScheduleFreeAdamW(Keras3Optimizer):
    """Schedule-Free AdamW: Adam-style steps on a sequence z, averaged into x, trained at y.

    The model variable always holds the **training** point y, an interpolation between z (the
    sequence the Adam-normalised gradient steps move, slot ``momentum``, initialised to a copy of
    the variable's initial value) and x (the running average of z, the **evaluation** weights,
    not stored: ``x = (y − (1 − β1) z) / β1``). No learning-rate schedule is needed beyond the
    optional linear warmup. The base class's decoupled ``weight_decay`` (default None) is applied
    to y before the step.

    Update rule (docs/reference-behaviour.md Part 2 §3.6), ``t = iterations + 1``, η the learning rate::

        η_t   = η · min(t / warmup_steps, 1)   if warmup_steps > 0 else η
        z_old = z
        v ← v + (g² − v)(1 − β2)
        z ← z − η_t · g / ( sqrt(v / (1 − β2^t)) + ε )
        x_old = (y − (1 − β1) z_old) / β1
        w     = 1 / t
        x     = (1 − w) x_old + w z
        y ← (1 − β1) z + β1 x           (assigned to the variable)

    Keras 3 offers no train/eval swap; kerasopt adds two helpers (an addition, not Keras API)
    that leave the optimizer's state untouched: ``eval_params()`` returns the evaluation weights
    x, and ``with opt.swap_eval_params(): ...`` puts x into the variables for the block and
    restores y exactly afterwards. ``torch.optim`` has no schedule-free optimizer; the
    ``schedulefree`` package's ``AdamWScheduleFree`` differs by weighting its average with
    ``lr²`` (so warmup steps count less) and adding its weight decay to the normalised step (so z
    decays too).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.0025.
        beta_1: interpolation weight between x and z (and the averaging's "momentum").
            Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: added to the bias-corrected ``sqrt(v)``. Defaults to 1e-8.
        warmup_steps: number of steps of linear learning-rate warmup (0: none). Defaults to 0.
        name: defaults to ``"ScheduleFreeAdamW"``.
        **kwargs: the base-class keywords (``weight_decay``, ``clipnorm``, ...).

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, -2.0])
        >>> opt = ko.optimizers.ScheduleFreeAdamW(learning_rate=0.1)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])  # t = 1: w = 1, so x = y = z
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.9, -1.9]
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]  # y, the training point
        [0.848, -1.8464]
        >>> [round(x, 4) for x in opt.get_slot(var, "momentum").numpy().tolist()]  # z
        [0.8054, -1.8026]
        >>> [round(x, 4) for x in opt.eval_params([var])[0].numpy().tolist()]  # x
        [0.8527, -1.8513]
        >>> opt.get_slot_names()
        ['momentum', 'velocity']
    """

    coefficients: ClassVar[type[Coefficients]] = ScheduleFreeAdamWCoefficients

    learning_rate = Hyper(0.0025, check=non_negative)
    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-8)
    warmup_steps = Param(0, check=_number)

    slots: ClassVar[tuple[str, ...]] = ("momentum", "velocity")
    slot_aliases: ClassVar[dict[str, str]] = {"z": "momentum", "v": "velocity"}
    slot_arguments: ClassVar[dict[str, str]] = {"momentum": "z", "velocity": "v"}  # the paper's

    def __init__(
        self,
        learning_rate: Any = 0.0025,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        warmup_steps: int = 0,
        name: str = "ScheduleFreeAdamW",
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(name=name, learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.warmup_steps = warmup_steps

    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        # Keras 3: momentum and velocity variable by variable; z starts at a copy of θ₀ (so
        # x₀ = y₀ = θ₀), v at zeros.
        for var in var_list:
            self.add_slot(var, "momentum", _copy_of(var))
            self.add_slot(var, "velocity")

    def _coefficients(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        # fidelity: Keras 3 takes `ops.cast(beta_1, dtype)`; on TensorFlow that cast goes through
        # float32 (visible in float64), and `1 - beta_1` is then computed in the variable's dtype.
        beta_1 = self._const(tf_cast_value(self.beta_1), dtype, device)
        return beta_1, 1.0 - beta_1

    def prepare(
        self, c: ScheduleFreeAdamWCoefficients, device: torch.device, dtype: torch.dtype
    ) -> None:
        local_step = self._local_step(dtype, device)
        # fidelity: every constant goes through Keras 3's `ops.cast(python_float, dtype)`, which
        # TensorFlow rounds to float32 first; `1 - beta` is computed on the cast value.
        c.beta_1, c.one_minus_beta_1 = self._coefficients(dtype, device)
        beta_2 = self._const(tf_cast_value(self.beta_2), dtype, device)
        c.one_minus_beta_2 = 1.0 - beta_2
        c.bias_correction_2 = 1.0 - torch.pow(beta_2, local_step)
        c.epsilon = self._const(tf_cast_value(self.epsilon), dtype, device)
        lr = c.lr_t  # the base rate stays in `lr_t`: weight decay uses it, without warmup
        if self.warmup_steps > 0:
            warmup = self._const(_cast_count(self.warmup_steps), dtype, device)
            one = self._const(1.0, dtype, device)
            lr = lr * torch.minimum(local_step / warmup, one)
        c.lr = lr
        c.weight = 1.0 / local_step
        c.one_minus_weight = 1.0 - c.weight

    def update(
        self, var: Any, grad: Any, z: Any, v: Any, *, c: ScheduleFreeAdamWCoefficients
    ) -> None:
        # x_old is taken from z before z moves (z_old; Keras's torch backend reads the moved z
        # through an alias here, its JAX/TF backends and the paper do not).
        x = (var - z * c.one_minus_beta_1).div_(c.beta_1)
        v.add_(c.square(grad).sub_(v).mul_(c.one_minus_beta_2))
        z.sub_((grad * c.lr).div_((v / c.bias_correction_2).sqrt().add_(c.epsilon)))
        x.mul_(c.one_minus_weight).add_(z * c.weight)
        var.copy_((z * c.one_minus_beta_1).add_(x.mul_(c.beta_1)))

    # -- evaluation weights (a kerasopt addition) ------------------------------------------------
    def eval_params(self, var_list: Any = None) -> list[Tensor]:
        """The evaluation weights ``x = (y − (1 − β1) z) / β1`` of each variable, as new tensors.

        Nothing is changed: not the variables, not the slots. A variable the optimizer has not
        seen yet has ``z = θ`` implicitly, so its x is a copy of its value.

        Args:
            var_list: the variables (tensors, an ``nn.Module``, a dict of named tensors, or a
                callable returning them). Defaults to every variable the optimizer has seen, in
                the order it first saw them.

        Returns:
            One tensor per variable, in the variable's dtype and on its device.
        """
        variables = self._eval_variables(var_list)
        out = []
        with torch.no_grad():
            for var in variables:
                record = self._store.by_id.get(id(var))
                if record is None:
                    out.append(var.detach().clone())
                    continue
                beta_1, one_minus_beta_1 = self._coefficients(var.dtype, var.device)
                z = record.slots["momentum"]
                out.append((var.detach() - z * one_minus_beta_1) / beta_1)
        return out

    @contextlib.contextmanager
    def swap_eval_params(self, var_list: Any = None) -> Iterator[list[Tensor]]:
        """Puts the evaluation weights x into the variables for a ``with`` block.

        On exit (also on an exception) each variable gets back its exact training value y, so
        training continues as if nothing happened. Do not step the optimizer inside the block.

        Args:
            var_list: as for ``eval_params`` (default: every variable the optimizer has seen).

        Yields:
            The variables, now holding x.

        Example:
            >>> import kerasopt as ko
            >>> var = ko.Variable([1.0, -2.0])
            >>> opt = ko.optimizers.ScheduleFreeAdamW(learning_rate=0.1)
            >>> for _ in range(2):
            ...     _ = opt.minimize(lambda: (var**2).sum(), [var])
            >>> with opt.swap_eval_params():
            ...     print([round(x, 4) for x in var.numpy().tolist()])
            [0.8527, -1.8513]
            >>> [round(x, 4) for x in var.numpy().tolist()]
            [0.848, -1.8464]
        """
        variables = self._eval_variables(var_list)
        evaluation = self.eval_params(variables)
        with torch.no_grad():
            training = [var.detach().clone() for var in variables]
            for var, x in zip(variables, evaluation):
                var.copy_(x)
        try:
            yield variables
        finally:
            with torch.no_grad():
                for var, y in zip(variables, training):
                    var.copy_(y)

    def _eval_variables(self, var_list: Any) -> list[Tensor]:
        if var_list is None:
            return [record.var for record in self._store.by_id.values()]
        return self._flatten_var_list(var_list)
