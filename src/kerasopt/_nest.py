"""Nested structures for ``GradientTape.gradient``: targets, sources and output gradients.

TensorFlow's tape takes and returns nests of lists, tuples and mappings. ``_leaves`` flattens
one (with each leaf's path, for messages), ``_leaves_along`` walks output gradients along a
target, ``_expand_modules`` replaces an ``nn.Module`` by its trainable parameters, and ``_pack``
rebuilds a nest around new leaves. Pure functions, used by ``kerasopt.tape``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch


def _leaves(structure: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yields `(path, leaf)` for a nest of lists, tuples and mappings, in a stable order."""
    if isinstance(structure, (list, tuple)):
        for index, item in enumerate(structure):
            yield from _leaves(item, f"{path}[{index}]")
    elif isinstance(structure, Mapping):
        for key, item in structure.items():
            yield from _leaves(item, f"{path}[{key!r}]")
    else:
        yield path, structure


def _leaves_along(structure: Any, other: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yields `(path, leaf, part)`: the part of `other` found at each leaf of `structure`.

    `other` (output gradients) must nest like `structure` (the target) down to its leaves,
    where it may hold anything (a tensor, a nested list of numbers, None). `other=None` stands
    for None at every leaf.
    """
    if other is None:
        for leaf_path, leaf in _leaves(structure, path):
            yield leaf_path, leaf, None
    elif isinstance(structure, (list, tuple)):
        if not isinstance(other, (list, tuple)) or len(other) != len(structure):
            raise ValueError(
                f"gradient(): output_gradients{path} must be a sequence of {len(structure)} "
                f"entries like target{path}, got {type(other).__name__}."
            )
        for index, (item, part) in enumerate(zip(structure, other)):
            yield from _leaves_along(item, part, f"{path}[{index}]")
    elif isinstance(structure, Mapping):
        if not isinstance(other, Mapping) or set(other) != set(structure):
            raise ValueError(
                f"gradient(): output_gradients{path} must be a mapping with the keys of "
                f"target{path}."
            )
        for key, item in structure.items():
            yield from _leaves_along(item, other[key], f"{path}[{key!r}]")
    else:
        yield path, structure, other


def _expand_modules(structure: Any) -> Any:
    """Replaces each `nn.Module` in a nest by the list of its trainable parameters (the module's
    `trainable_weights`, as `var_list` takes it), so its gradients come back as that list."""
    if isinstance(structure, torch.nn.Module):
        return [p for p in structure.parameters() if p.requires_grad]
    if isinstance(structure, list):
        return [_expand_modules(item) for item in structure]
    if isinstance(structure, tuple) and not hasattr(type(structure), "_fields"):
        return tuple(_expand_modules(item) for item in structure)
    if isinstance(structure, dict) and type(structure) is dict:
        return {key: _expand_modules(item) for key, item in structure.items()}
    return structure


def _pack(structure: Any, values: Iterator[Any]) -> Any:
    """Rebuilds `structure`'s nesting with its leaves replaced, in `_leaves` order, by `values`."""
    if isinstance(structure, (list, tuple)):
        items = [_pack(item, values) for item in structure]
        if isinstance(structure, list):
            return items
        if hasattr(type(structure), "_fields"):  # namedtuple
            return type(structure)(*items)
        return type(structure)(items)
    if isinstance(structure, Mapping):
        packed = {key: _pack(item, values) for key, item in structure.items()}
        if type(structure) is dict:
            return packed
        try:
            return cast(Any, type(structure))(packed)
        except TypeError:  # a mapping type that cannot be built from a dict (defaultdict)
            return packed
    return next(values)
