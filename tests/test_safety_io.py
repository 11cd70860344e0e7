"""Safety of checkpoint I/O and of the compiled engine's process-wide state.

Checkpoints: ``load`` checks both sections (and every CRC32) before it changes anything; ``save``
gives the usual file mode and removes the temporaries of killed saves. Compiled engine: no
per-step growth of the context, and only a failure to compile falls back to foreach.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile

import pytest
import torch
import torch._dynamo.utils
import torch._inductor.exc
from torch.fx.experimental import _config as fx_config

import kerasopt as ko
from kerasopt import _compiled
from kerasopt._state import StateError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- checkpoints -------------------------------------------------------------------------------
def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = ko.optimizers.Adam(0.01)
    for _ in range(2):
        opt.minimize(lambda: model(torch.randn(5, 4)).square().sum(), model)
    return model, opt


def _fingerprint(opt, model):
    """Every byte of the model's and the optimizer's state, by key."""

    def raw(t):
        return (
            str(t.dtype),
            tuple(t.shape),
            t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes(),
        )

    out = {f"model/{k}": raw(v) for k, v in model.state_dict().items()}
    out.update({f"opt/{k}": raw(v) for k, v in opt.state_dict().items()})
    return out


def _write(path, optimizer_state, model_state):
    torch.save(
        {"format": "kerasopt-checkpoint-1", "optimizer": optimizer_state, "model": model_state},
        path,
    )


def test_bad_optimizer_section_leaves_the_model_unchanged(tmp_path):
    src_model, src_opt = _trained(1)
    state = src_opt.state_dict()
    state["slot/bogus/m"] = torch.zeros(3)
    state["hyper/no_such_hyper"] = torch.tensor(1.0, dtype=torch.float64)
    _write(tmp_path / "ckpt.pt", state, src_model.state_dict())
    model, opt = _trained(2)
    before = _fingerprint(opt, model)
    with pytest.raises(StateError, match="no_such_hyper"):
        ko.load(tmp_path / "ckpt.pt", opt, model)
    assert _fingerprint(opt, model) == before


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("1.bias"), "'1.bias' is missing"),
        (
            lambda s: s.__setitem__("2.weight", torch.zeros(2, 3)),
            "unexpected model state key '2.weight'",
        ),
        (lambda s: s.__setitem__("0.weight", torch.zeros(4, 3)), r"'0.weight' has shape \(4, 3\)"),
        (
            lambda s: s.__setitem__("0.bias", torch.zeros(3, dtype=torch.float64)),
            "'0.bias' has dtype",
        ),
        (
            lambda s: s.__setitem__("0.bias", [1.0, 2.0, 3.0]),
            "'0.bias' must hold a tensor; got list",
        ),
    ],
    ids=["missing", "unexpected", "shape", "dtype", "not-a-tensor"],
)
def test_bad_model_section_changes_nothing_and_is_a_value_error(tmp_path, edit, match):
    src_model, src_opt = _trained(1)
    model_state = dict(src_model.state_dict())
    edit(model_state)
    _write(tmp_path / "ckpt.pt", src_opt.state_dict(), model_state)
    model, opt = _trained(2)
    before = _fingerprint(opt, model)
    with pytest.raises(StateError, match=match) as info:
        ko.load(tmp_path / "ckpt.pt", opt, model)
    assert isinstance(info.value, ValueError) and "ckpt.pt" in str(info.value)
    assert _fingerprint(opt, model) == before


def test_failure_after_the_optimizer_loaded_restores_it(tmp_path, monkeypatch):
    src_model, src_opt = _trained(1)
    ko.save(tmp_path / "ckpt.pt", src_opt, src_model)
    model, opt = _trained(2)
    before = _fingerprint(opt, model)

    def fails(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "load_state_dict", fails)
    with pytest.raises(RuntimeError, match="device lost"):
        ko.load(tmp_path / "ckpt.pt", opt, model)
    assert _fingerprint(opt, model) == before
    monkeypatch.undo()
    ko.load(tmp_path / "ckpt.pt", opt, model)
    assert _fingerprint(opt, model) == _fingerprint(src_opt, src_model)


def _data_start(path, info):
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    assert header[:4] == b"PK\x03\x04"
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def test_one_flipped_byte_in_tensor_data_is_detected(tmp_path):
    src_model, src_opt = _trained(1)
    path = tmp_path / "ckpt.pt"
    ko.save(path, src_opt, src_model)
    with zipfile.ZipFile(path) as archive:
        data = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 8]
        member = max(data, key=lambda i: i.file_size)
    assert member.compress_type == zipfile.ZIP_STORED
    offset = _data_start(path, member) + 5
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    model, opt = _trained(2)
    before = _fingerprint(opt, model)
    with pytest.raises(StateError, match="corrupt") as info:
        ko.load(path, opt, model)
    assert member.filename in str(info.value) and "ckpt.pt" in str(info.value)
    assert _fingerprint(opt, model) == before


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_saved_file_mode_follows_the_umask(tmp_path, umask, mode):
    model, opt = _trained()
    old = os.umask(umask)
    try:
        ko.save(tmp_path / "ckpt.pt", opt, model)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "ckpt.pt").st_mode & 0o777 == mode
    assert os.umask(old) == old  # the save left the umask as it was


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, torch, kerasopt as ko

    class Big(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("blob", torch.ones(50_000_000))  # 200 MB

    print("saving", flush=True)
    ko.save(sys.argv[1], ko.optimizers.SGD(0.1), Big())
    print("finished", flush=True)
    """
)


def _temporaries(folder, name):
    return sorted(n for n in os.listdir(folder) if n.startswith(f".{name}.") and n.endswith(".tmp"))


def test_save_removes_the_temporary_of_a_save_killed_mid_write(tmp_path):
    path = tmp_path / "ckpt.pt"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            temps = _temporaries(tmp_path, "ckpt.pt")
            if temps and os.path.getsize(tmp_path / temps[0]) > 0:
                break
            assert child.poll() is None, "the child ended before it wrote"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert not path.exists()
    (orphan,) = _temporaries(tmp_path, "ckpt.pt")
    # The orphan is older than the grace period; these three must survive the clean-up:
    old = time.time() - 600
    os.utime(tmp_path / orphan, (old, old))
    young = tmp_path / ".ckpt.pt.young123.tmp"  # unlocked but recent: maybe a save starting
    locked = tmp_path / ".ckpt.pt.locked45.tmp"  # old but locked: a live (slow) save
    other = tmp_path / ".ckpt.pt.x.abcd1234.tmp"  # a temporary of the target "ckpt.pt.x"
    for p in (young, locked, other):
        p.write_bytes(b"partial")
    for p in (locked, other):
        os.utime(p, (old, old))
    holder = os.open(locked, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        model, opt = _trained()
        ko.save(path, opt, model)
    finally:
        os.close(holder)
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.pt", young.name, locked.name, other.name])
    model2, opt2 = _trained(3)
    ko.load(path, opt2, model2)
    assert _fingerprint(opt2, model2) == _fingerprint(opt, model)


# -- compiled engine ---------------------------------------------------------------------------
SHAPES = [(5,), (3, 4), (7,), (2, 2)]


def _vars(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _grads(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


@contextlib.contextmanager
def _no_fallback_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "error", message=".*compiled engine is unavailable", category=Warning
        )
        yield


def test_compiled_steps_do_not_grow_the_context():
    variables, grads = _vars(SHAPES, 1), _grads(SHAPES, 2)
    opt = ko.optimizers.Adam(0.01, jit_compile=True)
    for _ in range(3):  # compile and warm up
        opt.apply_gradients(zip(grads, variables))

    def growth(steps):
        before = len(contextvars.copy_context())
        for _ in range(steps):
            opt.apply_gradients(zip(grads, variables))
        return len(contextvars.copy_context()) - before

    assert growth(20) == 0 and growth(60) == 0


def test_no_duck_shape_patch_is_still_in_effect_when_compiling():
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # Equal sizes first, then other equalities: without the patch, duck sizing would recompile.
    a = _vars([(6,)] * 3 + [(9,)], 3)
    b = _vars([(4,), (11,), (4,), (8,)], 4)
    opt = ko.optimizers.Adamax(0.01, jit_compile=True)
    with _no_fallback_warning():
        opt.apply_gradients(zip(_grads([(6,)] * 3 + [(9,)], 5), a))
        after_first = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        opt.apply_gradients(zip(_grads([(4,), (11,), (4,), (8,)], 6), b))
    assert int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) == after_first
    assert after_first >= graphs
    assert fx_config.use_duck_shape  # the patch is scoped: the global default is untouched


FLAG = torch.zeros((), dtype=torch.int64)


@torch.library.custom_op("kerasopt_test::checked_grad", mutates_args=())
def _checked_grad(grad: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    if int(flag):
        raise ValueError("kerasopt test: a runtime failure inside the compiled graph")
    return grad.clone()


@_checked_grad.register_fake
def _(grad, flag):
    return torch.empty_like(grad)


class _FlakyAdam(ko.optimizers.Adam):
    """Adam whose compiled graph raises at run time while ``FLAG`` is set (an opaque custom op)."""

    def update(self, var, grad, *, c, **slots):
        ko.optimizers.Adam.update(self, var, _checked_grad(grad, FLAG), c=c, **slots)


def _flaky_keys():
    return {k for k in _compiled._CACHE if k[1] is _FlakyAdam}


def test_runtime_error_on_a_later_call_propagates_and_marks_nothing():
    variables, grads = _vars(SHAPES, 7), _grads(SHAPES, 8)
    opt = _FlakyAdam(0.01, jit_compile=True)
    FLAG.fill_(0)
    with _no_fallback_warning():
        opt.apply_gradients(zip(grads, variables))  # compiles
        (key,) = _flaky_keys()
        graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        FLAG.fill_(1)
        try:
            with pytest.raises(ValueError, match="runtime failure inside the compiled graph"):
                opt.apply_gradients(zip(grads, variables))
        finally:
            FLAG.fill_(0)
        assert key not in _compiled._BROKEN
        # A later optimizer of the class still runs compiled, on the same graph.
        others = _vars([(9,), (3, 3)], 9)
        twins = [torch.nn.Parameter(v.detach().clone()) for v in others]
        _FlakyAdam(0.01, jit_compile=True).apply_gradients(zip(_grads([(9,), (3, 3)], 10), others))
    assert key not in _compiled._BROKEN
    assert int(torch._dynamo.utils.counters["stats"]["unique_graphs"]) == graphs
    ko.optimizers.Adam(0.01, implementation="per_tensor").apply_gradients(
        zip(_grads([(9,), (3, 3)], 10), twins)
    )
    for a, b in zip(others, twins):
        torch.testing.assert_close(a, b, rtol=4e-6, atol=1e-7)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch._inductor.exc.InvalidCxxCompiler(),
        lambda: torch._inductor.exc.CppCompileError(["cc"], "boom"),
    ],
    ids=["InvalidCxxCompiler", "CppCompileError"],
)
def test_compile_failure_on_a_recompile_still_falls_back(monkeypatch, error):
    calls = []

    def compiled_then_fails(rule, v, g, s, c):
        calls.append(1)
        if len(calls) > 1:
            raise error()
        _compiled._chunk_step(rule, v, g, s, c)

    monkeypatch.setattr(_compiled, "_compiled", lambda key: compiled_then_fails)
    monkeypatch.setattr(_compiled, "_BROKEN", set())
    monkeypatch.setattr(_compiled, "_READY", {}, raising=False)
    a = _vars(SHAPES, 11)
    b = [torch.nn.Parameter(v.detach().clone()) for v in a]
    grads = _grads(SHAPES, 12)
    opt_a = ko.optimizers.SGD(0.1, jit_compile=True)
    opt_b = ko.optimizers.SGD(0.1, implementation="foreach")
    opt_a.apply_gradients(zip(grads, a))
    with pytest.warns(RuntimeWarning, match="compiled engine is unavailable here"):
        opt_a.apply_gradients(zip(grads, a))
    assert len(_compiled._BROKEN) == 1
    for _ in range(2):
        opt_b.apply_gradients(zip(grads, b))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=4e-6, atol=1e-7)


def test_scratch_is_one_bounded_list_per_dtype_and_device(monkeypatch):
    monkeypatch.setattr(_compiled, "_SCRATCH", {})
    for n in range(1, 40):  # every pad count
        shapes = [(3,)] * n
        ko.optimizers.SGD(0.1, momentum=0.9, jit_compile=True).apply_gradients(
            zip(_grads(shapes, n), _vars(shapes, n))
        )
    assert list(_compiled._SCRATCH) == [(torch.float32, torch.device("cpu"))]
    (pads,) = _compiled._SCRATCH.values()
    assert len(pads) == 3 * (_compiled.CHUNK - 1)


def test_scratch_is_thread_safe(monkeypatch):
    monkeypatch.setattr(_compiled, "_SCRATCH", {})
    results = []
    barrier = threading.Barrier(8)

    def worker(count):
        barrier.wait()
        results.append(_compiled._scratch(torch.float64, torch.device("cpu"), count))

    threads = [threading.Thread(target=worker, args=(5 * (i + 1),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (pads,) = _compiled._SCRATCH.values()
    assert len(pads) == 40 and len({id(p) for p in pads}) == 40
    for got in results:
        assert all(x is y for x, y in zip(got, pads))
