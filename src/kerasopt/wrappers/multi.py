"""``MultiOptimizer`` and ``OptimizerMap``: different optimizers for different variables.

Keras 3's ``keras.optimizers.MultiOptimizer`` (docs/reference-behaviour.md Part 2 §3.7). Variables are routed by
their registered name (``kerasopt.Variable.name``, or the ``named_parameters()`` key / dict key
when an ``nn.Module`` or a ``{name: tensor}`` dict is passed). The wrapper holds no optimizer
math: each inner optimizer runs its own full pipeline on its variables.

``OptimizerMap`` lives in ``kerasopt.wrappers._optimizer_map`` and is re-exported here.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import torch
from torch import Tensor

from .. import _gradients, _state, _traced
from .. import step as _step
from .._hyper import non_negative
from .._serialization import serialize
from .._slots import ByIdentity, SlotStore, var_label
from .._state import StateError, expect
from .._sync import locked
from ..optimizer import Optimizer
from ..step import pairs as read_pairs
from ..variables import Variable
from ._base import Transaction, Wrapper
from ._optimizer_map import OptimizerMap as OptimizerMap

__all__ = ["MultiOptimizer", "OptimizerMap"]


class MultiOptimizer(Wrapper):
    """Applies different optimizers to different variables (Keras 3's MultiOptimizer).

    Each variable is assigned, once, at ``build`` (the first ``apply_gradients`` /
    ``minimize``), to the optimizer its map returns. Every step then validates all groups first
    (each inner optimizer's plan), so an invalid gradient anywhere changes nothing, and only then
    lets each inner optimizer with at least one gradient run its own full pipeline (its clipping,
    weight decay, EMA, accumulation and ``iterations``). The MultiOptimizer's own ``iterations``
    counts its calls.

    **Update rule**: none of its own; per group, the inner optimizer's rule, exactly as if that
    optimizer were used alone on its variables.

    torch.optim expresses this with parameter groups of one optimizer class; here each group may
    use a different algorithm with its own state and step counter.

    Args:
        optimizer_map: an ``OptimizerMap`` (routes by variable name) or any callable
            ``variable -> optimizer``.
        loss_scale_factor: static loss scale, pushed to every inner optimizer (replacing
            theirs, including with None).
        name: defaults to ``"MultiOptimizer"``.

    Example:
        >>> import torch, kerasopt as ko
        >>> model = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0), model.bias.fill_(1.0)
        >>> adam, sgd = ko.optimizers.Adam(0.1), ko.optimizers.SGD(0.5)
        >>> opt = ko.optimizers.MultiOptimizer(ko.optimizers.OptimizerMap(sgd, {"bias": adam}))
        >>> _ = opt.minimize(lambda: model(torch.ones(1, 2)).sum(), model)
        >>> model.weight.tolist(), [round(b, 4) for b in model.bias.tolist()]
        ([[0.5, 0.5]], [0.9])
        >>> [int(o.iterations) for o in opt.optimizers], int(opt.iterations)
        ([1, 1], 1)
    """

    _optimizer_arguments = ("optimizer_map",)  # from_config deserializes it

    def __init__(
        self,
        optimizer_map: OptimizerMap | Callable[[Tensor], Optimizer],
        loss_scale_factor: float | None = None,
        name: str | None = None,
    ) -> None:
        if loss_scale_factor is not None:
            # the base optimizer's check of the argument
            if isinstance(loss_scale_factor, (bool, Tensor)) or not isinstance(
                loss_scale_factor, numbers.Real
            ):
                raise TypeError(
                    "`loss_scale_factor` must be a number or None. Received: "
                    f"loss_scale_factor={loss_scale_factor!r}"
                )
            non_negative("loss_scale_factor", loss_scale_factor)
        if not callable(optimizer_map):
            raise TypeError(
                "optimizer_map must be an OptimizerMap or a callable returning an optimizer for "
                f"a variable. Received: {optimizer_map}"
            )
        super().__init__(name if name is not None else type(self).__name__)
        self._optimizer_map = optimizer_map
        self._inner_optimizers: list[Optimizer] = []
        if isinstance(optimizer_map, OptimizerMap):
            for opt in [*optimizer_map.values(), optimizer_map.default_optimizer]:
                if not any(opt is o for o in self._inner_optimizers):
                    self._inner_optimizers.append(opt)
        # Its own counter (its calls) and a learning rate it never uses (0.0): Keras 3's
        # MultiOptimizer is a base optimizer with both variables, so `variables()` /
        # `get_weights()` keep its layout [iterations, learning_rate, each inner's weights...].
        self._iterations: Tensor = Variable._wrap(
            torch.zeros((), dtype=torch.int64), False, "iter", None
        )
        self._iterations_adopted = False
        self._dummy_learning_rate = torch.zeros((), dtype=torch.float32)
        self._home = torch.device("cpu")
        self._names = SlotStore()  # the names a module or a dict gives the variables
        self._built = False
        self._var_list: list[Tensor] = []
        self._var_to_optimizer: ByIdentity[int] = ByIdentity()
        self._build_step: tuple[Transaction, int] | None = None
        # built while dynamo traced a step: the counter's identity and version then
        self._built_while_tracing: tuple[int, int] | None = None
        self._loss_scale_factor: float | None = None
        self.loss_scale_factor = loss_scale_factor  # pushed to the inner optimizers

    # ------------------------------------------------------------------------------------------
    # attributes
    @property
    def loss_scale_factor(self) -> float | None:
        """The static loss scale; setting it sets every inner optimizer's too."""
        return self._loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value: float | None) -> None:
        self._loss_scale_factor = value
        for opt in self._inner_optimizers:
            opt.loss_scale_factor = value

    @property
    def learning_rate(self) -> Any:
        raise AttributeError(
            "Learning rate cannot be accessed on a MultiOptimizer. Access the learning rate on "
            "the individual sub-optimizers instead."
        )

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        raise AttributeError(
            "Learning rate cannot be set on a MultiOptimizer. Set the learning rate on the "
            "individual sub-optimizers instead."
        )

    lr = learning_rate

    @property
    def iterations(self) -> Tensor:
        """Number of calls that applied gradients (an int64 0-d tensor)."""
        return self._iterations

    @iterations.setter
    def iterations(self, value: int | Tensor) -> None:
        if isinstance(value, Tensor):
            self._iterations = _state.adoptable_counter(value, self._built)
            self._iterations_adopted = True
            return
        self._iterations.fill_(int(value))

    @property
    def built(self) -> bool:
        return self._built

    @property
    def optimizers(self) -> list[Optimizer]:
        """The inner optimizers: the map's values in insertion order, the default, then any
        further optimizer a callable map returned at build, in first-seen order."""
        return list(self._inner_optimizers)

    @property
    def optimizer_map(self) -> OptimizerMap | Callable[[Tensor], Optimizer]:
        return self._optimizer_map

    # what the Wrapper base forwards: variables / weights / get_weights, get_slot,
    # get_slot_names, finalize_variable_values
    def _inners(self) -> list[Optimizer]:
        return self._inner_optimizers

    def _owner_of(self, var: Tensor) -> Optimizer:
        return self._inner_optimizers[self._group_of(var)]

    def _flatten_var_list(self, var_list: Any) -> list[Tensor]:
        return self._names.flatten(var_list)

    def _state_prefix(self, index: int) -> str:
        return f"optimizer_{index}/"

    def _own_variables(self) -> list[Tensor]:
        return [self._iterations, self._dummy_learning_rate]

    def _name_of(self, var: Tensor) -> str:
        return self._names.name_of(var)

    def _label(self, var: Tensor) -> str:
        return repr(self._name_of(var))

    # ------------------------------------------------------------------------------------------
    # routing
    @locked
    def build(self, var_list: Any) -> None:
        """Assigns each variable to its optimizer and builds each inner optimizer on its share.

        Runs once (later calls do nothing). Inner optimizers that receive no variable stay
        unbuilt.

        Raises:
            ValueError: the map gives something that is not an optimizer, or a
                ``LossScaleOptimizer`` / ``MultiOptimizer``; a variable listed twice; a
                variable without a name routed through an ``OptimizerMap``.
        """
        if self._built:
            return
        variables = self._flatten_var_list(var_list)
        names = [self._names.hints.get(v) or getattr(v, "name", None) for v in variables]
        # Route everything before changing anything.
        assigned: list[Optimizer] = []
        seen: set[int] = set()
        for var, name in zip(variables, names):
            if id(var) in seen:
                raise ValueError(
                    f"Variable {self._label(var)} appears more than once in `var_list`."
                )
            seen.add(id(var))
            assigned.append(self._route(var, name))
        if variables:
            self._move_home(variables[0].device)
        groups: dict[int, list[Tensor]] = {}
        count_before = len(self._inner_optimizers)
        for var, name, opt in zip(variables, names, assigned):
            index = next((i for i, o in enumerate(self._inner_optimizers) if o is opt), None)
            if index is None:
                opt.loss_scale_factor = self.loss_scale_factor
                self._inner_optimizers.append(opt)
                index = len(self._inner_optimizers) - 1
            self._var_to_optimizer[var] = index
            groups.setdefault(index, []).append(var)
            if isinstance(name, str):
                # The inner optimizer names slots and matches weight-decay exclusions by it.
                _step.name_variable(opt, var, name)
        creation = Transaction()
        try:
            for index, group in groups.items():
                creation.build(self._inner_optimizers[index], group)
        except BaseException:
            self._forget_routing(count_before)
            raise
        self._build_step = (creation, count_before)
        self._var_list = list(variables)
        self._built = True

    def _unbuild(self) -> None:
        """Forgets the build (a first ``apply`` that raised): all or nothing."""
        assert self._build_step is not None
        creation, count = self._build_step
        creation.unbuild()
        self._forget_routing(count)

    def _forget_routing(self, count: int) -> None:
        del self._inner_optimizers[count:]
        self._var_to_optimizer.clear()
        self._var_list = []
        self._built = False

    def _move_home(self, device: torch.device) -> None:
        """Moves the counter and the dummy learning rate to the first variable's device (not
        to the meta device, as the inner optimizers do not)."""
        if device == self._home or device.type == "meta":
            return
        self._home = device
        if not self._iterations_adopted:
            self._iterations = Variable._wrap(
                self._iterations.detach().to(device), False, "iter", None
            )
        self._dummy_learning_rate = self._dummy_learning_rate.to(device)

    def _route(self, var: Tensor, name: Any) -> Optimizer:
        label = repr(name) if isinstance(name, str) else var_label(var)
        if isinstance(self._optimizer_map, OptimizerMap):
            if not isinstance(name, str):
                raise ValueError(
                    f"MultiOptimizer routes variables by name, but variable {label} has none: "
                    "pass an nn.Module or a {name: tensor} dict, or use kerasopt.Variable(name=...)."
                )
            opt: Any = self._optimizer_map[name]
        else:
            opt = self._optimizer_map(var)
        if not isinstance(opt, Optimizer):
            raise ValueError(f"Optimizer for variable {label} is not an Optimizer instance.")
        if isinstance(opt, Wrapper):
            raise ValueError(
                f"Optimizer for variable {label} is a {type(opt).__name__}, which cannot be used "
                "inside a MultiOptimizer."
            )
        return opt

    def _group_of(self, var: Tensor) -> int:
        index = self._var_to_optimizer.get(var)
        if index is None:
            raise ValueError(
                f"Unknown variable: {self._label(var)}. This optimizer can only be called for the "
                "variables it was originally built with. When working with a new set of "
                "variables, you should recreate a new optimizer instance."
            )
        return index

    def _refuse_unknown(self, position: int, grad: Any, var: Any) -> NoReturn:
        """Raises for a variable the optimizer was not built with, naming the built variable
        expected at ``position`` and, where a plain optimizer would refuse the pair for a reason
        of its own (a swapped pair, an integer variable, a view of a built variable), that."""
        expected = self._var_list[position] if position < len(self._var_list) else None
        where = f"at position {position}"
        if expected is not None:
            where += f", where the optimizer was built with variable {self._label(expected)}"
        if isinstance(var, Tensor):
            try:
                if grad is not None:
                    _gradients.PairChecks(self._names, type(self).__name__, True).pairs(
                        [(grad, var)]
                    )
                _gradients.disjoint([*self._var_list, var], self._name_of, self._name)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{e} (MultiOptimizer: {where}.)") from None
        raise ValueError(
            f"Unknown variable: {self._label(var)} {where}. This optimizer can only be called "
            "for the variables it was originally built with. When working with a new set of "
            "variables, you should recreate a new optimizer instance."
        )

    # ------------------------------------------------------------------------------------------
    # steps
    @locked
    def apply(self, grads: Sequence[Any], trainable_variables: Any = None) -> Tensor:
        """Routes each gradient to its optimizer; each runs its own full pipeline.

        Args:
            grads: one gradient (or None) per variable: always the full list the optimizer was
                built with.
            trainable_variables: the variables (tensors, an ``nn.Module`` or a named dict), in
                the order of ``grads``; defaults to the built list. The first call builds.

        Returns:
            The MultiOptimizer's ``iterations`` after the call (unchanged when ``grads`` is
            empty).

        Raises:
            ValueError: not built and no variables; a count mismatch; an unknown variable; no
                gradient at all; any inner optimizer's validation error. Nothing changes then.
        """
        grads = list(grads)
        if not grads:
            return self.iterations
        if trainable_variables is None:
            if not self._built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be "
                    "built on a list of variables. Call `optimizer.build(trainable_variables)` "
                    "first."
                )
            variables = self._var_list
        else:
            variables = self._flatten_var_list(trainable_variables)
            if not self._built:
                self.build(variables)
                try:
                    return self._apply_built(grads, variables)
                except BaseException:
                    self._unbuild()  # a failed first call leaves it unbuilt
                    raise
        return self._apply_built(grads, variables)

    def _apply_built(self, grads: list[Any], variables: list[Tensor]) -> Tensor:
        for count in (len(self._var_list), len(variables)):
            if len(grads) != count:
                raise ValueError(
                    "Gradients must match trainable variables one-to-one. Received "
                    f"{len(grads)} gradients and {count} variables."
                )
        pairs: list[list[tuple[Any, Tensor]]] = [[] for _ in self._inner_optimizers]
        dropped: list[str] = []
        for position, (grad, var) in enumerate(zip(grads, variables)):
            index = self._var_to_optimizer.get(var)
            if index is None:
                self._refuse_unknown(position, grad, var)
            if grad is None:
                dropped.append(self._name_of(var))
            else:
                pairs[index].append((grad, var))
        if not any(pairs):
            names = tuple(self._name_of(v) for v in variables)
            raise ValueError(f"No gradients provided for any variable: {names}.")
        if dropped:
            warnings.warn(
                f"Gradients do not exist for variables {dropped} when minimizing the loss. If "
                "you're using `model.compile()`, did you forget to provide a `loss` argument?",
                UserWarning,
                stacklevel=2,
            )
        # Every group is validated before any group is applied; a commit that raises (a
        # constraint) rolls back every group's writes, not just the failing one's.
        with Transaction() as step:
            for opt, group in zip(self._inner_optimizers, pairs):
                if group:
                    step.plan(opt, group)
            step.commit()
            self._iterations.add_(1)
        return self.iterations

    def apply_gradients(
        self,
        grads_and_vars: Iterable[tuple[Any, Tensor]],
        name: str | None = None,
        experimental_aggregate_gradients: bool = True,
    ) -> Tensor:
        """``apply(grads, vars)`` on (gradient, variable) pairs (the full built list).

        Example:
            >>> import torch, kerasopt as ko
            >>> a, b = ko.Variable(1.0, name="a"), ko.Variable(1.0, name="b")
            >>> m = ko.optimizers.OptimizerMap(ko.optimizers.SGD(1.0), {"b": ko.optimizers.SGD(0.5)})
            >>> opt = ko.optimizers.MultiOptimizer(m)
            >>> _ = opt.apply_gradients([(torch.tensor(1.0), a), (torch.tensor(1.0), b)])
            >>> float(a), float(b)
            (0.0, 0.5)
        """
        if torch.compiler.is_compiling():
            # Traced by torch.compile: each inner optimizer's traced step (kerasopt._traced);
            # anything else runs the eager step below.
            listed = list(grads_and_vars)
            groups = self._traced_groups(listed)
            if groups is not None:
                steps = [(o, g) for o, g in zip(self._inner_optimizers, groups) if g]
                values = [_traced.hyper_values(o) for o, _ in steps]  # (user code: first)
                with torch.no_grad():
                    for (opt, group), hyper in zip(steps, values):
                        _traced.apply(opt, group, values=hyper)
                    self._iterations.add_(1)
                return self.iterations
            grads_and_vars = listed
        return self._apply_gradients(grads_and_vars)

    def _traced_groups(self, items: list[Any]) -> list[list[tuple[Any, Tensor]]] | None:
        """The pairs of a traced step by inner optimizer, each group ready to trace
        (``kerasopt._traced.ready``); None when the eager step must run: a pair that is not
        one, a missing gradient, a variable outside the built list."""
        if not items or not all(type(i) in (tuple, list) and len(i) == 2 for i in items):
            return None
        if any(g is None for g, _ in items) or not _build_traced(self, *[v for _, v in items]):
            return None
        if len(items) != len(self._var_list):
            return None
        groups: list[list[tuple[Any, Tensor]]] = [[] for _ in self._inner_optimizers]
        for grad, var in items:
            index = self._var_to_optimizer.get(var)
            if index is None:
                return None
            groups[index].append((grad, var))
        ready = all(
            _traced.ready(opt, group) for opt, group in zip(self._inner_optimizers, groups) if group
        )
        return groups if ready else None

    # The eager step is bookkeeping (checks, the transaction, locks) around engines that compile
    # themselves: where a traced function reaches it, it runs as it does eagerly (one graph
    # break) instead of being traced in fragments.
    @torch.compiler.disable
    def _apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        # built by a failed trace of this step (`_build_traced`), no step since: a failure here
        # leaves the optimizer unbuilt, as a failed first eager call does
        traced, self._built_while_tracing = self._built_while_tracing, None
        if traced is not None and traced == (id(self._iterations), self._iterations._version):
            try:
                return self._apply_gradients_items(grads_and_vars)
            except BaseException:
                self._unbuild()
                raise
        return self._apply_gradients_items(grads_and_vars)

    def _apply_gradients_items(self, grads_and_vars: Iterable[tuple[Any, Tensor]]) -> Tensor:
        items = read_pairs(grads_and_vars)
        for position, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"`grads_and_vars` item {position} must be a (gradient, variable) pair; got {item!r}."
                )
        if not items:
            return self.iterations
        return self.apply([g for g, _ in items], [v for _, v in items])

    def minimize(
        self,
        loss: Any,
        var_list: Any,
        grad_loss: Tensor | None = None,
        name: str | None = None,
        tape: Any = None,
    ) -> Tensor:
        """Computes the gradients of ``loss`` (scaled by ``loss_scale_factor``, which each inner
        optimizer divides out) for ``var_list`` and applies them (``Optimizer.minimize``).

        Returns:
            The MultiOptimizer's ``iterations`` after the update.
        """
        pairs = _gradients.compute_gradients(
            loss, var_list, grad_loss, tape, self._flatten_var_list, self.loss_scale_factor
        )
        return self.apply_gradients(pairs)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """``loss * loss_scale_factor`` (identity when it is None)."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    # ------------------------------------------------------------------------------------------
    # state
    @locked
    def state_dict(self) -> dict[str, Tensor]:
        """Own ``iterations`` plus each inner optimizer's state under ``optimizer_<i>/``."""
        return {"iterations": self._iterations.detach().clone(), **self._inner_state()}

    @locked
    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        """Restores ``state_dict()`` output into every inner optimizer, all or nothing.

        Raises:
            ValueError: a key, shape or dtype that does not fit (the message names the key).
        """
        if not isinstance(state_dict, dict) or "iterations" not in state_dict:
            raise StateError("A MultiOptimizer state dict needs an 'iterations' key.")
        expect("iterations", state_dict["iterations"], (), torch.int64)
        if int(state_dict["iterations"]) < 0:
            raise StateError("State key 'iterations' is negative.")
        parts, own = self._split_state(state_dict)
        for key in own:
            if key != "iterations":
                raise StateError(f"Unknown state key {key!r} for MultiOptimizer {self._name!r}.")
        self._load_inner_state(parts, strict)
        self.iterations = int(state_dict["iterations"])

    @locked
    def set_weights(self, weights: Sequence[Any]) -> None:
        """Assigns ``weights`` in ``variables()`` order, split among the inner optimizers.

        Raises:
            ValueError: not built yet, or a count or shape mismatch (nothing is assigned then).
        """
        if not self._built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not yet been built. "
                "Please call `optimizer.build(trainable_variables)` to create the optimizer "
                "weights before calling `set_weights()`."
            )
        # the base optimizer's count and shape checks (its messages name this optimizer)
        values = _state.checked_weights(self._name, self.variables(), weights)
        self.iterations = int(values[0])
        self._dummy_learning_rate.copy_(values[1].to(torch.float32))
        offset = 2
        for opt in self._inner_optimizers:
            count = len(opt.variables())
            share = values[offset : offset + count]
            if opt.built:
                opt.set_weights(share)
            else:
                opt.iterations = int(share[0])
            offset += count

    # ------------------------------------------------------------------------------------------
    # config
    def get_config(self) -> dict[str, Any]:
        """``{optimizer_map, loss_scale_factor, name}``.

        An ``OptimizerMap`` is serialized; a plain callable map is kept as the object itself
        (``from_config`` accepts it back, but it is not JSON-serializable).
        """
        optimizer_map: Any = self._optimizer_map
        if isinstance(optimizer_map, OptimizerMap):
            optimizer_map = serialize(optimizer_map)
        return {
            "optimizer_map": optimizer_map,
            "loss_scale_factor": self.loss_scale_factor,
            "name": self._name,
        }

    def _describe(self) -> str:
        inner = ", ".join(repr(o) for o in self._inner_optimizers)
        return f"name={self._name!r} optimizers=[{inner}]"


@torch.compiler.assume_constant_result
def _build_traced(multi: MultiOptimizer, *variables: Tensor) -> bool:
    """Builds ``multi`` on ``variables`` if it is not built, eagerly while dynamo traces (its
    result a constant of the trace), before the trace reads the routing."""
    if not multi.built:
        multi.build(list(variables))
        multi._built_while_tracing = (id(multi._iterations), multi._iterations._version)
    return True
