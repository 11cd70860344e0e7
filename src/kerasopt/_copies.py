"""``copy_all``: one ``torch._foreach_copy_`` of many small CPU tensors, on two threads; and
``rehome``, which moves a group's tensors into one buffer without holding the group twice.

The flat engines copy a group's gradients (and the packed engine its variables, both ways)
between the caller's tensors and a buffer's windows. For thousands of small tensors such a copy is
per-tensor overhead, each tensor too small for torch's intra-op threads, and runs on one core:
2.9 ms for 2,000 tensors of 1-4K elements here. torch releases the GIL inside the copy, so half
of the list copied by a helper thread while this thread copies the other half takes 1.6 ms.

The copies are exact, so the numbers are the same; both halves have finished before ``copy_all``
returns or raises. It splits only on the CPU, for at least ``SPLIT_MIN_TENSORS`` tensors, and
only while torch may use more than one thread (``torch.set_num_threads(1)`` keeps every copy on
the caller's thread), and never under a torch function or dispatch mode (a mode is per thread:
the helper's half would run outside it).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor
from torch.utils import _python_dispatch

#: the fewest tensors a copy is split for: below it, handing half to the helper costs more than
#: it saves (about 30 us a hand-off)
SPLIT_MIN_TENSORS = 256

#: bytes ``rehome`` moves between two ``release`` calls (its peak above the buffer)
RELEASE_BYTES = 64 << 20

_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the pool)


def _pool() -> ThreadPoolExecutor:
    """The helper thread's pool, made on first use in each process (a forked child has the
    parent's pool object but not its thread)."""
    global _POOL
    pool = _POOL
    if pool is None or pool[0] != os.getpid():
        with _LOCK:
            pool = _POOL
            if pool is None or pool[0] != os.getpid():
                pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="kerasopt-copy"))
                _POOL = pool
    return pool[1]


def _copy(dst: Sequence[Tensor], src: Sequence[Tensor]) -> None:
    with torch.no_grad():  # (grad mode is per thread)
        torch._foreach_copy_(list(dst), list(src))


def copy_all(dst: Sequence[Tensor], src: Sequence[Tensor]) -> None:
    """``torch._foreach_copy_(dst, src)``, long lists of CPU tensors split between this thread
    and a helper thread."""
    n = len(dst)
    if (
        n < SPLIT_MIN_TENSORS
        or torch.get_num_threads() < 2
        or dst[0].device.type != "cpu"
        or torch.compiler.is_compiling()
        or torch._C._len_torch_function_stack() > 0
        or _python_dispatch._get_current_dispatch_mode() is not None
    ):
        torch._foreach_copy_(list(dst), list(src))
        return
    half = n // 2
    helper: Future[None] = _pool().submit(_copy, dst[:half], src[:half])
    try:
        _copy(dst[half:], src[half:])
    finally:
        _join(helper)  # (both halves are done, whichever raised)


def _join(helper: Future[None]) -> None:
    """Waits for the helper's half, even through an interrupt (``KeyboardInterrupt`` while
    waiting, re-raised once the helper is done: the caller must not go on while the helper
    still writes); raises the helper's own error."""
    interrupted: BaseException | None = None
    while True:
        try:
            helper.result()
            break
        except BaseException as e:
            if helper.done() and e is not interrupted:
                raise  # the helper's error
            interrupted = e
    if interrupted is not None:
        raise interrupted


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None elsewhere (macOS, Windows, musl: freed memory goes back
    as those allocators do)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError, TypeError):
        return None


_TRIM = _malloc_trim()


def release() -> None:
    """Hands the memory of tensors just freed back to the system (glibc's ``malloc_trim``).

    glibc keeps freed blocks below its mmap threshold (which grows to 32 MB as a process frees
    large blocks) for reuse, so a model's worth of tensors freed at once stays resident: after
    ``rehome`` the process would hold the group twice. A no-op elsewhere.
    """
    if _TRIM is not None:
        _TRIM(0)


def rehome(tensors: Sequence[Tensor], sizes: list[int]) -> Tensor:
    """One buffer holding ``tensors``' values, each tensor moved to its window of it: the same
    object, and (``.data =``, not ``Tensor.set_``, which would give a leaf a new gradient
    accumulator and orphan the hooks DDP and others registered on it) the same autograd node.

    One tensor at a time, its old storage freed as it moves (the caller has checked that
    nothing else holds it) and, every ``RELEASE_BYTES``, handed back (``release``): the
    buffer's pages become resident as they are written, so the peak is the group plus
    ``RELEASE_BYTES``, not twice the group.
    """
    first = tensors[0]
    buf = torch.empty(sum(sizes), dtype=first.dtype, device=first.device)
    cpu, moved = first.device.type == "cpu", 0
    for t, window in zip(tensors, buf.split(sizes)):
        window.copy_(t.detach().reshape(-1))
        t.data = window.view(t.shape)
        moved += window.numel() * window.element_size()
        if cpu and moved >= RELEASE_BYTES:
            release()
            moved = 0
    if cpu:
        release()
    return buf
