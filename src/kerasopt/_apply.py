"""Applying the rule: a plan's dense pairs through the engines (grouped, with decoupled weight
decay fused into the rule), its sparse pairs through ``update_sparse``, and the decay of sparse
pairs. ``RulePath`` is how an optimizer with a rule applies a plan; ``kerasopt._legacy.HookPath``
is the other path, for TF 2.x subclasses that write hooks.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from . import _engines, _gradients
from ._engines import compute_dtype
from ._hyper import tf_cast_value
from ._slots import SlotStore
from ._types import Coefficients, Composition, Plan, Record
from .sparse import IndexedSlices, deduplicate

__all__ = ["Rule", "RulePath"]


class Rule:
    """What an optimizer file declares and implements: its slots and traits, ``prepare`` (the
    step's coefficients) and ``update`` (the rule, written once with tensor methods). The engines
    run ``update`` per tensor, on ``TensorList``s (foreach) and compiled; ``Optimizer`` inherits
    this contract and adds TensorFlow's API around it (docs/custom-optimizer.md).
    """

    #: the rule's slots, in creation order (override ``slot_names()`` when they depend on config)
    slots: ClassVar[tuple[str, ...]] = ()
    #: other names a slot answers to in ``get_slot`` (e.g. Keras 3's ``momentum`` for ``m``)
    slot_aliases: ClassVar[dict[str, str]] = {}
    #: the rule's parameter for a slot whose name is not its parameter name (the rule gets each
    #: slot as a keyword argument named for the slot; Adafactor's slot ``c`` would clash with the
    #: coefficients ``c``, Schedule-Free's ``momentum`` is the paper's ``z``)
    slot_arguments: ClassVar[dict[str, str]] = {}
    #: False when the rule needs whole tensors (norms, factored moments): it runs per tensor
    elementwise: ClassVar[bool] = True
    #: for a whole-tensor rule: whether the compiled engines may compile it one tensor per call
    #: (Lamb, Adafactor: several times faster on large tensors; Muon's matrix products gain
    #: nothing). A rule that cannot be traced falls back to eager with a warning.
    compiles_whole_tensors: ClassVar[bool] = False
    #: whether torch.compile traces this class's step (kerasopt._traced); False for a rule
    #: dynamo cannot trace, whose step then runs eagerly inside a compiled function
    traceable: ClassVar[bool] = True
    #: "lazy": sparse gradients reach ``update_sparse`` (the default one touches only the indexed
    #: rows; Adam's, Nadam's and RMSprop's own decay every row, as TF's); "dense": densify them
    sparse_mode: ClassVar[str] = "lazy"
    #: create slots variable by variable (Ftrl, Keras 3) instead of one slot name at a time
    interleave_slots: ClassVar[bool] = False
    #: Keras 3 optimizers report the full set of newer base keys in get_config
    keras3_config: ClassVar[bool] = False
    #: whether the rule is defined for complex variables (TF: SGD, Adagrad, Adadelta, RMSprop)
    supports_complex: ClassVar[bool] = False
    #: how ``set_weights`` reads a Keras V1 optimizer's ``get_weights()`` (TF's per-class
    #: overrides): ``"without_iterations"`` (Adagrad, Adadelta, RMSprop), ``"with_vhats"`` (Adam)
    keras_v1_weights: ClassVar[str | None] = None
    #: the class of ``prepare``'s coefficients (each optimizer declares the fields its rule reads)
    coefficients: ClassVar[type[Coefficients]] = Coefficients

    def slot_names(self) -> tuple[str, ...]:
        """The rule's slot names for the current configuration, in creation order."""
        return self.slots

    def slot_initializer(self, slot_name: str) -> Any:
        """Initial value of a slot: "zeros", "ones", a number or a callable(shape, dtype)."""
        return "zeros"

    def prepare(self, c: Any, device: torch.device, dtype: torch.dtype) -> None:
        """Adds the rule's coefficients to ``c`` (0-d tensors in ``dtype`` on ``device``)."""

    def update(self, var: Any, grad: Any, *args: Any, **kwargs: Any) -> None:
        """The optimizer's update rule, written once with tensor methods (see docs/design.md).

        Called with the variable, its gradient, the step's coefficients ``c`` and each of the
        variable's slots as a keyword argument named for the slot (``m=..., v=...``), so a
        rule's signature reads like its docs/reference-behaviour.md page: ``update(self, var, grad, m, v, *, c)``.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no update rule.")

    def update_sparse(self, var: Any, indices: Any, values: Any, *args: Any, **kwargs: Any) -> None:
        """Sparse rule; the default is lazy: the dense rule on the indexed rows only.

        Called like ``update``, with the indices and values of the gradient's rows.
        """
        c, slots = kwargs.pop("c"), kwargs  # (the signature lets a subclass name its slots)
        rows = var.index_select(0, indices)
        slot_rows = {name: s.index_select(0, indices) for name, s in slots.items()}
        self.update(rows, values, c=c, **slot_rows)
        var.index_copy_(0, indices, rows)
        for name, s in slots.items():
            s.index_copy_(0, indices, slot_rows[name])

    def sums_duplicates(self) -> bool:
        """Whether duplicate sparse indices are summed before ``update_sparse`` (TF: yes, except
        plain SGD, which scatter-adds every row)."""
        return True

    def _rule_slots(self, record: Record) -> dict[str, Tensor]:
        arg = self.slot_arguments
        return {arg.get(name, name): record.slots[name] for name in self.slot_names_for(record)}

    def slot_names_for(self, record: Record) -> tuple[str, ...]:
        """The slots passed to the rule for one variable (Muon routes variables differently)."""
        return self.slot_names()

    def _update_with_weight_decay(
        self, var: Any, grad: Any, *, c: Coefficients, **slots: Any
    ) -> None:
        # A method, not a closure: the compiled engine keys its graphs on the rule's function
        # and class.
        _engines.decay_(var, c.weight_decay, c.lr_t)
        self.update(var, grad, c=c, **slots)


class RuleOwner(Protocol):
    """What applying a rule reads of an optimizer (``kerasopt.Optimizer`` is one)."""

    _store: SlotStore
    weight_decay: float | None
    implementation: str
    elementwise: ClassVar[bool]
    compiles_whole_tensors: ClassVar[bool]
    traceable: ClassVar[bool]
    slot_arguments: ClassVar[dict[str, str]]
    supports_complex: ClassVar[bool]
    sparse_mode: ClassVar[str]

    def update(self, var: Any, grad: Any, *args: Any, **kwargs: Any) -> None: ...
    def update_sparse(
        self, var: Any, indices: Any, values: Any, *args: Any, **kwargs: Any
    ) -> None: ...
    def _update_with_weight_decay(
        self, var: Any, grad: Any, *, c: Coefficients, **slots: Any
    ) -> None: ...
    def slot_names_for(self, record: Record) -> tuple[str, ...]: ...
    def _rule_slots(self, record: Record) -> dict[str, Tensor]: ...
    def _weight_decay_for(self, record: Record) -> float | None: ...
    def sums_duplicates(self) -> bool: ...
    def _const(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor: ...
    def _label(self, var: Tensor) -> str: ...


class RulePath:
    """Applies a plan through the optimizer's rule (``update`` / ``update_sparse``) and the
    engines."""

    def accepts_complex(self, opt: RuleOwner) -> bool:
        return opt.supports_complex

    compute_dtype = staticmethod(compute_dtype)

    def route(
        self, opt: RuleOwner, pairs: list[tuple[Any, Tensor]]
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, IndexedSlices]]]:
        return _gradients.split(pairs, opt.sparse_mode == "dense", opt._label)

    def apply(self, opt: RuleOwner, plan: Plan, apply_state: dict[Any, Coefficients]) -> None:
        if plan.sparse:
            decay_sparse(opt, plan.sparse, apply_state)
        apply_dense(opt, plan.dense, apply_state, plan.composition)
        if plan.sparse:
            apply_sparse(opt, plan.sparse, apply_state)


def apply_dense(
    opt: RuleOwner,
    dense: list[tuple[Tensor, Tensor]],
    apply_state: dict[Any, Coefficients],
    composition: Composition | None = None,
) -> None:
    """The rule over the dense pairs, one engine call per group (``_engines.groups``; a steady
    step's ``composition`` keeps them)."""
    if not dense:
        return
    groups = None if composition is None else composition.groups
    if groups is None:
        groups = _engines.groups(
            dense,
            opt._store,
            opt.slot_names_for,
            opt._weight_decay_for,
            opt.weight_decay,
            opt.slot_arguments,
        )
        if composition is not None:
            composition.groups = groups
    for group in groups:
        grads = [dense[i][1] for i in group.positions]
        device = group.key[0]
        compute = group.compute
        c = apply_state[(device, compute)]
        rule = opt.update
        if group.weight_decay is not None:
            # Decoupled weight decay runs in the same engine call as the rule, so the compiled
            # engine fuses it into the update's single pass over memory.
            c = c.replace(
                weight_decay=opt._const(tf_cast_value(group.weight_decay), compute, device)
            )
            rule = opt._update_with_weight_decay
        _engines.run_group(
            rule,
            group,
            grads,
            c,
            opt.implementation,
            opt.elementwise,
            compile_whole=opt.compiles_whole_tensors,
        )


def apply_sparse(
    opt: RuleOwner, sparse: list[tuple[Tensor, IndexedSlices]], apply_state: dict[Any, Coefficients]
) -> None:
    """``update_sparse`` per sparse pair (duplicate indices summed first where the rule wants
    it), in float32 for half-precision variables."""
    for var, grad in sparse:
        g = deduplicate(grad) if opt.sums_duplicates() else grad
        record = opt._store.by_id[id(var)]
        compute = compute_dtype(var.dtype)
        c = apply_state[(var.device, compute)]
        slots = opt._rule_slots(record)
        if compute == var.dtype:
            opt.update_sparse(var, g.indices, g.values, c=c, **slots)
            continue
        wide, wide_slots = var.float(), {name: t.float() for name, t in slots.items()}
        opt.update_sparse(wide, g.indices, g.values.float(), c=c, **wide_slots)
        var.copy_(wide)
        for name, t in slots.items():
            if t is not wide_slots[name]:
                t.copy_(wide_slots[name])


def decay_sparse(
    opt: RuleOwner, sparse: list[tuple[Tensor, IndexedSlices]], apply_state: dict[Any, Coefficients]
) -> None:
    """Decoupled weight decay of the sparse pairs' variables (the engines fuse it into the
    dense rule): ``var - var * wd * lr`` in the compute dtype."""
    for var, _ in sparse:
        wd = opt._weight_decay_for(opt._store.by_id[id(var)])
        if wd is None:
            continue
        dtype = compute_dtype(var.dtype)
        c = apply_state[(var.device, dtype)]
        wide = var.to(dtype)
        _engines.decay_(wide, opt._const(tf_cast_value(wd), dtype, var.device), c.lr_t)
        if wide is not var:
            var.copy_(wide)
