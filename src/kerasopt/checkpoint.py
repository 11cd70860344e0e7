"""``kerasopt.save`` / ``kerasopt.load``: one file with optimizer (and model) state, written atomically.

The file is a ``torch.save`` archive of ``{"optimizer": opt.state_dict(), "model":
model.state_dict()}``: tensors only, loaded with ``torch.load(weights_only=True)``, so loading
never runs code from the file. The write goes to a temporary file in the same folder, is flushed
to disk, then renamed over the target (``os.replace`` is atomic), so a crash mid-save leaves the
previous checkpoint intact. The final file gets the usual ``0o666 & ~umask`` mode, and a
successful save removes the temporaries that killed saves of the same target left behind.

A save is one step boundary's snapshot: the model's and the optimizer's tensors are copied while
the optimizer's step lock is held (so a step running in another thread is either wholly in the
file or not at all), then written. Saving from a background thread is safe; it costs one copy of
the state in memory while the file is written.

Loading verifies every member's CRC32 first (torch's reader ignores it), then checks both
sections completely before it changes either the model or the optimizer.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._state import StateError, expect
from ._sync import hold

try:  # POSIX; elsewhere stale temporaries are told apart by age alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

PathLike = str | os.PathLike[str]

FORMAT = "kerasopt-checkpoint-1"

# A temporary of the target younger than this is never removed, even when it is not locked: it may
# belong to a save that has created it but not locked it yet, or to a platform without ``flock``.
STALE_AFTER_S = 60.0

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, without the window in which ``os.umask`` leaves it at 0 where possible."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:  # Linux >= 4.7
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # os.umask is process-global: set it back at once
        old = os.umask(0o077)
        try:
            return old
        finally:
            os.umask(old)


def _lock(fd: int) -> bool:
    """Takes a non-blocking exclusive ``flock`` on ``fd``; False if another process holds one."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: fall back to the age test
        return True
    return True


def _remove_stale_temporaries(target: Path, keep: str) -> None:
    """Removes ``.{target.name}.XXXXXXXX.tmp`` files left by killed saves of ``target``.

    A live save holds an exclusive ``flock`` on its temporary for as long as it writes (the
    kernel drops it when the process dies, ``kill -9`` included), so a temporary is removed only
    when it is not locked **and** older than ``STALE_AFTER_S`` (which covers the instant between
    ``mkstemp`` and ``flock``, and platforms without ``flock``). The name must match exactly:
    the random part of ``mkstemp`` has no dot, so another target's temporaries never match.
    """
    pattern = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]+\.tmp")
    folder = target.parent
    try:
        names = os.listdir(folder)
    except OSError:
        return
    cutoff = time.time() - STALE_AFTER_S
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = os.path.join(folder, name)
        if os.path.abspath(candidate) == os.path.abspath(keep):
            continue
        try:
            fd = os.open(candidate, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone already, a link, or not ours to open
        try:
            if os.fstat(fd).st_mtime < cutoff and _lock(fd):
                with contextlib.suppress(OSError):
                    os.unlink(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)


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
    with hold(optimizer):  # one step boundary: no step of `optimizer` runs while we copy
        payload: dict[str, Any] = {"format": FORMAT, "optimizer": _copy(optimizer.state_dict())}
        if model is not None:
            payload["model"] = _copy(model.state_dict())
    target = Path(path)
    mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        _lock(fd)  # held until the file is closed: marks the temporary as in use
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; a checkpoint gets what open() would give
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale_temporaries(target, keep=tmp)


def _copy(value: Any) -> Any:
    """``value`` with every tensor in it copied (state dicts hold live tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return type(value)(zip(value.keys(), map(_copy, value.values())))  # type: ignore[call-arg]
    if isinstance(value, (list, tuple)):
        return type(value)(map(_copy, value))
    return value


def _read(path: PathLike) -> Any:
    """The payload of a kerasopt file, after checking every member's CRC32 (all in one open)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            try:
                with zipfile.ZipFile(f) as archive:
                    bad = archive.testzip()
            except (zipfile.BadZipFile, EOFError, ValueError) as e:
                raise StateError(
                    f"{name!r} is not a kerasopt checkpoint that loads safely "
                    f"(not a zip archive: {e})."
                ) from e
            if bad is not None:
                raise StateError(
                    f"Checkpoint {name!r} is corrupt: member {bad!r} fails its CRC32 check."
                )
            f.seek(0)
            try:
                payload = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises UnpicklingError / RuntimeError for foreign data
                raise StateError(
                    f"{name!r} is not a kerasopt checkpoint that loads safely: {e}"
                ) from e
    except OSError as e:
        raise StateError(f"Cannot read checkpoint {name!r}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StateError(f"{name!r} is not a kerasopt checkpoint.")
    return payload


def _check_model_state(name: str, model: torch.nn.Module, state: Any) -> None:
    """Checks ``state`` against ``model.state_dict()`` (keys, shapes, dtypes) without assigning."""
    if not isinstance(state, Mapping):
        raise StateError(f"{name!r}: the model state is a {type(state).__name__}, not a mapping.")
    own = model.state_dict()
    for key in own:
        if key not in state:
            raise StateError(f"{name!r}: model state key {key!r} is missing.")
    for key, value in state.items():
        if key not in own:
            raise StateError(f"{name!r}: unexpected model state key {key!r}.")
        ref = own[key]
        if not isinstance(ref, torch.Tensor):
            continue  # a module's extra state: its own set_extra_state checks it
        subject = f"{name!r}: model state key {key!r}"
        expect(key, value, tuple(ref.shape), ref.dtype, subject, ref.layout)


def load(path: PathLike, optimizer: Any, model: torch.nn.Module | None = None) -> None:
    """Loads a ``save`` file into ``optimizer`` (and ``model``); never unpickles arbitrary objects.

    All or nothing: the archive's CRC32s are verified, the model section is checked against
    ``model.state_dict()`` (every key, no extra key, shapes and dtypes), and the optimizer
    section by the optimizer's own ``load_state_dict``, before anything is assigned; a problem
    raises ``kerasopt.StateError`` (a ``ValueError``) naming the file and the key, and leaves
    both the model and the optimizer as they were.
    """
    name = os.fspath(path)
    payload = _read(path)
    if "optimizer" not in payload:
        raise StateError(f"{name!r} holds no optimizer state.")
    if model is not None:
        if "model" not in payload:
            raise StateError(f"{name!r} holds no model state.")
        _check_model_state(name, model, payload["model"])
    # Every kerasopt optimizer's load_state_dict checks everything, then assigns (all or
    # nothing), so it is the check of the optimizer section: it runs first, while the model is
    # untouched. The model section is checked already, so its copy cannot fail on a key, shape or
    # dtype; should it fail anyway (a hook, a device error), the snapshot (a copy of the
    # optimizer's state, as ``save`` makes) puts the optimizer back. A deep copy of the optimizer
    # to check against would also copy the variables it references.
    with hold(optimizer):  # a load is not interleaved with a step either
        snapshot = _copy(optimizer.state_dict()) if model is not None else None
        optimizer.load_state_dict(payload["optimizer"])
        if model is not None:
            try:
                model.load_state_dict(payload["model"])
            except BaseException:
                optimizer.load_state_dict(snapshot)
                raise
