"""The optimizers kerasopt.optimizers already implements with Keras 3 numerics (Lion, Lamb,
Adafactor, Muon, ScheduleFreeAdamW): the same classes and rules, with Keras 3's surface (slot
names, arguments, sparse semantics) from ``Keras3Base``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from .._slots import Record
from ..optimizers import adafactor as _adafactor
from ..optimizers import lamb as _lamb
from ..optimizers import lion as _lion
from ..optimizers import muon as _muon
from ..optimizers import schedule_free_adamw as _sf
from ._base import Keras3Base

if TYPE_CHECKING:
    from typing import Unpack

    from .._features import BaseKeywords, OtherKeywords


class Lion(Keras3Base, _lion.Lion):
    """Lion, as Keras 3 defines it: ``kerasopt.optimizers.Lion``'s rule, slot ``momentum``.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: in (0, 1]. Defaults to 0.9.
        beta_2: Defaults to 0.99.
        name: defaults to ``"lion"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([1.0, -2.0, 3.0])
        >>> opt = ko.keras3.Lion(learning_rate=0.5)
        >>> _ = opt.minimize(lambda: (var**2).sum(), [var])
        >>> var.numpy().tolist(), opt.get_slot_names()
        ([0.5, -1.5, 2.5], ['momentum'])
    """

    slots: ClassVar[tuple[str, ...]] = ("momentum",)
    slot_arguments: ClassVar[dict[str, str]] = {"momentum": "m"}
    slot_aliases: ClassVar[dict[str, str]] = {"m": "momentum"}

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, name=name, **kwargs
        )


class Lamb(Keras3Base, _lamb.Lamb):
    """Lamb, as Keras 3 defines it: ``kerasopt.optimizers.Lamb``'s rule, slots ``momentum`` and
    ``velocity``.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_1: Defaults to 0.9.
        beta_2: Defaults to 0.999.
        epsilon: Defaults to 1e-7.
        name: defaults to ``"lamb"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([0.0, 0.0])
        >>> opt = ko.keras3.Lamb(learning_rate=0.1)
        >>> _ = opt.apply_gradients([(torch.tensor([1.0, 1.0]), var)])
        >>> [round(x, 4) for x in var.numpy().tolist()]
        [-0.1, -0.1]
    """

    slots: ClassVar[tuple[str, ...]] = ("momentum", "velocity")
    slot_arguments: ClassVar[dict[str, str]] = {"momentum": "m", "velocity": "v"}
    slot_aliases: ClassVar[dict[str, str]] = {"m": "momentum", "v": "velocity"}

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            name=name,
            **kwargs,
        )


class Adafactor(Keras3Base, _adafactor.Adafactor):
    """Adafactor, as Keras 3 defines it: ``kerasopt.optimizers.Adafactor``'s rule (the factored
    second moment ``r``, ``c`` over the last two axes of a variable of rank >= 2), slot
    ``velocity`` for ``v``. kerasopt creates no ``r``/``c`` placeholders for rank < 2 variables
    (Keras 3 lists two integer scalars for each).

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        beta_2_decay: Defaults to -0.8.
        epsilon_1: Defaults to 1e-30.
        epsilon_2: Defaults to 1e-3.
        clip_threshold: Defaults to 1.0.
        relative_step: Defaults to True.
        name: defaults to ``"adafactor"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import torch, kerasopt as ko
        >>> var = ko.Variable([[1.0, 2.0], [3.0, 4.0]])
        >>> opt = ko.keras3.Adafactor(learning_rate=0.1)
        >>> _ = opt.apply_gradients([(torch.ones(2, 2), var)])
        >>> opt.get_slot_names()
        ['r', 'c', 'velocity']
    """

    slot_arguments: ClassVar[dict[str, str]] = {"c": "c_factor", "velocity": "v"}
    slot_aliases: ClassVar[dict[str, str]] = {"v": "velocity"}

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_2_decay: float = -0.8,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        relative_step: bool = True,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_2_decay=beta_2_decay,
            epsilon_1=epsilon_1,
            epsilon_2=epsilon_2,
            clip_threshold=clip_threshold,
            relative_step=relative_step,
            name=name,
            **kwargs,
        )

    def slot_names(self) -> tuple[str, ...]:
        return ("r", "c", "velocity")

    def _create_rule_slots(self, var_list: Sequence[Tensor]) -> None:
        for var in var_list:
            shape = tuple(var.shape)
            if len(shape) >= 2:
                self.add_slot(var, "r", shape=shape[:-1])
                self.add_slot(var, "c", shape=shape[:-2] + shape[-1:])
            self.add_slot(var, "velocity")

    def slot_names_for(self, record: Record) -> tuple[str, ...]:
        return ("r", "c", "velocity") if record.var.dim() >= 2 else ("velocity",)


class Muon(Keras3Base, _muon.Muon):
    """Muon, as Keras 3 defines it: ``kerasopt.optimizers.Muon`` (already Keras 3's names and
    numbers) with Keras 3's argument handling and sparse semantics.

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.001.
        **kwargs: Muon's arguments (see ``kerasopt.optimizers.Muon``) and Keras 3's base
            keywords; ``name`` defaults to ``"muon"``.

    Example:
        >>> import torch, kerasopt as ko
        >>> opt = ko.keras3.Muon()
        >>> opt.name, opt.get_config()["weight_decay"]
        ('muon', 0.004)
    """

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
        name: str | None = None,
        **kwargs: Unpack[OtherKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            adam_beta_1=adam_beta_1,
            adam_beta_2=adam_beta_2,
            adam_weight_decay=adam_weight_decay,
            epsilon=epsilon,
            weight_decay=weight_decay,
            exclude_layers=exclude_layers,
            exclude_embeddings=exclude_embeddings,
            muon_a=muon_a,
            muon_b=muon_b,
            muon_c=muon_c,
            adam_lr_ratio=adam_lr_ratio,
            momentum=momentum,
            ns_steps=ns_steps,
            nesterov=nesterov,
            rms_rate=rms_rate,
            name=name,
            **kwargs,
        )

    def _create_rule_slots(self, var_list: Sequence[Tensor]) -> None:
        _muon.Muon._create_slots(self, var_list)


class ScheduleFreeAdamW(Keras3Base, _sf.ScheduleFreeAdamW):
    """Schedule-Free AdamW, as Keras 3 on TensorFlow computes it: ``kerasopt.optimizers.
    ScheduleFreeAdamW``'s coefficients and slots, but ``x_old`` is recovered from the moved ``z``
    (Keras reads the momentum variable after ``assign_sub``), so::

        v += (g*g - v) * (1 - beta_2)
        z -= lr * g / (sqrt(v / (1 - beta_2^t)) + epsilon)
        x = (y - (1 - beta_1) * z) / beta_1            (z: the updated one)
        x = (1 - 1/t) * x + (1/t) * z
        y = (1 - beta_1) * z + beta_1 * x

    Args:
        learning_rate: float, schedule or callable. Defaults to 0.0025.
        beta_1: Defaults to 0.9.
        beta_2: Defaults to 0.999.
        epsilon: Defaults to 1e-8.
        warmup_steps: Defaults to 0.
        name: defaults to ``"schedule_free_adam_w"``.
        **kwargs: Keras 3's base keywords.

    Example:
        >>> import torch, kerasopt as ko
        >>> ko.keras3.ScheduleFreeAdamW().get_slot_names()
        []
    """

    def __init__(
        self,
        learning_rate: Any = 0.0025,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        warmup_steps: int = 0,
        name: str | None = None,
        **kwargs: Unpack[BaseKeywords],
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            warmup_steps=warmup_steps,
            name=name,
            **kwargs,
        )

    def _create_rule_slots(self, var_list: Sequence[Tensor]) -> None:
        _sf.ScheduleFreeAdamW._create_slots(self, var_list)

    def update(
        self, var: Any, grad: Any, z: Any, v: Any, *, c: _sf.ScheduleFreeAdamWCoefficients
    ) -> None:
        # fidelity: Keras 3 reads `momentum_old = momentum.value`, which on TensorFlow (and
        # torch) is the variable itself, so x_old is computed from the z this step has already
        # moved (checked against Keras 3.15 on TensorFlow); kerasopt.optimizers' rule (the
        # paper's, Keras's JAX backend) uses the z before the step.
        v.add_(c.square(grad).sub_(v).mul_(c.one_minus_beta_2))
        z.sub_((grad * c.lr).div_((v / c.bias_correction_2).sqrt().add_(c.epsilon)))
        x = (var - z * c.one_minus_beta_1).div_(c.beta_1)
        x.mul_(c.one_minus_weight).add_(z * c.weight)
        var.copy_((z * c.one_minus_beta_1).add_(x.mul_(c.beta_1)))
