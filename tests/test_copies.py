"""``copy_all``: the flat engines' copies of many small tensors, split over two threads."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from kerasopt import _copies
from kerasopt._copies import SPLIT_MIN_TENSORS, copy_all


def _lists(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = [torch.randn(3 + i % 7, 2, generator=g) for i in range(n)]
    buf = torch.zeros(sum(t.numel() for t in src))
    dst = [w.view(t.shape) for w, t in zip(buf.split([t.numel() for t in src]), src)]
    return dst, src, buf


def _threads_used(monkeypatch):
    seen = []
    real = _copies._copy

    def spy(dst, src):
        seen.append((threading.current_thread().name, len(dst)))
        real(dst, src)

    monkeypatch.setattr(_copies, "_copy", spy)
    return seen


def test_a_long_list_is_copied_exactly_on_two_threads(monkeypatch):
    seen = _threads_used(monkeypatch)
    dst, src, _ = _lists(SPLIT_MIN_TENSORS + 3)
    with torch.enable_grad():
        copy_all(dst, src)
    assert all(torch.equal(d, s) for d, s in zip(dst, src))
    assert sorted(n for _, n in seen) == [
        (SPLIT_MIN_TENSORS + 3) // 2,
        (SPLIT_MIN_TENSORS + 4) // 2,
    ]
    assert {name.startswith("kerasopt-copy") for name, _ in seen} == {True, False}


class _CountCopies(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.copied = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._foreach_copy_.default:
            self.copied += len(args[0])
        return func(*args, **(kwargs or {}))


class _Nothing(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("why", ["short", "one thread", "dispatch mode", "function mode"])
def test_the_callers_thread_copies_a_short_list_or_under_one_thread_or_a_mode(why, monkeypatch):
    """A mode is per thread: under one, the helper's half would run outside it (here the
    dispatch mode counts every copy)."""
    seen = _threads_used(monkeypatch)
    dst, src, _ = _lists(SPLIT_MIN_TENSORS - 1 if why == "short" else SPLIT_MIN_TENSORS * 2)
    threads = torch.get_num_threads()
    if why == "one thread":
        torch.set_num_threads(1)
    mode = {"dispatch mode": _CountCopies(), "function mode": _Nothing()}.get(why)
    try:
        with mode if mode is not None else contextlib.nullcontext():
            copy_all(dst, src)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(d, s) for d, s in zip(dst, src))
    assert seen == []
    if why == "dispatch mode":
        assert mode.copied == len(dst)


def test_a_failing_half_raises_after_both_halves_are_done(monkeypatch):
    dst, src, _ = _lists(SPLIT_MIN_TENSORS * 2)
    done = []
    real = _copies._copy

    def copy(d, s):
        if threading.current_thread().name.startswith("kerasopt-copy"):
            raise RuntimeError("helper failed")
        real(d, s)
        done.append(len(d))

    monkeypatch.setattr(_copies, "_copy", copy)
    with pytest.raises(RuntimeError, match="helper failed"):
        copy_all(dst, src)
    assert done == [SPLIT_MIN_TENSORS]  # (the caller's half ran to its end first)


def _child(queue):
    dst, src, _ = _lists(SPLIT_MIN_TENSORS * 2, seed=5)
    copy_all(dst, src)
    queue.put(all(torch.equal(d, s) for d, s in zip(dst, src)))


def test_a_forked_process_gets_a_helper_of_its_own():
    """A child forked after the parent's helper started has the pool object but not its thread:
    a copy there must not wait forever on a thread that does not exist."""
    dst, src, _ = _lists(SPLIT_MIN_TENSORS * 2)
    copy_all(dst, src)  # (the parent's helper thread is running)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


def test_an_interrupt_while_waiting_is_raised_once_the_helper_is_done(monkeypatch):
    """``KeyboardInterrupt`` during the wait for the helper: ``copy_all`` waits on, then
    raises it; the caller never goes on while the helper still writes."""
    import concurrent.futures
    import time

    dst, src, _ = _lists(SPLIT_MIN_TENSORS * 2, seed=9)
    real_copy = _copies._copy

    def slow(d, s):
        if threading.current_thread().name.startswith("kerasopt-copy"):
            time.sleep(0.3)
        real_copy(d, s)

    real_result = concurrent.futures.Future.result
    calls = []

    def result(self, timeout=None):
        calls.append(self.done())
        if len(calls) == 1:
            raise KeyboardInterrupt  # (as a signal would, mid-wait)
        return real_result(self, timeout)

    monkeypatch.setattr(_copies, "_copy", slow)
    monkeypatch.setattr(concurrent.futures.Future, "result", result)
    with pytest.raises(KeyboardInterrupt):
        copy_all(dst, src)
    assert calls[0] is False  # (interrupted while the helper still copied)
    assert all(torch.equal(d, s) for d, s in zip(dst, src))
