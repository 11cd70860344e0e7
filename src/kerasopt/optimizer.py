"""The ``Optimizer`` base class: TF optimizer_v2's public API over kerasopt's step pipeline.

``apply_gradients`` is ``kerasopt.step.plan`` (checks everything, changes nothing, may raise) then
``kerasopt.step.commit`` (writes), under the optimizer's step lock: a call that raises leaves every
variable, slot and counter as it was. The class holds the public surface; the rule contract is
``_apply.Rule``, TF's hyperparameter API ``_hyperparameters.Hyperparameters``, TF 2.x's hooks
``_legacy.Hooks``, and the machinery lives in modules named for it (docs/architecture.md).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from . import _features, _gradients, _legacy, _state, _traced, step
from ._apply import Rule, RulePath
from ._gradients import Grad
from ._hyper import (
    _UNSET,
    Hyper,
    HyperStore,
    Param,
    epsilon_or_default,
    non_negative,
    number_value,
    require_init,
    unit_interval,
)
from ._hyperparameters import Hyperparameters
from ._serialization import build_from_config
from ._slots import ByIdentity, SlotStore
from ._sync import StepLock, locked
from ._types import Coefficients, Record
from .variables import Variable

__all__ = [  # what an optimizer file (kerasopt's or a user's) needs: docs/custom-optimizer.md
    "Coefficients",
    "Hyper",
    "Optimizer",
    "Param",
    "epsilon_or_default",
    "non_negative",
    "unit_interval",
]

_RULES = RulePath()


# ABCMeta only so that the wrappers, which compose instead of inheriting, register as virtual
# subclasses (TF's LossScaleOptimizer is an Optimizer): nothing here is abstract.
class Optimizer(Rule, Hyperparameters, _legacy.Hooks, metaclass=abc.ABCMeta):
    """Base class of kerasopt optimizers (TF ``tf.keras.optimizers.Optimizer``, optimizer_v2).

    You never use this class directly: create one of its subclasses such as
    ``kerasopt.optimizers.SGD`` or ``kerasopt.optimizers.Adam``, then call ``minimize`` (computes
    the gradients and applies them) or ``apply_gradients`` (applies gradients you computed and
    perhaps processed).

    Args:
        name: the optimizer's name (defaults to the class name).
        gradient_aggregator: a function from a list of (grad, var) pairs to such a list, run
            first on every step (TF's replica aggregation; under DDP/FSDP ``torch.distributed``
            has already reduced the gradients, so leave it ``None`` there).
        gradient_transformers: functions from a list of (grad, var) pairs to such a list, run after
            clipping.
        **kwargs: ``decay`` (legacy ``lr / (1 + decay * iterations)``), ``lr`` (deprecated
            alias of ``learning_rate``) and the base features (``weight_decay``, ``clipnorm``,
            ``use_ema``, ..., ``implementation``: ``kerasopt._features.FEATURES``).

    Raises:
        TypeError: for an unexpected keyword argument.
        ValueError: for an invalid value (the message names the argument).

    Example:
        >>> import kerasopt as ko
        >>> var1, var2 = ko.Variable(2.0, name="var1"), ko.Variable(5.0, name="var2")
        >>> opt = ko.optimizers.SGD(learning_rate=0.1)
        >>> loss = lambda: 3 * var1 * var1 + 2 * var2 * var2
        >>> int(opt.minimize(loss, var_list=[var1, var2]))
        1
        >>> round(float(var1), 4), round(float(var2), 4)
        (0.8, 3.0)
    """

    learning_rate = Hyper(0.001, check=non_negative)
    decay = Hyper(0.0, check=non_negative)

    #: how a plan is applied: the rule and engines, or a TF 2.x subclass's hooks (chosen per class)
    _path: ClassVar[RulePath | _legacy.HookPath] = _RULES
    #: set by LossScaleOptimizer on the optimizer it wraps (TF's flag; one wrapper per optimizer)
    _is_wrapped_by_loss_scale_optimizer: bool = False
    #: state built while dynamo traced a step, and the counter's version then (_traced.prepare)
    _traced_build: tuple[Any, int, int] | None = None

    # The base features, set by __init__ from kerasopt._features.FEATURES (their defaults,
    # checks and config policy are there; test_features holds these annotations to the table).
    weight_decay: float | None
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._path = _HOOKS if _HOOKS.serves(cls) else _RULES

    def __init__(
        self,
        name: str | None = None,
        gradient_aggregator: Any = None,
        gradient_transformers: Sequence[Callable[..., Any]] | None = None,
        learning_rate: Any = _UNSET,
        **kwargs: Any,
    ) -> None:
        if self.__dict__:
            # Keras 3 and TF refuse this too: the base's state would overwrite (or miss) it.
            raise RuntimeError(
                f"It looks like you are subclassing `Optimizer` and forgot to call "
                f"`super().__init__()` as the first statement in `__init__()` (attributes set "
                f"before it: {sorted(self.__dict__)})."
            )
        self._hyper = HyperStore(torch.device("cpu"))  # the hyperparameters (kerasopt._hyper)
        # held across plan and commit, and by every state read: steps never interleave and a
        # state_dict is one step boundary's (kerasopt._sync)
        self._step_lock = StepLock()
        self._params: dict[str, Any] = {}
        learning_rate = _features.check_arguments(type(self).__name__, learning_rate, kwargs)
        self._name = name if name is not None else type(self).__name__
        # variables, their names and slots (kerasopt._slots); loaded state adopted by _state
        self._store = SlotStore(adopt=_state.adopt_pending)
        self._home = torch.device("cpu")
        # A variable, as TF's `iter` (`opt.iterations.assign(5)` works); int64.
        self._raw_iterations: Tensor = Variable._wrap(
            torch.zeros((), dtype=torch.int64), False, "iter", None
        )
        self._step = 0  # Python mirror of _raw_iterations: control flow never reads the device
        self._step_version = self._raw_iterations._version
        self._iterations_adopted = False
        self._constants: dict[tuple[Any, ...], Tensor] = {}
        self._exclude_vars: ByIdentity[bool] = ByIdentity()
        self._exclude_names: re.Pattern[str] | None = None

        if learning_rate is not _UNSET:
            self.learning_rate = learning_rate
        self.decay = kwargs.pop("decay", 0.0)
        self._initial_decay = number_value(self._hyper_source("decay")) or 0.0
        self.gradient_aggregator = gradient_aggregator
        self.gradient_transformers = list(gradient_transformers or [])

        _features.init(self, kwargs)  # clipnorm, use_ema, ..., implementation (one table)

    # ------------------------------------------------------------------------------------------
    # public attributes
    @property
    def name(self) -> str:
        return self._name

    @property
    def iterations(self) -> Tensor:
        """Number of completed updates (an int64 0-d tensor; with accumulation, raw // K)."""
        k = self.gradient_accumulation_steps
        return self._raw_iterations // k if k else self._raw_iterations

    @iterations.setter
    def iterations(self, value: int | Tensor) -> None:
        if isinstance(value, Tensor):
            self._raw_iterations = _state.adoptable_counter(value, self._store.built)
            self._iterations_adopted = True
            self._sync_step()
            return
        v = int(value)
        self._raw_iterations.fill_(v)
        self._sync_step()

    @property
    def built(self) -> bool:
        return self._store.built

    # ------------------------------------------------------------------------------------------
    # slots and weights
    def _create_slots(self, var_list: Sequence[Tensor]) -> None:
        """Creates the rule's slots for new variables (TF's hook; seed-era subclasses override)."""
        names = self.slot_names()
        if self.interleave_slots:
            for var in var_list:
                for slot in names:
                    self.add_slot(var, slot, self.slot_initializer(slot))
        else:
            for slot in names:
                for var in var_list:
                    self.add_slot(var, slot, self.slot_initializer(slot))

    def add_slot(
        self,
        var: Tensor,
        slot_name: str,
        initializer: Any = "zeros",
        shape: Sequence[int] | None = None,
    ) -> Tensor:
        """Creates (once) the slot ``slot_name`` of ``var`` and returns it.

        Args:
            var: the variable the slot belongs to.
            slot_name: TF's slot name, e.g. ``"m"``.
            initializer: ``"zeros"``, ``"ones"``, a number, a tensor, or a callable
                ``(shape, dtype) -> tensor``.
            shape: the slot's shape (default: the variable's).

        Returns:
            The slot tensor (same dtype and device as ``var``).
        """
        float32 = self.slot_dtype is not None  # float32 slots for float16/bfloat16 variables
        return self._store.slot_for(self._record(var), slot_name, initializer, shape, float32)

    def get_slot(self, var: Tensor, slot_name: str) -> Tensor:
        """The slot ``slot_name`` of ``var`` (TF's slot names, e.g. ``"m"``; aliases accepted).

        Raises:
            KeyError: naming the variable and the slot when either is unknown.
        """
        return self._store.slot(var, slot_name, self._name, self.slot_aliases)

    def get_slot_names(self) -> list[str]:
        """Names of the rule's slots, in first-creation order."""
        return self._store.slot_names()

    def add_weight(
        self,
        name: str,
        shape: Sequence[int] = (),
        dtype: torch.dtype = torch.float32,
        initializer: Any = "zeros",
    ) -> Tensor:
        """Creates an optimizer-level weight (e.g. Nadam's ``momentum_cache``) after ``iterations``."""
        fill = {"zeros": 0.0, "ones": 1.0}.get(initializer, initializer)
        tensor = torch.full(tuple(shape), float(fill), dtype=dtype, device=self._home)
        self._store.add_weight(name, tensor)
        return tensor

    def variables(self) -> list[Tensor]:
        """``[iterations, optimizer-level weights, slots in creation order, feature state]``."""
        return [self._raw_iterations, *self._store.weights()]

    @property
    def weights(self) -> list[Tensor]:
        return self.variables()

    @locked
    def get_weights(self) -> list[np.ndarray]:
        """The values of ``weights`` as NumPy arrays (TF's order)."""
        return [w.detach().cpu().numpy().copy() for w in self.variables()]

    @locked
    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assigns ``weights`` (e.g. a TF optimizer's ``get_weights()``) in TF's order.

        Raises:
            ValueError: when the optimizer has no weights yet, or on a count or shape mismatch;
                nothing is assigned then.
        """
        _state.set_weights(self, self.variables(), list(weights))
        self._sync_step()

    # ------------------------------------------------------------------------------------------
    # variables: the registry is a SlotStore (kerasopt._slots); these read and extend it
    def _record(self, var: Tensor) -> Record:
        """``var``'s record, registered (and the optimizer homed on its device) if new."""
        record = self._store.record_of(var)
        if record is None:
            self._ensure_home(var.device)
            record = self._store.register(var)
        return record

    def build(self, var_list: Any) -> None:
        """Creates the slots of ``var_list`` now (optional: slots are also created lazily)."""
        require_init(self, "build", "calling")
        variables = self._flatten_var_list(var_list)
        with self._step_lock:
            self._create_state([v for v in variables if self._store.record_of(v) is None])

    def _create_state(self, new_vars: Sequence[Tensor]) -> None:
        # Creation is undone if loaded state does not fit the new variables: all or nothing.
        self._store.create(new_vars, self._create_state_unchecked, self._name)

    def _create_state_unchecked(self, new_vars: Sequence[Tensor]) -> None:
        if not self._store.built:
            self._store.built = True
            if new_vars:
                self._ensure_home(new_vars[0].device)
            self._build_optimizer_weights(new_vars)
        if not new_vars:
            return
        for var in new_vars:
            self._record(var)
        self._create_slots(list(new_vars))
        if self.use_ema:
            for var in new_vars:
                self.add_slot(var, "average")
        if self.gradient_accumulation_steps:
            for var in new_vars:
                self.add_slot(var, "gradient_accumulator")

    def _build_optimizer_weights(self, var_list: Sequence[Tensor]) -> None:
        """Hook for optimizer-level weights (Nadam's ``momentum_cache``)."""

    def _flatten_var_list(self, var_list: Any) -> list[Tensor]:
        return self._store.flatten(var_list)

    # ------------------------------------------------------------------------------------------
    # minimize
    def minimize(
        self,
        loss: Any,
        var_list: Any,
        grad_loss: Tensor | None = None,
        name: str | None = None,
        tape: Any = None,
    ) -> Tensor:
        """Computes the gradients of ``loss`` for ``var_list`` and applies them.

        Args:
            loss: a zero-argument callable returning the loss, or a loss tensor (then ``tape`` is
                used if given, otherwise the tensor is differentiated through autograd directly —
                TF would require the tape).
            var_list: tensors, an ``nn.Module``, a dict of named tensors, or a callable returning
                them; a callable is evaluated after ``loss()``, so lazily built layers exist.
            grad_loss: optional gradient of the loss (``output_gradients``).
            name: ignored (TF's op name).
            tape: a ``kerasopt.GradientTape`` that recorded a tensor ``loss``.

        Returns:
            ``iterations`` after the update.

        Example:
            >>> import torch, kerasopt as ko
            >>> w = ko.Variable([1.0, 2.0], name="w")
            >>> opt = ko.optimizers.SGD(0.5)
            >>> _ = opt.minimize(lambda: (w * w).sum(), [w])
            >>> w.numpy().tolist()
            [0.0, 0.0]
        """
        require_init(self, "minimize", "calling")
        grads_and_vars = self._compute_gradients(loss, var_list, grad_loss, tape)
        return self.apply_gradients(grads_and_vars)

    def _compute_gradients(
        self, loss: Any, var_list: Any, grad_loss: Tensor | None = None, tape: Any = None
    ) -> list[tuple[Grad | None, Tensor]]:
        """TF's ``_compute_gradients``: the (gradient, variable) pairs ``minimize`` applies."""
        return _gradients.compute_gradients(
            loss, var_list, grad_loss, tape, self._flatten_var_list, self.loss_scale_factor
        )

    # ------------------------------------------------------------------------------------------
    # apply_gradients: plan, then commit
    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[Any, Tensor]],
        name: str | None = None,
        experimental_aggregate_gradients: bool = True,
    ) -> Tensor:
        """Applies gradients to variables (TF's ``apply_gradients``).

        An empty ``grads_and_vars`` creates the optimizer's weights and changes nothing else
        (TF returns ``no_op``).

        Args:
            grads_and_vars: (gradient, variable) pairs. A gradient may be a dense tensor, a
                ``kerasopt.IndexedSlices``, a torch sparse COO tensor, or ``None`` (skipped with a
                warning).
            name: ignored (TF's op name).
            experimental_aggregate_gradients: whether ``gradient_aggregator`` /
                ``_aggregate_gradients`` runs (TF's flag).

        Returns:
            ``iterations`` after this step.

        Raises:
            ValueError: no gradient at all, a variable listed twice, or a shape/dtype/device
                mismatch (the message names the variable). Nothing is changed then.
            TypeError: a pair that is not (gradient, variable) or a variable that is not a tensor.

        Example:
            >>> import torch, kerasopt as ko
            >>> v = ko.Variable([1.0, -1.0])
            >>> opt = ko.optimizers.SGD(0.1)
            >>> int(opt.apply_gradients([(torch.tensor([1.0, 1.0]), v)]))
            1
            >>> v.numpy().tolist()
            [0.8999999761581421, -1.100000023841858]
        """
        if torch.compiler.is_compiling():
            # Traced by torch.compile: the common step as tensor operations, no graph break
            # (kerasopt._traced); anything else runs the eager step below.
            pairs = list(grads_and_vars)
            if _traced.ready(self, pairs, experimental_aggregate_gradients):
                return _traced.apply(self, pairs)
            grads_and_vars = pairs
        return self._apply_gradients(grads_and_vars, experimental_aggregate_gradients)

    # The eager step is bookkeeping (checks, the transaction, locks) around engines that compile
    # themselves: where a traced function reaches it, it runs as it does eagerly (one graph
    # break) instead of being traced in fragments.
    @torch.compiler.disable
    def _apply_gradients(
        self, grads_and_vars: Iterable[tuple[Any, Tensor]], experimental_aggregate_gradients: bool
    ) -> Tensor:
        # state a failed trace of this step built (kerasopt._traced.prepare): forgotten if the
        # eager step fails too
        built = None if self._traced_build is None else _traced.take_build(self)
        try:
            require_init(self, "apply_gradients", "calling")
            pairs = step.pairs(grads_and_vars)
            with self._step_lock:
                if not pairs:
                    # TF: an empty list creates the optimizer's weights and applies nothing.
                    self._create_state([])
                    return self.iterations
                plan = step.plan(self, pairs, experimental_aggregate_gradients)
                with torch.no_grad():
                    step.commit(self, plan)
                return self.iterations
        except BaseException:
            if built is not None:
                built.restore()
            raise

    def _name_of(self, var: Tensor) -> str:
        return self._store.name_of(var)

    def _label(self, var: Tensor) -> str:
        return repr(self._name_of(var))

    def _prepare(
        self, variables: Sequence[Tensor]
    ) -> dict[tuple[torch.device, torch.dtype], Coefficients]:
        apply_state: dict[tuple[torch.device, torch.dtype], Coefficients] = {}
        for var in variables:
            key = (var.device, self._path.compute_dtype(var.dtype))
            if key not in apply_state:
                apply_state[key] = self.coefficients()
                self._prepare_local(key[0], key[1], apply_state)
        return apply_state

    def _fallback_apply_state(
        self, var_device: torch.device, var_dtype: torch.dtype
    ) -> Coefficients:
        apply_state = {(var_device, var_dtype): self.coefficients()}
        self._prepare_local(var_device, var_dtype, apply_state)
        return apply_state[(var_device, var_dtype)]

    def _prepare_local(
        self, var_device: torch.device, var_dtype: torch.dtype, apply_state: dict[Any, Any]
    ) -> None:
        """Computes the step's coefficients for one (device, dtype) (TF's ``_prepare_local``)."""
        c = apply_state[(var_device, var_dtype)]
        if "learning_rate" in self._hyper.sources:
            c.lr_t = self._decayed_lr(var_dtype).to(var_device)
        self.prepare(c, var_device, var_dtype)

    # helpers for `prepare` (and Hyperparameters': _hyper_t, _const, _decayed_lr)
    def _local_step(self, dtype: torch.dtype, device: torch.device, offset: int = 1) -> Tensor:
        """``iterations + offset`` in ``dtype`` (t = iterations + 1 is the update being applied)."""
        return (self.iterations + offset).to(dtype).to(device)

    # ------------------------------------------------------------------------------------------
    # engines
    # ------------------------------------------------------------------------------------------
    # newer-generation features
    def exclude_from_weight_decay(
        self, var_list: Sequence[Tensor] | None = None, var_names: Sequence[str] | None = None
    ) -> None:
        """Excludes variables from ``weight_decay`` by identity or by name regex (``re.search``).

        Names are the registered names: ``kerasopt.Variable.name`` or the ``named_parameters()``
        key of an ``nn.Module`` passed as ``var_list``. Each call replaces the previous one.

        Raises:
            ValueError: when called after the optimizer has been built.
        """
        if self._store.built:
            raise ValueError(
                "`exclude_from_weight_decay()` can only be configured before the optimizer is built."
            )
        self._exclude_vars = ByIdentity((v, True) for v in var_list or [])
        self._exclude_names = re.compile("|".join(var_names)) if var_names else None

    def _weight_decay_for(self, record: Record) -> float | None:
        """The decoupled decay coefficient of one variable (None: not decayed)."""
        if self.weight_decay is None or self._excluded(record):
            return None
        return float(self.weight_decay)

    def _excluded(self, record: Record) -> bool:
        if record.var in self._exclude_vars:
            return True
        return bool(self._exclude_names is not None and self._exclude_names.search(record.name))

    def finalize_variable_values(self, var_list: Any) -> None:
        """With ``use_ema``, overwrites each variable with its moving average (else a no-op)."""
        if not self.use_ema:
            return
        with torch.no_grad():
            for var in self._flatten_var_list(var_list):
                record = self._store.record_of(var)
                if record is not None and "average" in record.slots:
                    var.copy_(record.slots["average"])

    def scale_loss(self, loss: Tensor) -> Tensor:
        """``loss * loss_scale_factor`` (identity when it is None)."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    # ------------------------------------------------------------------------------------------
    # state
    @locked
    def state_dict(self) -> dict[str, Tensor]:
        """The optimizer's state as a flat ``dict[str, Tensor]`` keyed by variable and slot names.

        Keys: ``iterations``, ``hyper/<name>`` (hyperparameters set as numbers),
        ``weight/<name>`` (optimizer-level weights) and ``slot/<variable name>/<slot name>``.
        Variable names are ``kerasopt.Variable.name``, the ``named_parameters()`` key when an
        ``nn.Module`` (or a dict of named tensors) was passed as ``var_list``/to ``build``, else
        ``variable_<n>`` in order of first use. Saves with ``torch.save``; loads with
        ``torch.load(weights_only=True)``; works with ``torch.distributed.checkpoint``.

        Raises:
            ValueError: two variables share a name.

        Example:
            >>> import torch, kerasopt as ko
            >>> model = torch.nn.Linear(2, 1)
            >>> opt = ko.optimizers.Adam()
            >>> opt.build(model)
            >>> sorted(opt.state_dict())[:3]
            ['hyper/beta_1', 'hyper/beta_2', 'hyper/decay']
            >>> [k for k in opt.state_dict() if k.startswith("slot/bias")]
            ['slot/bias/m', 'slot/bias/v']
        """
        return _state.state_dict(self, self._store)

    @locked
    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        """Restores ``state_dict()`` output; checks every key, shape, dtype and value first.

        State of variables this optimizer has not seen yet is kept and adopted (checked again)
        when they first appear, so it may be loaded before the first step. Hyperparameter values
        pass the constructor's validation.

        Args:
            state_dict: what ``state_dict()`` returned.
            strict: every slot of every known variable must be present, and state kept for
                unseen variables must match the names of the variables that then appear (else
                the first step raises, changing nothing). ``False`` loads a partial state.

        Raises:
            ValueError: a key, shape, dtype or value that does not fit, or a missing slot (the
                message names the key); the optimizer is then unchanged.
        """
        _state.load_state_dict(self, self._store, state_dict, strict=strict)

    # ------------------------------------------------------------------------------------------
    # config
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (TF's keys); ``from_config`` rebuilds an equal optimizer."""
        config: dict[str, Any] = {"name": self._name}
        config.update(_features.config(self, self.keras3_config))
        config.update(
            self._declared_config(skip_decay=self.keras3_config and not self._decay_active())
        )
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Optimizer:
        """Creates an optimizer from ``get_config()`` output (``lr`` → ``learning_rate``)."""
        return build_from_config(cls, config, custom_objects)

    def __repr__(self) -> str:
        self._sync_step()  # (a traced step counts on the tensor alone)
        return f"<kerasopt.optimizers.{type(self).__name__} name={self._name!r} iterations={self._step}>"


_HOOKS = _legacy.HookPath(Optimizer)
