"""The base-class features: one table of the keywords every optimizer takes besides its own,
and the stages of a step they add (accumulation, the EMA, constraints).

Each ``Feature`` is the one statement of a keyword's default, its check, when ``get_config``
reports it, the slots it owns and its ``kerasopt.optim`` param-group default. The table is read by
``Optimizer.__init__`` (``init``), ``Optimizer.get_config`` (``config``), ``kerasopt.optim``
(its group keys), ``LossScaleOptimizer`` (it answers every feature from its inner optimizer),
the variable registry (the feature slots are listed after the rule's) and the tests.

Example:
    >>> [f.name for f in FEATURES][:4]
    ['weight_decay', 'clipnorm', 'global_clipnorm', 'clipvalue']
    >>> FEATURE_SLOTS
    ('average', 'gradient_accumulator')
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import torch
from torch import Tensor

from . import _distributed
from ._hyper import non_negative, number_value, positive_int_or_none
from .sparse import IndexedSlices


class SlotStore(Protocol):
    """The registry's read the stages need (kerasopt._slots.SlotStore is one)."""

    def slots_of(self, var: Tensor) -> dict[str, Tensor]: ...


__all__ = ["ENGINES", "FEATURES", "FEATURE_SLOTS", "Feature", "config", "init"]

#: the values of ``implementation`` (kerasopt._engines runs them)
ENGINES = ("auto", "per_tensor", "foreach", "compiled", "flat")


def _clip_number(name: str, value: Any) -> None:
    """A clipping threshold or loss scale: None or a non-negative real number (not a bool)."""
    if value is None:
        return
    if isinstance(value, (bool, torch.Tensor)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number or None. Received: {name}={value!r}")
    non_negative(name, value)


def _weight_decay(name: str, value: Any) -> None:
    if value is not None and number_value(value) is None:
        raise ValueError(
            f"Argument `weight_decay` must be a float. Received: weight_decay={value!r}"
        )


def _accumulation(name: str, value: Any) -> None:
    if value and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise ValueError(
            f"`gradient_accumulation_steps` must be an integer >= 2. Received: {name}={value!r}"
        )


def _implementation(name: str, value: Any) -> None:
    if value not in ENGINES:
        raise ValueError(f"`implementation` must be one of {ENGINES}. Received: {value!r}")


def _slot_dtype(name: str, value: Any) -> None:
    if value not in (None, "float32", torch.float32):
        raise ValueError(
            "`slot_dtype` must be None (slots in the variable's dtype) or 'float32' (float32 "
            f"slots for float16/bfloat16 variables). Received: slot_dtype={value!r}"
        )


@dataclass(frozen=True)
class Feature:
    """One base-class keyword.

    Args:
        name: the keyword (and the optimizer's attribute).
        default: its default (``implementation``'s depends on ``jit_compile``: see ``init``).
        check: validation at construction, called with (name, value); its message names it.
        convert: normalisation before storing (``bool`` for flags).
        policy: when ``get_config`` reports it: ``"tf"`` (a TF/Keras key: always for Keras 3
            optimizers, else when set to a non-default value) or ``"kerasopt"`` (a kerasopt
            addition: only when not the default).
        slots: the slots the feature adds to every variable when it is on.
        group_default: its ``kerasopt.optim`` param-group default (``None`` for
            ``implementation``: the Keras class's own choice).
        doc: one line for docs and errors.
    """

    name: str
    default: Any
    check: Callable[[str, Any], None] | None = None
    convert: Callable[[Any], Any] | None = None
    policy: str = "tf"
    slots: tuple[str, ...] = ()
    group_default: Any = None
    doc: str = ""


# In TF's get_config order, then kerasopt's additions.
FEATURES: tuple[Feature, ...] = (
    Feature("weight_decay", None, _weight_decay, doc="decoupled weight decay (var -= var*wd*lr)"),
    Feature("clipnorm", None, _clip_number, doc="clip each gradient to this norm"),
    Feature("global_clipnorm", None, _clip_number, doc="clip all gradients to this global norm"),
    Feature("clipvalue", None, _clip_number, doc="clip each gradient entry to [-v, v]"),
    Feature("use_ema", False, convert=bool, slots=("average",), group_default=False,
            doc="keep an exponential moving average of each variable"),
    Feature("ema_momentum", 0.99, group_default=0.99, doc="the EMA's momentum"),
    Feature("ema_overwrite_frequency", None, doc="overwrite the variables with their EMA every n steps"),
    Feature("loss_scale_factor", None, _clip_number, doc="divide gradients by this (the loss was scaled by it)"),
    Feature("gradient_accumulation_steps", None, _accumulation, slots=("gradient_accumulator",),
            doc="update every k-th call with the mean of k gradients"),
    Feature("jit_compile", False, convert=bool, policy="kerasopt", group_default=False,
            doc="run the rule compiled (implementation='compiled')"),
    Feature("slot_dtype", None, _slot_dtype, policy="kerasopt",
            doc="'float32': float32 slots for float16/bfloat16 variables"),
    Feature("implementation", "auto", _implementation, policy="kerasopt",
            doc="the engine: 'auto', 'per_tensor', 'foreach', 'compiled' or 'flat'"),
)  # fmt: skip

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


class OtherKeywords(TypedDict, total=False):
    """``BaseKeywords`` less ``weight_decay``, for the optimizers that take it as an argument of
    their own (AdamW, Muon)."""

    clipnorm: float | None
    global_clipnorm: float | None
    clipvalue: float | None
    use_ema: bool
    ema_momentum: float
    ema_overwrite_frequency: int | None
    loss_scale_factor: float | None
    gradient_accumulation_steps: int | None
    jit_compile: bool
    slot_dtype: str | torch.dtype | None
    implementation: str
    decay: Any
    lr: Any


class BaseKeywords(OtherKeywords, total=False):
    """The keywords every optimizer takes besides its own, for type checkers: an optimizer's
    ``**kwargs: Unpack[BaseKeywords]`` lets mypy reject a misspelt keyword
    (``Adam(beta_11=0.9)``). The features of ``FEATURES`` (a test holds the two equal) and the
    legacy ``decay`` / ``lr``."""

    weight_decay: float | None


#: slots owned by features, listed after the rule's slots in ``weights``
FEATURE_SLOTS: tuple[str, ...] = tuple(s for f in FEATURES for s in f.slots)


def default_of(name: str, values: Mapping[str, Any]) -> Any:
    """``name``'s default given the other features' ``values`` (``implementation`` is
    ``"compiled"`` under ``jit_compile=True``)."""
    if name == "implementation" and values.get("jit_compile"):
        return "compiled"
    return BY_NAME[name].default


def init(opt: Any, kwargs: dict[str, Any]) -> None:
    """Pops every feature keyword from ``kwargs``, checks it and sets it on ``opt``.

    The checks that involve two features (``clipnorm`` with ``global_clipnorm``; the EMA's
    settings, checked only with ``use_ema``) run after the single ones.
    """
    values: dict[str, Any] = {}
    for feature in FEATURES:
        value = kwargs.pop(feature.name, default_of(feature.name, values))
        if feature.check is not None:
            feature.check(feature.name, value)
        values[feature.name] = feature.convert(value) if feature.convert else value
    if values["clipnorm"] is not None and values["global_clipnorm"] is not None:
        raise ValueError(
            "Cannot accept both `clipnorm` and `global_clipnorm`, passed "
            f"`clipnorm` {values['clipnorm']}, `global_clipnorm` {values['global_clipnorm']}"
        )
    if values["use_ema"]:
        m = number_value(values["ema_momentum"])
        if m is None or not 0 <= m <= 1:
            raise ValueError(
                "`ema_momentum` must be in the range [0, 1]. Received: "
                f"ema_momentum={values['ema_momentum']!r}"
            )
        positive_int_or_none("ema_overwrite_frequency", values["ema_overwrite_frequency"] or None)
    for name, value in values.items():
        setattr(opt, name, value)


def config(opt: Any, keras3: bool) -> dict[str, Any]:
    """The features ``get_config`` reports for ``opt`` (``keras3``: every TF key, as Keras 3)."""
    out: dict[str, Any] = {}
    values = {f.name: getattr(opt, f.name) for f in FEATURES}
    for feature in FEATURES:
        value = values[feature.name]
        default = default_of(feature.name, values)
        if feature.policy == "tf":
            if keras3 or (value is not None and value != default):
                out[feature.name] = value
        elif value is not None and value != default:
            out[feature.name] = "float32" if feature.name == "slot_dtype" else value
    return out


def check_arguments(owner: str, learning_rate: Any, kwargs: dict[str, Any]) -> Any:
    """The base constructor's first checks (``owner`` is the class name): no model parameters
    as the learning rate (a torch.optim habit), no unknown keyword, a non-negative legacy
    ``decay`` / ``lr``; returns the learning rate (``lr=``, deprecated, is popped into it)."""
    if looks_like_parameters(learning_rate):
        raise TypeError(
            f"{owner}() got model parameters as its first argument (`learning_rate`): "
            f"kerasopt.optimizers.{owner} takes TF's arguments (hyperparameters only) and gets "
            "its variables from `minimize(loss, var_list)` / `apply_gradients(pairs)`. For "
            f"the torch.optim protocol use kerasopt.optim.{owner}(model.parameters(), lr=...)."
        )
    for key in kwargs:
        if key not in BY_NAME and key not in ("decay", "lr"):
            raise TypeError(f"Unexpected keyword argument passed to optimizer: {key}")
    for key in ("decay", "lr"):
        if kwargs.get(key) is not None:
            non_negative(key, kwargs[key])
    if "lr" in kwargs:
        # stacklevel: as when Optimizer.__init__ warned (its caller: the subclass's __init__)
        warnings.warn(
            "The `lr` argument is deprecated, use `learning_rate` instead.",
            UserWarning,
            stacklevel=3,
        )
        learning_rate = kwargs.pop("lr")
    return learning_rate


def looks_like_parameters(value: Any) -> bool:
    """``model.parameters()``, a module, or a list of tensors / param-group dicts: what a
    torch.optim user passes first, and what a Keras optimizer must not take as a learning rate."""
    if isinstance(value, (torch.nn.Module, Iterator)):
        return True
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, (Tensor, dict)) for item in value)
    )


# ---------------------------------------------------------------------------------------------
# the features' stages of a commit (kerasopt.step._write runs them)
def accumulate(store: SlotStore, raw_grads: Sequence[tuple[Any, Tensor]]) -> None:
    """An accumulation-only call: adds each (unscaled) gradient into its accumulator."""
    for g, var in raw_grads:
        acc = store.slots_of(var)["gradient_accumulator"]
        if isinstance(g, IndexedSlices):
            acc.index_add_(0, g.indices.long(), g.values)
        else:
            acc.add_(g)


def zero_accumulators(store: SlotStore, variables: Sequence[Tensor]) -> None:
    """After an update call of gradient accumulation."""
    for var in variables:
        store.slots_of(var)["gradient_accumulator"].zero_()


def update_ema(opt: Any, variables: Sequence[Tensor], traced: bool = False) -> None:
    """``average = m * average + (1 - m) * var`` (``m = 0`` on the first update); every
    ``ema_overwrite_frequency`` updates the variables are overwritten with their averages.

    ``traced`` (kerasopt._traced: no accumulation, no DTensor): the update count is the counter
    tensor, and the first update's momentum and the overwrite are selected, not branched on."""
    k = opt.gradient_accumulation_steps or 1
    n = opt._raw_iterations if traced else opt._step // k
    slots_of = opt._store.slots_of
    for var in variables:
        avg = _distributed.local(slots_of(var)["average"])
        if traced:
            first, zero = n == 0, opt._const(0.0, var.dtype, var.device)
            m = torch.where(first, zero, opt._const(float(opt.ema_momentum), var.dtype, var.device))
        else:
            momentum = float(opt.ema_momentum) if n != 0 else 0.0
            m = opt._const(momentum, var.dtype, var.device)
        avg.copy_(m * avg + (1 - m) * _distributed.local(var))
    f = opt.ema_overwrite_frequency
    if f and traced:
        overwrite = (n + 1) % f == 0
        for var in variables:
            var.copy_(torch.where(overwrite, slots_of(var)["average"], var))
    elif f and (n + 1) % f == 0:
        for var in variables:
            var.copy_(slots_of(var)["average"])


def apply_constraints(variables: Sequence[Tensor], label: Callable[[Tensor], str]) -> None:
    """Each variable's ``constraint``, all evaluated before any is written: one that raises, or
    returns a value of another shape, leaves the others unapplied (and the step is rolled
    back). ``label`` names a variable."""
    projected = []
    for var in variables:
        constraint = getattr(var, "constraint", None)
        if constraint is None:
            continue
        value = constraint(var)
        if not isinstance(value, Tensor) or value.shape != var.shape:
            raise ValueError(
                f"The constraint of variable {label(var)} returned "
                f"{getattr(value, 'shape', type(value).__name__)}; it must return a tensor "
                f"of the variable's shape {tuple(var.shape)}."
            )
        projected.append((var, value))
    for var, value in projected:
        var.copy_(value)
