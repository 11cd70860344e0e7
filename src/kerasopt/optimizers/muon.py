"""Muon — Keras 3's ``keras.optimizers.Muon`` (Newton–Schulz orthogonalised momentum + AdamW)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._hyper import Hyper, Param, non_negative, number_value
from ..optimizer import Coefficients, Record
from ._keras3 import Keras3Optimizer

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import OtherKeywords


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _weight_decay_check(name: str, value: Any) -> None:
    if value is not None and number_value(value) is None:
        raise ValueError(f"Argument `{name}` must be a float. Received: {name}={value!r}")


def _patterns(value: Any) -> list[str]:
    # A bare string is one pattern (Keras would iterate over its characters).
    if isinstance(value, str):
        return [value]
    return list(value or [])


class MuonCoefficients(Coefficients):
    """Muon's step coefficients (``prepare`` sets them, the rule reads them)."""

    alpha: Tensor
    one_minus_adam_beta_1: Tensor
    one_minus_adam_beta_2: Tensor
    epsilon: Tensor
    momentum: Tensor
    momentum_minus_one: Tensor


class Muon(Keras3Optimizer):
    """Muon for 2-D weight matrices, AdamW for every other variable (Keras 3's Muon).

    Each variable is routed once, when its slots are created, by its registered name
    (``kerasopt.Variable.name``, or the ``named_parameters()`` key when an ``nn.Module`` or a dict
    is passed to ``build``/``minimize``; otherwise ``"variable_<index>"``). It takes the **AdamW
    path** if its rank is not 2, or ``exclude_embeddings`` and ``"embedding"`` occurs in the
    lower-cased name, or ``re.search(kw, name)`` matches for a ``kw`` in ``exclude_layers``;
    otherwise the **Muon path**. Slots: ``momentum`` for every variable, ``velocity`` for AdamW-path
    variables only (``get_slot`` also accepts ``m`` and ``v``).

    Update rule (docs/reference-behaviour.md Part 2 §3.5), ``t = iterations + 1``, η the learning rate::

        weight decay (before the step):  θ ← θ − η λ θ,
            λ = weight_decay (Muon path) or adam_weight_decay (AdamW path); None skips

        Muon path:
            m ← μ m + g                               (μ = momentum)
            G = g + μ m   if nesterov   else   m      (uses the updated m)
            O = NS(G)
            θ ← θ − η · O · sqrt(max(n_rows, n_cols)) · rms_rate      (factor omitted if rms_rate is None)

        Newton–Schulz NS(G), (a, b, c) = (muon_a, muon_b, muon_c), ns_steps iterations:
            X = G;  if rows > cols: X = Xᵀ
            X = X / (‖X‖_F + 1e-7)
            repeat ns_steps:  A = X Xᵀ;  B = b·A + c·A·A;  X = a·X + B·X
            if transposed: X = Xᵀ

        AdamW path (Adam without amsgrad, learning rate η · adam_lr_ratio):
            m ← m + (g − m)(1 − β1a);  v ← v + (g² − v)(1 − β2a)
            θ ← θ − η·adam_lr_ratio · sqrt(1 − β2a^t)/(1 − β1a^t) · m / (sqrt(v) + ε)

    Everything is computed in the variable's dtype (Newton–Schulz included). The Muon path needs
    whole matrices, so the rule always runs per tensor; sparse gradients are densified.
    Unlike ``torch.optim.Muon`` (2-D parameters only, momentum as an EMA ``lerp``, Newton–Schulz
    in bfloat16, default scale ``sqrt(max(1, rows/cols))``), this routes other variables to AdamW,
    accumulates ``m ← μ m + g`` and orthogonalises in the variable's own dtype.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        adam_beta_1: AdamW path's first-moment decay. Defaults to 0.9.
        adam_beta_2: AdamW path's second-moment decay. Defaults to 0.999.
        adam_weight_decay: decoupled weight decay of AdamW-path variables (``None``: none).
            Defaults to 0.004.
        epsilon: AdamW path's "epsilon hat". Defaults to 1e-7.
        weight_decay: decoupled weight decay of Muon-path variables (``None``: none).
            Defaults to 0.004.
        exclude_layers: regular expressions (``re.search`` on the variable's name) sending
            matching variables to the AdamW path. Defaults to ``None`` (none).
        exclude_embeddings: send variables whose name contains "embedding" (any case) to the
            AdamW path. Defaults to True.
        muon_a: Newton–Schulz coefficient a. Defaults to 3.4445.
        muon_b: Newton–Schulz coefficient b. Defaults to -4.7750.
        muon_c: Newton–Schulz coefficient c. Defaults to 2.0315.
        adam_lr_ratio: AdamW path's learning rate as a multiple of ``learning_rate`` (weight decay
            uses the base rate). Defaults to 1.
        momentum: Muon path's momentum μ. Defaults to 0.95.
        ns_steps: number of Newton–Schulz iterations. Defaults to 5.
        nesterov: use Nesterov momentum on the Muon path. Defaults to True.
        rms_rate: Muon path's update scale (``None`` disables the rescaling). Defaults to 0.2.
        name: defaults to ``"Muon"``.
        **kwargs: the base-class keywords (``clipnorm``, ``use_ema``, ...).

    Example:
        >>> import kerasopt as ko
        >>> w = ko.Variable([[3.0, 0.0], [0.0, 4.0]], name="hidden/kernel")
        >>> b = ko.Variable([1.0, 1.0], name="hidden/bias")
        >>> opt = ko.optimizers.Muon(learning_rate=0.1, weight_decay=None, adam_weight_decay=None)
        >>> _ = opt.minimize(lambda: (w * w).sum() + b.sum(), [w, b])
        >>> [[round(x, 4) for x in row] for row in w.numpy().tolist()]
        [[2.9796, 0.0], [0.0, 3.9683]]
        >>> [round(x, 4) for x in b.numpy().tolist()]
        [0.9, 0.9]
        >>> opt.get_slot_names()
        ['momentum', 'velocity']
    """

    coefficients: ClassVar[type[Coefficients]] = MuonCoefficients

    learning_rate = Hyper(0.001, check=non_negative)
    adam_beta_1 = Param(0.9, convert=float)
    adam_beta_2 = Param(0.999, convert=float)
    adam_weight_decay = Param(0.004, check=_weight_decay_check, convert=_float_or_none)
    epsilon = Param(1e-7, convert=float)
    exclude_layers = Param(None, convert=_patterns)
    exclude_embeddings = Param(True, convert=bool)
    muon_a = Param(3.4445, convert=float)
    muon_b = Param(-4.7750, convert=float)
    muon_c = Param(2.0315, convert=float)
    adam_lr_ratio = Param(1, convert=float)
    momentum = Param(0.95, convert=float)
    ns_steps = Param(5, convert=int)
    nesterov = Param(True, convert=bool)
    rms_rate = Param(0.2, convert=_float_or_none)

    slot_aliases: ClassVar[dict[str, str]] = {"m": "momentum", "v": "velocity"}
    elementwise: ClassVar[bool] = False  # Newton–Schulz needs the whole matrix

    def __init__(
        self,
        learning_rate: Any = 0.001,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        adam_weight_decay: float | None = 0.004,
        epsilon: float = 1e-7,
        weight_decay: float | None = 0.004,
        exclude_layers: Sequence[str] | None = None,
        exclude_embeddings: bool = True,
        muon_a: float = 3.4445,
        muon_b: float = -4.7750,
        muon_c: float = 2.0315,
        adam_lr_ratio: float = 1,
        momentum: float = 0.95,
        ns_steps: int = 5,
        nesterov: bool = True,
        rms_rate: float | None = 0.2,
        name: str = "Muon",
        **kwargs: Unpack[OtherKeywords],
    ) -> None:
        super().__init__(
            name=name, learning_rate=learning_rate, weight_decay=weight_decay, **kwargs
        )
        self.adam_beta_1 = adam_beta_1
        self.adam_beta_2 = adam_beta_2
        self.adam_weight_decay = adam_weight_decay
        self.epsilon = epsilon
        self.exclude_layers = exclude_layers
        self.exclude_embeddings = exclude_embeddings
        self.muon_a = muon_a
        self.muon_b = muon_b
        self.muon_c = muon_c
        self.adam_lr_ratio = adam_lr_ratio
        self.momentum = momentum
        self.ns_steps = ns_steps
        self.nesterov = nesterov
        self.rms_rate = rms_rate

    # -- routing -------------------------------------------------------------------------------
    def _should_use_adamw(self, record: Record) -> bool:
        if record.var.dim() != 2:
            return True
        if self.exclude_embeddings and "embedding" in record.name.lower():
            return True
        return any(re.search(kw, record.name) for kw in self.exclude_layers)

    def _uses_adamw(self, record: Record) -> bool:
        # Decided when the slots were created (as Keras 3: the velocity slot selects the path).
        if "momentum" in record.slots:
            return "velocity" in record.slots
        return self._should_use_adamw(record)

    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        for var in var_list:
            record = self._record(var)
            self.add_slot(var, "momentum")
            if self._should_use_adamw(record):
                self.add_slot(var, "velocity")

    def slot_names(self) -> tuple[str, ...]:
        return ("momentum", "velocity")

    def slot_names_for(self, record: Record) -> tuple[str, ...]:
        return ("momentum", "velocity") if self._uses_adamw(record) else ("momentum",)

    def _weight_decay_for(self, record: Record) -> float | None:
        if self._excluded(record):
            return None
        wd = self.adam_weight_decay if self._uses_adamw(record) else self.weight_decay
        return None if wd is None else float(wd)

    # -- math ----------------------------------------------------------------------------------
    def prepare(self, c: MuonCoefficients, device: torch.device, dtype: torch.dtype) -> None:
        adam_beta_1_power, adam_beta_2_power = self._beta_powers(
            dtype, device, self.adam_beta_1, self.adam_beta_2
        )
        # fidelity: Keras 3 multiplies the float32 learning rate by `adam_lr_ratio` before the
        # cast to the variable's dtype, so the product is float32-rounded (shows in float64).
        ratio = self._const(self.adam_lr_ratio, torch.float32, device)
        adam_lr = (c.lr_t.to(torch.float32) * ratio).to(dtype)
        c.alpha = adam_lr * torch.sqrt(1 - adam_beta_2_power) / (1 - adam_beta_1_power)
        c.one_minus_adam_beta_1 = self._one_minus(self.adam_beta_1, dtype, device)
        c.one_minus_adam_beta_2 = self._one_minus(self.adam_beta_2, dtype, device)
        c.epsilon = self._const(self.epsilon, dtype, device)
        c.momentum = self._const(self.momentum, dtype, device)
        c.momentum_minus_one = self._const(self.momentum - 1, dtype, device)

    def update(
        self, var: Any, grad: Any, momentum: Any, velocity: Any = None, *, c: MuonCoefficients
    ) -> None:
        if velocity is not None:  # AdamW path
            momentum.add_((grad - momentum) * c.one_minus_adam_beta_1)
            velocity.add_((c.square(grad) - velocity) * c.one_minus_adam_beta_2)
            var.sub_((momentum * c.alpha) / (velocity.sqrt() + c.epsilon))
            return
        # m ← μ m + g, written as Keras 3 does (m += g + m * (μ - 1)) for its rounding.
        momentum.add_(grad + momentum * c.momentum_minus_one)
        g = grad + c.momentum * momentum if self.nesterov else momentum
        update = c.lr_t * self.zeropower_via_newtonschulz5(g, self.ns_steps)
        if self.rms_rate is not None:
            scale = math.sqrt(max(var.shape[0], var.shape[1]))
            update = update * self._const(scale, var.dtype, var.device)
            update = update * self._const(self.rms_rate, var.dtype, var.device)
        var.sub_(update)

    def zeropower_via_newtonschulz5(self, x: Tensor, steps: int) -> Tensor:
        """Newton–Schulz orthogonalisation of the last two axes of ``x``, in ``x``'s dtype.

        Raises:
            ValueError: when ``x`` has fewer than 2 dimensions.
        """
        if x.dim() < 2:
            raise ValueError("Expected gradient or momentum to have at least 2 dimensions")
        a, b = float(self.muon_a), float(self.muon_b)  # addmm's beta (rounded to x's dtype)
        c = self._const(self.muon_c, x.dtype, x.device)
        transposed = x.shape[-2] > x.shape[-1]
        if transposed:
            x = x.mT
        norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
        x = x / (norm + self._const(1e-7, x.dtype, x.device))
        # Keras 3: temp_b = b * temp_a + (c * temp_a) @ temp_a;  x = a * x + temp_b @ x. The
        # sums are the matrix products' own epilogue here (addmm/baddbmm: beta * input + m1 @ m2),
        # which saves two passes over each operand per iteration (the benchmark transformer's
        # Muon step: 0.88x the time of separate operations); it rounds the sum once where Keras
        # rounds the scaled term first, a difference well inside the float32 bound the matrix
        # products' summation order already needs (docs/tolerances.md).
        mm = torch.addmm if x.dim() == 2 else torch.baddbmm
        for _ in range(steps):
            temp_a = x @ x.mT
            temp_b = mm(temp_a, c * temp_a, temp_a, beta=b)
            x = mm(x, temp_b, x, beta=a)
        return x.mT if transposed else x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["exclude_layers"] = list(self.exclude_layers)
        return config
