"""``kerasopt.save`` / ``kerasopt.load``: one file with optimizer (and model) state, written atomically.

The file is a ``torch.save`` archive of ``{"optimizer": opt.state_dict(), "model":
model.state_dict()}``: tensors only, loaded with ``torch.load(weights_only=True)``, so loading
never runs code from the file. The write goes to a temporary file in the same folder, is flushed
to disk, then renamed over the target (``os.replace`` is atomic), so a crash mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ._state import StateError

PathLike = str | os.PathLike[str]


def save(path: PathLike, optimizer: Any, model: torch.nn.Module | None = None) -> None:
    """Saves ``optimizer`` (and ``model``) state to ``path`` atomically.

    Example:
        >>> import os, tempfile, torch, kerasopt as ko
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = ko.optimizers.Adam()
        >>> _ = opt.minimize(lambda: model(torch.ones(1, 2)).sum(), model)
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> ko.save(path, opt, model)
        >>> opt2, model2 = ko.optimizers.Adam(), torch.nn.Linear(2, 1)
        >>> ko.load(path, opt2, model2)
        >>> int(opt2.iterations), torch.equal(model2.weight, model.weight)
        (1, True)
    """
    payload: dict[str, Any] = {
        "format": "kerasopt-checkpoint-1",
        "optimizer": optimizer.state_dict(),
    }
    if model is not None:
        payload["model"] = model.state_dict()
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load(path: PathLike, optimizer: Any, model: torch.nn.Module | None = None) -> None:
    """Loads a ``save`` file into ``optimizer`` (and ``model``); never unpickles arbitrary objects.

    The model's state is loaded (strictly) before the optimizer's so that both are checked before
    the optimizer changes; a mismatch raises ``ValueError`` naming the key.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for foreign content
        raise StateError(
            f"{os.fspath(path)!r} is not a kerasopt checkpoint that loads safely: {e}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != "kerasopt-checkpoint-1":
        raise StateError(f"{os.fspath(path)!r} is not a kerasopt checkpoint.")
    if model is not None:
        if "model" not in payload:
            raise StateError(f"{os.fspath(path)!r} holds no model state.")
        model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
