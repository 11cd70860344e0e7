"""Param groups of ``kerasopt.optim``: what the adapter knows of a Keras class and of each group.

``_Spec`` is derived once per Keras class (the group keys with their Keras defaults, the keys set
on the inner optimizer in place, whether ``betas`` aliases ``beta_1`` / ``beta_2``);
``_ParamGroup`` keeps ``betas`` and ``beta_1`` / ``beta_2`` equal; ``_GroupState`` is one group's
inner Keras optimizer and the values it was last given; ``_same`` tells whether a group value
changed. Syncing a group's values onto its inner optimizer is ``KerasOptimizer._sync``
(``kerasopt.optim._adapter``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .._features import FEATURES
from .._hyper import Hyper, Param
from ..optimizer import Optimizer as KerasOptimizerBase

_MISSING: Any = object()

# The base-class features as group keys, with their group defaults (kerasopt._features: one
# table). `implementation=None` means Keras's own choice ("auto", or "compiled" with
# `jit_compile=True`).
_FEATURES: dict[str, Any] = {f.name: f.group_default for f in FEATURES}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, Tensor)


def _same(a: Any, b: Any, live: bool) -> bool:
    """Whether a group value is unchanged since it was applied.

    A tensor value of a live key may have been updated in place (torch's schedulers ``fill_``
    tensor learning rates), so it always counts as changed; it is cheap to set again.
    """
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b and not live
    if a is b:
        return True
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y, live) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # values without a plain truth value: treat as changed
        return False


@dataclass(frozen=True)
class _Spec:
    """What the adapter knows about one Keras class, derived from its signature and declarations."""

    keras: type[KerasOptimizerBase]
    defaults: dict[str, Any]  # group key -> Keras default (`lr` for `learning_rate`)
    live: frozenset[str]  # keys set on the inner optimizer in place (hyperparameters, Params)
    betas: bool  # has beta_1 and beta_2: `betas` is kept as their torch-style alias

    @classmethod
    def of(
        cls, keras: type[KerasOptimizerBase], keywords: Mapping[str, Any] | None = None
    ) -> _Spec:
        """``keywords``: arguments the Keras class takes through ``**kwargs`` (with defaults);
        by default the legacy ``decay`` where the class reports one in its config."""
        args: dict[str, Any] = {}
        for name, p in inspect.signature(keras.__init__).parameters.items():
            if name in ("self", "name") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            args[name] = p.default
        defaults: dict[str, Any] = {"lr": args.pop("learning_rate")}
        betas = "beta_1" in args and "beta_2" in args
        for name, value in args.items():
            defaults[name] = value
            if name == "beta_2" and betas:
                defaults["betas"] = (args["beta_1"], args["beta_2"])
        for name, value in _FEATURES.items():
            defaults.setdefault(name, value)
        if keywords is None:
            config = keras().get_config()
            keywords = {"decay": config["decay"]} if "decay" in config else {}
        for name, value in keywords.items():
            defaults.setdefault(name, value)
        live = {"lr"}
        for name in defaults:
            # Keyword-only arguments may be read at construction only (Nadam's schedule_decay):
            # a change rebuilds the inner optimizer.
            if name not in keywords and isinstance(getattr(keras, name, None), (Hyper, Param)):
                live.add(name)
        return cls(keras, defaults, frozenset(live), betas)

    def keras_kwargs(self, group: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, default in self.defaults.items():
            value = group.get(key, default)
            if key == "betas" or (key == "implementation" and value is None):
                continue
            out["learning_rate" if key == "lr" else key] = value
        return out

    def describe(self) -> str:
        keys = ", ".join(f"``{k}={v!r}``" for k, v in self.defaults.items())
        return f"Param-group keys and their defaults (Keras's): {keys}."


class _ParamGroup(dict[str, Any]):
    """A param group that keeps ``betas`` and ``beta_1`` / ``beta_2`` equal when either is written
    (``OneCycleLR`` / ``CyclicLR`` write ``betas``; Keras code writes ``beta_1``)."""

    def __init__(self, data: Mapping[str, Any], betas: bool) -> None:
        super().__init__(data)
        self._betas = betas

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if not getattr(self, "_betas", False):  # unpickling sets items before attributes
            return
        if key == "betas" and isinstance(value, (tuple, list)) and len(value) == 2:
            super().__setitem__("beta_1", value[0])
            super().__setitem__("beta_2", value[1])
        elif key in ("beta_1", "beta_2") and "betas" in self:
            super().__setitem__("betas", (self.get("beta_1"), self.get("beta_2")))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


@dataclass(eq=False)
class _GroupState:
    """The inner Keras optimizer of one param group, and what the adapter knows of its state."""

    group: dict[str, Any]
    inner: KerasOptimizerBase
    synced: dict[str, Any]  # the group values the inner optimizer was last given
    synced_values: tuple[Any, ...] = ()  # the same, as the group's values in key order
    synced_types: tuple[type, ...] | None = None  # their types; None when one is a tensor
    lr_alias: Any = _MISSING  # last `learning_rate` seen in the group (an alias of `lr`)
    built: dict[int, Tensor] = field(default_factory=dict)  # id -> param, in build order
    batches: list[Any] = field(default_factory=list)  # the `build` calls, to replay on rebuild
    step: Tensor | None = None  # the inner optimizer's (raw) iteration counter
    weights: dict[str, Tensor] = field(default_factory=dict)  # optimizer-level weights
    layouts: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # id -> name -> tensor
