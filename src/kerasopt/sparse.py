"""Sparse gradients: ``IndexedSlices`` (TF's row-sparse gradient) and torch sparse COO interop.

A sparse gradient of a variable ``var`` says: rows ``indices`` of ``var``'s first dimension receive
``values``. Indices may repeat; before an optimizer's sparse rule runs, duplicates are summed
(TF's ``_deduplicate_indexed_slices``), so every rule sees unique rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class IndexedSlices:
    """A sparse gradient: ``values[k]`` belongs to row ``indices[k]`` of a tensor of ``dense_shape``.

    Args:
        values: tensor of shape ``[n, *dense_shape[1:]]``.
        indices: integer tensor of shape ``[n]`` (rows of the first dimension; may repeat).
        dense_shape: shape of the dense tensor (optional, as in TF).

    Example:
        >>> import torch, kerasopt as ko
        >>> g = ko.IndexedSlices(torch.ones(2, 3), torch.tensor([0, 2]), (4, 3))
        >>> g.to_dense()[:, 0].tolist()
        [1.0, 0.0, 1.0, 0.0]
    """

    values: Tensor
    indices: Tensor
    dense_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.values, Tensor) or not isinstance(self.indices, Tensor):
            raise TypeError("IndexedSlices needs tensors for `values` and `indices`.")
        if self.indices.dtype not in (torch.int32, torch.int64):
            raise TypeError(
                f"IndexedSlices `indices` must be int32 or int64, got {self.indices.dtype}."
            )
        if self.indices.dim() != 1:
            raise ValueError(
                f"IndexedSlices `indices` must be 1-D, got shape {tuple(self.indices.shape)}."
            )
        if self.values.dim() < 1 or self.values.shape[0] != self.indices.shape[0]:
            raise ValueError(
                "IndexedSlices `values` must have one row per index: "
                f"values shape {tuple(self.values.shape)}, indices shape {tuple(self.indices.shape)}."
            )
        if self.dense_shape is not None:
            object.__setattr__(self, "dense_shape", tuple(int(d) for d in self.dense_shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.dense_shape

    def with_values(self, values: Tensor) -> IndexedSlices:
        """The same indices with new values (used by clipping and loss-scale division)."""
        return IndexedSlices(values, self.indices, self.dense_shape)

    def to_dense(self) -> Tensor:
        """The dense tensor (duplicate rows summed)."""
        if self.dense_shape is None:
            raise ValueError("IndexedSlices.to_dense() needs `dense_shape`.")
        out = torch.zeros(self.dense_shape, dtype=self.values.dtype, device=self.values.device)
        return out.index_add_(0, self.indices.long(), self.values)

    def __repr__(self) -> str:
        return (
            f"IndexedSlices(indices={self.indices.tolist()}, values.shape={tuple(self.values.shape)}, "
            f"dense_shape={self.dense_shape})"
        )


def from_torch_sparse(grad: Tensor) -> IndexedSlices | Tensor:
    """Converts a torch sparse COO gradient into ``IndexedSlices`` (row-sparse) when it is one.

    ``nn.Embedding(sparse=True)`` produces a hybrid COO tensor with one sparse dimension: that maps
    onto ``IndexedSlices`` exactly. A COO tensor sparse in more than one dimension has no row form;
    it is returned dense (every optimizer's dense rule then applies).
    """
    if grad.layout != torch.sparse_coo:
        return grad.to_dense()
    if grad.sparse_dim() != 1:
        return grad.to_dense()
    if not grad.is_coalesced():
        # Uncoalesced COO may repeat rows: keep them, they are summed like any duplicate.
        indices = grad._indices()[0]
        values = grad._values()
    else:
        indices = grad.indices()[0]
        values = grad.values()
    return IndexedSlices(values, indices, tuple(grad.shape))


def deduplicate(grad: IndexedSlices) -> IndexedSlices:
    """Sums the value rows of repeated indices (TF: unique + unsorted_segment_sum)."""
    unique, inverse = torch.unique(grad.indices, sorted=True, return_inverse=True)
    if unique.shape[0] == grad.indices.shape[0]:
        order = torch.argsort(grad.indices)
        return IndexedSlices(grad.values[order], grad.indices[order].long(), grad.dense_shape)
    summed = torch.zeros(
        (unique.shape[0], *grad.values.shape[1:]),
        dtype=grad.values.dtype,
        device=grad.values.device,
    )
    summed.index_add_(0, inverse, grad.values)
    return IndexedSlices(summed, unique.long(), grad.dense_shape)


def concat(parts: Sequence[IndexedSlices]) -> IndexedSlices:
    """Concatenates sparse gradients of the same variable (duplicates kept)."""
    return IndexedSlices(
        torch.cat([p.values for p in parts]),
        torch.cat([p.indices for p in parts]),
        parts[0].dense_shape,
    )
