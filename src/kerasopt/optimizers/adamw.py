"""AdamW — Keras 3 / tf_keras ``AdamW``: Adam with decoupled weight decay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Param
from ..optimizer import Coefficients
from ._keras3 import Keras3Optimizer
from .adam import Adam, AdamCoefficients

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import OtherKeywords


class AdamW(Keras3Optimizer, Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as Keras 3 and tf_keras define it.

    The base class applies the decay ``var -= var * weight_decay * lr`` to every variable not
    excluded by ``exclude_from_weight_decay``, then this rule takes Adam's step; only
    ``learning_rate`` is stored in float32. ``beta_1``, ``beta_2`` and ``epsilon`` are Python
    floats (as in Keras 3): ``1 - beta`` and ``epsilon`` are exact in the variable's dtype, while
    the bias-correction powers use ``beta`` as TensorFlow's ``tf.cast`` gives it (float32-rounded,
    which shows in float64).

    Update rule (docs/reference-behaviour.md Part 2 §3.1), ``t = iterations + 1``, after the base's weight decay::

        m ← m + (g − m)(1 − β1)
        v ← v + (g² − v)(1 − β2)
        if amsgrad: v̂ ← max(v̂, v); use v̂ in place of v below
        α = η · sqrt(1 − β2^t) / (1 − β1^t)
        θ ← θ − α · m / (sqrt(v) + ε)

    i.e. ``θ_t = θ_{t−1}(1 − ηλ) − α m / (√v + ε)``.

    Unlike ``torch.optim.AdamW`` (``weight_decay=1e-2``, ``eps=1e-8`` added to the bias-corrected
    ``sqrt(v)``), the decay defaults to 0.004 and ``epsilon`` is TF's "epsilon hat" (added after the
    bias correction is folded into ``α``).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        weight_decay: the decoupled decay coefficient λ; required (not None). Defaults to 0.004.
        beta_1: decay of the first moment. Defaults to 0.9.
        beta_2: decay of the second moment. Defaults to 0.999.
        epsilon: "epsilon hat", used as given. Defaults to 1e-7.
        amsgrad: use the AMSGrad variant (slot ``vhat``).
        name: defaults to ``"AdamW"``.
        **kwargs: the base-class keywords (``clipnorm``, ``use_ema``, ...).

    Raises:
        ValueError: ``weight_decay`` is None.

    Example:
        >>> import kerasopt as ko
        >>> var = ko.Variable([1.0, 2.0])
        >>> opt = ko.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [0.85, 1.8]
        >>> opt.get_slot_names()
        ['m', 'v']
    """

    coefficients: ClassVar[type[Coefficients]] = AdamCoefficients  # Adam's rule, these four set

    # Keras 3 keeps these as Python floats, not float32 variables (Adam's legacy declarations
    # are float32 hyperparameters); see `prepare` for where TF rounds them anyway.
    beta_1 = Param(0.9)
    beta_2 = Param(0.999)
    epsilon = Param(1e-7)  # used as given: no `epsilon or 1e-7`

    slot_aliases: ClassVar[dict[str, str]] = {
        "momentum": "m",
        "velocity": "v",
        "velocity_hat": "vhat",
    }

    def __init__(
        self,
        learning_rate: Any = 0.001,
        weight_decay: float | None = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str = "AdamW",
        **kwargs: Unpack[OtherKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            name=name,
            weight_decay=weight_decay,
            **kwargs,
        )
        if self.weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")

    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        # Keras 3 and tf_keras: m and v variable by variable, then vhat for every variable.
        for var in var_list:
            self.add_slot(var, "m")
            self.add_slot(var, "v")
        if self.amsgrad:
            for var in var_list:
                self.add_slot(var, "vhat")

    def prepare(self, c: AdamCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        # tf_keras and Keras 3 alike: `tf.pow(tf.cast(beta, dtype), t)`
        beta_1_power, beta_2_power = self._beta_powers(dtype, device, self.beta_1, self.beta_2)
        c.alpha = c.lr_t * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        c.one_minus_beta_1_t = self._one_minus(self.beta_1, dtype, device)
        c.one_minus_beta_2_t = self._one_minus(self.beta_2, dtype, device)
        c.epsilon = self._const(self.epsilon, dtype, device)

    # The update rule is Adam's (`Adam.update`), unchanged.
