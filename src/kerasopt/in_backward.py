"""Optimizer-in-backward for the Keras API: each variable is updated as soon as backward has
accumulated its gradient, and the gradient is freed, so a step never holds all the gradients at
once (peak memory drops by their bytes). The ``kerasopt.optim`` counterpart is torch's own
``torch.distributed.optim._apply_optimizer_in_backward``, which works with ``kerasopt.optim``
classes unchanged.

Like torch's, it gives each variable an optimizer of its own (a copy of the one given): a variable is stepped once per backward, so each copy's ``iterations`` is the step
count, and elementwise and per-tensor rules give the numbers a single optimizer's
``apply_gradients`` over all the variables gives.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .optimizer import Optimizer

__all__ = ["InBackward", "apply_in_backward"]


class InBackward:
    """The per-variable optimizers ``apply_in_backward`` made, and their hooks.

    Change a hyperparameter on each of ``optimizers``; ``remove()`` stops updating in backward
    (the variables' gradients then accumulate in ``.grad`` again).
    """

    def __init__(self, pairs: list[tuple[Tensor, Optimizer]], handles: list[Any]) -> None:
        self._pairs = pairs
        self._handles = handles

    @property
    def optimizers(self) -> list[Optimizer]:
        """One optimizer per variable, in the variables' order."""
        return [opt for _, opt in self._pairs]

    def optimizer_for(self, variable: Tensor) -> Optimizer:
        """The optimizer that updates ``variable``."""
        for var, opt in self._pairs:
            if var is variable:
                return opt
        raise KeyError("this variable is not updated in backward by this handle")

    def remove(self) -> None:
        """Removes the hooks: backward no longer updates the variables."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def apply_in_backward(
    optimizer: Optimizer, variables: Iterable[Tensor] | torch.nn.Module
) -> InBackward:
    """Updates each of ``variables`` during backward, with a copy of ``optimizer`` of its own.

    Args:
        optimizer: a kerasopt optimizer with no state yet; it is copied for each variable
            (hyperparameters, schedule, weight decay, clipping by value or per-variable norm;
            ``implementation="auto"`` runs ``compiled``, whose graph the copies share).
        variables: leaf tensors that require grad, or a module (its parameters).

    Returns:
        An ``InBackward`` handle: the optimizers, and ``remove()``.

    Raises:
        ValueError: ``global_clipnorm`` or ``gradient_accumulation_steps`` (they need every
            gradient at once), an optimizer that already has state, or a variable that is not
            a leaf requiring grad (named by its position).
        TypeError: ``optimizer`` is not a kerasopt optimizer (a wrapper such as
            ``LossScaleOptimizer`` scales the whole loss and cannot be split per variable).

    A variable's update is one transaction, like ``apply_gradients``; a backward that fails
    half-way leaves the variables whose gradients were ready updated, as torch's
    optimizer-in-backward does.

    Example:
        >>> import torch, kerasopt as ko
        >>> model = torch.nn.Linear(3, 1)
        >>> handle = ko.apply_in_backward(ko.optimizers.Adam(0.1), model)
        >>> model(torch.ones(2, 3)).sum().backward()  # updates weight and bias, frees the grads
        >>> model.weight.grad is None, int(handle.optimizers[0].iterations)
        (True, 1)
    """
    if type(optimizer).apply_gradients is not Optimizer.apply_gradients or not isinstance(
        optimizer, Optimizer
    ):
        raise TypeError(
            "apply_in_backward: `optimizer` must be a kerasopt optimizer (not a wrapper). "
            f"Received: {type(optimizer).__name__}"
        )
    if optimizer.global_clipnorm is not None:
        raise ValueError(
            "apply_in_backward: `global_clipnorm` needs every gradient at once; use "
            "`clipnorm` (per variable) or apply_gradients."
        )
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            "apply_in_backward: `gradient_accumulation_steps` needs every gradient at once."
        )
    if optimizer.built or int(optimizer.iterations):
        raise ValueError(
            "apply_in_backward: `optimizer` already has state; pass a new optimizer (it is "
            "copied for each variable)."
        )
    if isinstance(variables, torch.nn.Module):
        variables = variables.parameters()
    variables = list(variables)
    for i, var in enumerate(variables):
        if not isinstance(var, Tensor) or not var.is_leaf or not var.requires_grad:
            raise ValueError(
                f"apply_in_backward: variables[{i}] must be a leaf tensor that requires grad. "
                f"Received: {type(var).__name__}"
            )
    pairs = [(var, _copy(optimizer)) for var in variables]
    handles = [var.register_post_accumulate_grad_hook(_hook(opt)) for var, opt in pairs]
    return InBackward(pairs, handles)


def _copy(optimizer: Optimizer) -> Optimizer:
    """A copy with everything the optimizer was given (kerasopt's own arguments too, which a
    TF config leaves out). ``auto`` becomes ``compiled`` for an elementwise rule: one variable
    at a time is under ``auto``'s compile threshold, and the compiled graph is shared by the
    copies (one compile)."""
    clone = copy.deepcopy(optimizer)
    if clone.implementation == "auto" and clone.elementwise:
        clone.implementation = "compiled"
    return clone


def _hook(opt: Optimizer) -> Any:
    def step(var: Tensor) -> None:
        grad = var.grad
        if grad is None:
            return
        try:
            opt.apply_gradients([(grad, var)])
        finally:
            var.grad = None

    return step
