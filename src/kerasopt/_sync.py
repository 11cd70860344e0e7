"""Step boundaries: the lock every optimizer (and wrapper, and ``kerasopt.optim`` optimizer)
holds across one step, so that steps of one optimizer never interleave and a state read
(``state_dict``, ``get_weights``, ``kerasopt.save``) sees one step boundary.

A step is plan (may raise, changes nothing) then commit (writes); both run under the optimizer's
``StepLock``. A wrapper's step holds its own lock and, through ``Transaction``, the lock of every
inner optimizer it plans. Locks are re-entrant, so a step may read its own state (a constraint
calling ``get_weights``), and they are acquired in one order (by ``id``) when a caller holds
several at once (``hold``), so two savers never deadlock.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["StepLock", "hold", "lock_of", "locked"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class StepLock:
    """A re-entrant lock that copies and pickles as a fresh, unlocked one.

    ``copy.deepcopy(optimizer)`` and ``pickle`` copy an optimizer's state, not who is stepping it.

    Example:
        >>> import copy
        >>> lock = StepLock()
        >>> with lock, lock:  # re-entrant
        ...     twin = copy.deepcopy(lock)
        >>> twin is not lock and twin.acquire(blocking=False)
        True
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(self, blocking: bool = True) -> bool:
        return self._lock.acquire(blocking)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> StepLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepLock, ())


def lock_of(obj: Any) -> StepLock | None:
    """``obj``'s step lock (kerasopt optimizers, wrappers and ``kerasopt.optim`` optimizers have
    one), or None for an object that is not a kerasopt optimizer."""
    lock = getattr(obj, "_step_lock", None)
    return lock if isinstance(lock, StepLock) else None


@contextlib.contextmanager
def hold(*objects: Any) -> Iterator[None]:
    """Holds the step locks of ``objects`` (those that have one), taken in ``id`` order.

    Example:
        >>> import kerasopt as ko
        >>> a, b = ko.optimizers.SGD(), ko.optimizers.Adam()
        >>> with hold(a, b, "not an optimizer"):
        ...     pass
    """
    locks = {id(lock): lock for lock in map(lock_of, objects) if lock is not None}
    with contextlib.ExitStack() as stack:
        for key in sorted(locks):
            stack.enter_context(locks[key])
        yield


def locked(method: Callable[Concatenate[Any, _P], _R]) -> Callable[Concatenate[Any, _P], _R]:
    """A method that runs under its object's step lock (a state read or write that must not see
    half a step). An object without one yet (a subclass that skipped ``super().__init__()``)
    runs the method as is, which then raises its own error."""

    @functools.wraps(method)
    def under_lock(self: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        lock = lock_of(self)
        if lock is None:
            return method(self, *args, **kwargs)
        with lock:
            return method(self, *args, **kwargs)

    return under_lock
