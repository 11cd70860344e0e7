"""The seed-era (TF 2.x optimizer_v2) subclass API, kept out of the main pipeline.

A TF 2.x custom optimizer subclasses ``Optimizer`` and writes hooks instead of a rule::

    class MyMomentum(ko.optimizers.Optimizer):
        def __init__(self, learning_rate=0.01, momentum=0.5, name="MyMomentum", **kwargs):
            super().__init__(name, **kwargs)
            self._set_hyper("learning_rate", learning_rate)
            self._set_hyper("momentum", momentum)

        def _create_slots(self, var_list): ...
        def _resource_apply_dense(self, grad, var, apply_state=None): ...
        def _resource_apply_sparse(self, grad, var, indices, apply_state=None): ...

Two things make that work without branches through the base class:

- ``HookPath`` is what the pipeline calls to apply a plan for such a class (``RulePath`` in
  ``optimizer.py`` is the one for rules): hooks run per variable in the variable's own dtype, as
  TF runs them; weight decay is applied before them; sparse values reach
  ``_resource_apply_sparse_duplicate_indices``. The base chooses the path once per class.
- ``HyperAttribute`` makes a name set with ``_set_hyper`` an attribute (TF's ``opt.momentum``):
  ``_set_hyper`` installs one on the subclass for a name it does not declare, instead of a
  ``__getattr__``/``__setattr__`` on the base.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from . import _distributed, _engines, _gradients
from ._gradients import Grad
from ._hyper import Hyper, tf_cast_value
from ._types import Coefficients, Plan, Record
from .sparse import IndexedSlices, deduplicate

if TYPE_CHECKING:
    from ._slots import SlotStore


class Optimizer(Protocol):
    """What the hook path needs of an optimizer (kerasopt.optimizer.Optimizer is one); a
    Protocol, so this module does not import the optimizer module that imports it."""

    _store: SlotStore

    def _label(self, var: Tensor) -> str: ...
    def _weight_decay_for(self, record: Record) -> float | None: ...
    def _const(self, value: float, dtype: torch.dtype, device: torch.device) -> Tensor: ...
    def _hyper_read(self, name: str) -> Any: ...
    def _resource_apply_dense(self, grad: Tensor, var: Tensor, apply_state: Any = None) -> None: ...
    def _resource_apply_sparse_duplicate_indices(
        self, grad: Tensor, var: Tensor, indices: Tensor, apply_state: Any = None
    ) -> None: ...


# hook function -> whether it declares `apply_state`; weak, so a class made at run time (and its
# hooks) can still be collected
_TAKES_APPLY_STATE: weakref.WeakKeyDictionary[Callable[..., Any], bool] = (
    weakref.WeakKeyDictionary()
)


def _takes_apply_state(fn: Callable[..., Any]) -> bool:
    # TF does the same: optimizer_v2 reads `getfullargspec(self._resource_apply_dense).args`
    # and passes `apply_state` only to hooks that declare it.
    found = _TAKES_APPLY_STATE.get(fn)
    if found is None:
        found = "apply_state" in inspect.signature(fn).parameters
        _TAKES_APPLY_STATE[fn] = found
    return found


def call_hook(
    hook: Callable[..., Any], grad: Tensor, var: Tensor, apply_state: Any, *extra: Any
) -> None:
    func = getattr(hook, "__func__", hook)
    if _takes_apply_state(func):
        hook(grad, var, *extra, apply_state=apply_state)
    else:
        hook(grad, var, *extra)


class HookPath:
    """Applies a plan through the TF hooks of a seed-era subclass of ``base``."""

    def __init__(self, base: type[Optimizer]) -> None:
        self.base = base

    def serves(self, cls: type[Optimizer]) -> bool:
        """Whether ``cls`` is a TF 2.x-style subclass (it overrides ``_resource_apply_dense``)."""
        return cls._resource_apply_dense is not self.base._resource_apply_dense

    def _has_sparse_hook(self, cls: type) -> bool:
        return any(
            getattr(cls, hook) is not getattr(self.base, hook)
            for hook in ("_resource_apply_sparse", "_resource_apply_sparse_duplicate_indices")
        )

    def accepts_complex(self, opt: Optimizer) -> bool:
        return True  # the hooks are the user's: their math decides

    def compute_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype  # hooks see the variable's own dtype, as in TF

    def route(
        self, opt: Optimizer, pairs: list[tuple[Any, Tensor]]
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, IndexedSlices]]]:
        for g, v in pairs:
            if (
                not isinstance(g, IndexedSlices)
                and _distributed.active()
                and _distributed.is_dtensor(v)
            ):
                raise NotImplementedError(
                    f"Variable {opt._label(v)} is a DTensor (FSDP2): {type(opt).__name__}'s "
                    "`_resource_apply_*` hooks are not supported for sharded variables (write "
                    "`update` instead)."
                )
        dense, sparse = _gradients.split(pairs, False, opt._label)
        if sparse and not self._has_sparse_hook(type(opt)):
            raise NotImplementedError(
                f"{type(opt).__name__} does not implement `_resource_apply_sparse`: it cannot apply "
                f"sparse gradients (variable {opt._label(sparse[0][0])})."
            )
        return dense, sparse

    def apply(self, opt: Optimizer, plan: Plan, apply_state: dict[Any, Coefficients]) -> None:
        for var, _ in [*plan.dense, *plan.sparse]:
            wd = opt._weight_decay_for(opt._store.by_id[id(var)])
            if wd is not None:
                # TF 2.x `_prepare_local` overrides may put a plain dict there: read it as one
                lr_t = apply_state[(var.device, var.dtype)]["lr_t"]
                _engines.decay_(var, opt._const(tf_cast_value(wd), var.dtype, var.device), lr_t)
        for var, grad in plan.dense:
            call_hook(opt._resource_apply_dense, grad, var, apply_state)
        for var, slices in plan.sparse:
            call_hook(
                opt._resource_apply_sparse_duplicate_indices,
                slices.values,
                var,
                apply_state,
                slices.indices,
            )


_NONE: Any = object()


class HyperAttribute(Hyper):
    """``opt.<name>`` for a hyperparameter set with ``_set_hyper`` (TF's ``opt.momentum``).

    Installed on the subclass by ``_set_hyper``, so it is shared by the class's instances: one
    that never set the hyperparameter keeps a plain attribute of that name. Not a declaration:
    ``get_config`` leaves it to the subclass (TF's custom ``get_config`` writes it).
    """

    is_declaration = False

    def __init__(self, fallback: Any = _NONE) -> None:
        super().__init__()
        self.fallback = fallback  # the plain class attribute of that name it replaced, if any

    def __get__(self, opt: Any, owner: type | None = None) -> Any:
        if opt is None:
            return self
        store = vars(opt).get("_hyper")
        if store is not None and self.name in store:
            return opt._hyper_read(self.name)
        if self.name in vars(opt):
            return vars(opt)[self.name]
        if self.fallback is not _NONE:
            return self.fallback
        raise AttributeError(f"{type(opt).__name__!r} object has no attribute {self.name!r}")

    def __set__(self, opt: Any, value: Any) -> None:
        store = vars(opt).get("_hyper")
        if store is not None and self.name in store:
            super().__set__(opt, value)
        else:
            opt.__dict__[self.name] = value


def expose(opt: Any, name: str) -> None:
    """Makes hyperparameter ``name`` an attribute of ``opt``'s class (TF's ``opt.momentum``).

    Not where the name is taken: by an attribute of the instance (the base's own
    ``weight_decay``, ``clipnorm``, ... stay what the base reads, as in TF 2.x, where
    ``_set_hyper("weight_decay")`` is the subclass's business) or by a method, property or other
    descriptor of the class. A plain class attribute (a default) is replaced, and kept as the
    value for instances that never set the hyperparameter.
    """
    cls = type(opt)
    if name in vars(opt):
        return
    fallback: Any = _NONE
    for klass in cls.__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            if isinstance(value, HyperAttribute) or callable(value) or hasattr(value, "__get__"):
                return
            fallback = value
            break
    attribute = HyperAttribute(fallback)
    attribute.__set_name__(cls, name)
    setattr(cls, name, attribute)


class Hooks:
    """TF 2.x's subclass hooks with their defaults (a base of ``kerasopt.Optimizer``): a seed-era
    subclass overrides them, and ``HookPath`` calls them; a rule-based optimizer never needs to."""

    gradient_aggregator: Any

    def _fallback_apply_state(self, var_device: torch.device, var_dtype: torch.dtype) -> Any:
        raise NotImplementedError  # kerasopt.Optimizer's

    def _record(self, var: Tensor) -> Record:
        raise NotImplementedError  # kerasopt.Optimizer's

    def update(self, var: Any, grad: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # the rule's (kerasopt._apply.Rule)

    def update_sparse(self, var: Any, indices: Any, values: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError  # the rule's (kerasopt._apply.Rule)

    def _rule_slots(self, record: Record) -> dict[str, Tensor]:
        raise NotImplementedError  # the rule's (kerasopt._apply.Rule)

    def _aggregate_gradients(self, grads_and_vars: list[tuple[Grad, Tensor]]) -> Any:
        """TF's hook: aggregates gradients across replicas (``gradient_aggregator`` if given).

        On one process, and under DDP/FSDP (whose gradients ``torch.distributed`` has already
        reduced), the default is the identity. Runs before clipping, in the plan.
        """
        if self.gradient_aggregator is None:
            return grads_and_vars
        return self.gradient_aggregator(grads_and_vars)

    def _resource_apply_dense(self, grad: Tensor, var: Tensor, apply_state: Any = None) -> None:
        """Applies a dense gradient to one variable (TF hook; runs the rule per tensor)."""
        c = (apply_state or {}).get((var.device, var.dtype)) or self._fallback_apply_state(
            var.device, var.dtype
        )
        self.update(var, grad, c=c, **self._rule_slots(self._record(var)))

    def _resource_apply_sparse(
        self, grad: Tensor, var: Tensor, indices: Tensor, apply_state: Any = None
    ) -> None:
        """Applies unique-row sparse values (TF hook). Seed-era subclasses override it."""
        c = (apply_state or {}).get((var.device, var.dtype)) or self._fallback_apply_state(
            var.device, var.dtype
        )
        self.update_sparse(var, indices, grad, c=c, **self._rule_slots(self._record(var)))

    def _resource_apply_sparse_duplicate_indices(
        self, grad: Tensor, handle: Tensor, indices: Tensor, apply_state: Any = None
    ) -> None:
        """Sums duplicate indices, then calls ``_resource_apply_sparse`` (TF hook)."""
        g = deduplicate(IndexedSlices(grad, indices, tuple(handle.shape)))
        call_hook(self._resource_apply_sparse, g.values, handle, apply_state, g.indices)
