"""What every ``kerasopt.keras3`` optimizer shares: Keras 3's surface over kerasopt's pipeline.

``Keras3Base`` sits in front of a kerasopt optimizer class in the MRO and changes only what Keras 3
does differently at the base-class level; the update rules stay in the optimizer classes:

- arguments: no ``decay`` (ignored with Keras 3's warning) and no ``lr``; an unknown keyword is a
  ``ValueError``; at most one of ``clipnorm`` / ``clipvalue`` / ``global_clipnorm``; an integer
  learning rate is refused; ``name`` defaults to the snake-case class name;
- variables: Keras 3's slot names and creation order (EMA averages, then gradient accumulators,
  then the rule's slots, by ``add_optimizer_variables`` call), and ``variables`` is
  ``[iteration, learning_rate, slots..., optimizer-level variables]``;
- ``get_config`` reports Keras 3's base keys;
- sparse gradients follow Keras 3 on the TensorFlow backend: ``update_step`` receives the
  ``tf.IndexedSlices`` and Keras's sparse-aware ops densify it where it meets a dense tensor, so
  the rule sees the row sums of the gradient, while squares (``ops.square``) and absolute values
  (``ops.abs``) are taken entry by entry before duplicate rows are added. The rule runs over
  every row with those sums (``Coefficients.square`` / ``absolute`` return them), which is what
  Keras computes: rows without an entry get a zero gradient.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._features import FEATURE_SLOTS, FEATURES
from .._hyper import tf_cast_value
from ..optimizer import Coefficients
from ..optimizers._keras3 import Keras3Optimizer

# kerasopt's own keywords (engine choice and slot precision), accepted on top of Keras 3's.
_KERASOPT_KWARGS = tuple(f.name for f in FEATURES if f.policy == "kerasopt")
_CLIP_KWARGS = ("clipnorm", "clipvalue", "global_clipnorm")

#: kerasopt.keras3's classes by name, filled by the package (the wrappers' ``from_config`` reads
#: inner optimizers' class names with them)
CLASSES: dict[str, type[Any]] = {}


def snake_case(name: str) -> str:
    """Keras's ``auto_name`` without the uniquifying suffix: ``"RMSprop"`` → ``"rm_sprop"``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class VariableList(list[Tensor]):
    """``opt.variables``: a list, as Keras 3's property returns; calling it (``opt.variables()``,
    TF's method, which kerasopt's wrappers and ``set_weights`` use) returns the same list."""

    def __call__(self) -> VariableList:
        return self


class Keras3Base(Keras3Optimizer):
    """Keras 3's base-class conventions (see the module docstring); the rule is the subclass's."""

    sparse_mode: ClassVar[str] = "lazy"  # Keras 3's row sums: update_sparse below
    keras3_config: ClassVar[bool] = True
    keras_v1_weights: ClassVar[str | None] = None  # set_weights takes Keras 3's list as it is

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.pop("decay", None) is not None:
            warnings.warn(
                "Argument `decay` is no longer supported and will be ignored.",
                UserWarning,
                stacklevel=3,
            )
        known = set(_KERASOPT_KWARGS) | _own_arguments(type(self))
        unknown = {k: v for k, v in kwargs.items() if k not in known}
        if unknown:
            raise ValueError(f"Argument(s) not recognized: {unknown}")
        if sum(kwargs.get(k) is not None for k in _CLIP_KWARGS) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={kwargs.get('clipnorm')}, "
                f"clipvalue={kwargs.get('clipvalue')}, "
                f"global_clipnorm={kwargs.get('global_clipnorm')}"
            )
        lr = kwargs.get("learning_rate")
        if isinstance(lr, (bool, int)):
            raise ValueError(
                "Argument `learning_rate` should be float, or an instance of "
                "LearningRateSchedule, or a callable (that takes in the current iteration value "
                f"and returns the corresponding learning rate value). Received instead: "
                f"learning_rate={lr}"
            )
        if kwargs.get("name") is None:
            kwargs["name"] = snake_case(type(self).__name__)
        super().__init__(*args, **kwargs)

    # -- variables --------------------------------------------------------------------------
    def slot_groups(self) -> tuple[tuple[str, ...], ...]:
        """The rule's slots by Keras 3 ``add_optimizer_variables`` call: the names of one call
        are created variable by variable, the calls one after another."""
        return (self.slot_names(),)

    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        # Keras 3's build: EMA averages, then gradient accumulators, then the optimizer's own.
        if self.use_ema:
            for var in var_list:
                self.add_slot(var, "average")
        if self.gradient_accumulation_steps:
            for var in var_list:
                self.add_slot(var, "gradient_accumulator")
        self._create_rule_slots(var_list)

    def _create_rule_slots(self, var_list: Sequence[Tensor]) -> None:
        for group in self.slot_groups():
            for var in var_list:
                for slot in group:
                    self.add_slot(var, slot, self.slot_initializer(slot))

    @property
    def variables(self) -> VariableList:
        """``[iteration, learning_rate, slots in creation order, optimizer-level variables]``
        (Keras 3's order; ``learning_rate`` only when it is a number)."""
        out = VariableList([self._raw_iterations])
        if not callable(self._hyper.sources.get("learning_rate")):  # not a schedule or callable
            out.append(self._hyper.variables["learning_rate"])
        order = self._store._slot_order
        for kind in FEATURE_SLOTS:
            out.extend(r.slots[s] for r, s in order if s == kind)
        out.extend(r.slots[s] for r, s in order if s not in FEATURE_SLOTS)
        out.extend(t for _, t in self._store.opt_weights)
        return out

    def get_config(self) -> dict[str, Any]:
        """Keras 3's keys; a number ``learning_rate`` is reported as its float32 variable holds
        it (``0.001`` → ``0.0010000000474974513``), as Keras 3 does."""
        config = super().get_config()
        if isinstance(config.get("learning_rate"), float):
            config["learning_rate"] = tf_cast_value(config["learning_rate"])
        return config

    # -- sparse gradients -------------------------------------------------------------------
    def sums_duplicates(self) -> bool:
        return False  # update_sparse adds the entries up itself, squares apart

    def update_sparse(self, var: Any, indices: Any, values: Any, *args: Any, **kwargs: Any) -> None:
        """Keras 3 on TensorFlow: the rule over every row, with the gradient's row sums and the
        row sums of its entries' squares and absolute values."""
        c: Coefficients = kwargs.pop("c")
        values = values.to(var.dtype)
        grad = torch.zeros_like(var).index_add_(0, indices, values)
        if self.global_clipnorm:
            # Keras's clip_by_global_norm returns `v * scale`, which turns an IndexedSlices into
            # a dense tensor (rows summed): the rule then squares the sums, as on a dense step.
            self.update(var, grad, *args, c=c, **kwargs)
            return
        grad_sq = torch.zeros_like(var).index_add_(0, indices, values * values)
        grad_abs = torch.zeros_like(var).index_add_(0, indices, values.abs())
        self.update(var, grad, *args, c=c.replace(grad_sq=grad_sq, grad_abs=grad_abs), **kwargs)

    # -- coefficient helpers (Keras 3's casts on the TensorFlow backend) ---------------------
    def _cast(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``ops.cast(value, dtype)`` of a Python float (through float32 on TensorFlow)."""
        return self._const(tf_cast_value(value), dtype, device)

    def _py(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A Python float (or a Python expression of them, ``1 - beta``) meeting a tensor: exact
        in the tensor's dtype."""
        return self._const(float(value), dtype, device)


_OWN_ARGUMENTS: dict[type, frozenset[str]] = {}


def _own_arguments(cls: type) -> frozenset[str]:
    """The keyword arguments the class's constructors name (Keras 3 lists every base keyword in
    each optimizer's signature; anything else reaching the base is unknown)."""
    names = _OWN_ARGUMENTS.get(cls)
    if names is None:
        import inspect

        found: set[str] = set()
        for klass in cls.__mro__:
            if klass is Keras3Base:
                break  # the kerasopt.optimizers class behind it has legacy arguments
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    found.add(p.name)
        found |= {
            "learning_rate",
            "name",
            "weight_decay",
            "clipnorm",
            "clipvalue",
            "global_clipnorm",
            "use_ema",
            "ema_momentum",
            "ema_overwrite_frequency",
            "loss_scale_factor",
            "gradient_accumulation_steps",
        }
        names = _OWN_ARGUMENTS[cls] = frozenset(found)
    return names
