"""Wrappers around optimizers (loss scaling, per-group optimizers)."""

from __future__ import annotations

from typing import Any

WRAPPERS: dict[str, Any] = {}
