"""The typing stubs of ``kerasopt.optim`` and ``kerasopt.keras3.optim`` (issue #18).

Their classes get ``__init__`` from ``KerasOptimizer`` (``(params, lr, **kwargs)``, checked at
runtime against the Keras class), so their static signatures come from ``.pyi`` stubs written by
``tools/make_optim_stubs.py``. Here: the committed stubs are what the generator writes now, they
list the keys of the runtime ``inspect.signature``, and mypy accepts exactly the calls the runtime
accepts.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

import kerasopt

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    path = ROOT / "tools" / "make_optim_stubs.py"
    spec = importlib.util.spec_from_file_location("make_optim_stubs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.mark.parametrize("module", GEN.MODULES)
def test_committed_stub_is_current(module: str) -> None:
    path = GEN.stub_path(module)
    assert path.exists(), f"{path} is missing: run `python tools/make_optim_stubs.py`"
    assert path.read_text() == GEN.render(module), (
        f"{path.relative_to(ROOT)} is stale: run `python tools/make_optim_stubs.py`"
    )


@pytest.mark.parametrize("module", GEN.MODULES)
def test_stub_signatures_are_the_runtime_ones(module: str) -> None:
    """Each stub ``__init__``: ``inspect.signature``'s parameters in its order and kinds, with its
    defaults, then the ``learning_rate`` alias and torch's flags (keyword-only)."""
    from kerasopt.optim import _adapter

    runtime = importlib.import_module(module)
    tree = ast.parse(GEN.stub_path(module).read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert {c.name for c in classes} == {
        n for n in runtime.__all__ if getattr(getattr(runtime, n), "_spec", None) is not None
    }
    extras = ["learning_rate", *sorted(_adapter._TORCH_FLAGS)]
    for node in classes:
        (init,) = [f for f in node.body if isinstance(f, ast.FunctionDef)]
        args = init.args
        assert args.vararg is None and args.kwarg is None, node.name
        assert [a.arg for a in args.args] == ["self", "params", "lr"], node.name
        signature = inspect.signature(getattr(runtime, node.name))
        keyword_only = [n for n, p in signature.parameters.items() if p.kind == p.KEYWORD_ONLY]
        assert [a.arg for a in args.kwonlyargs] == [*keyword_only, *extras], node.name
        defaults = [ast.literal_eval(d) if d is not None else None for d in args.kw_defaults]
        for name, default in zip(keyword_only, defaults):
            assert default == signature.parameters[name].default, (node.name, name)
        assert ast.literal_eval(args.defaults[0]) == signature.parameters["lr"].default


# Valid calls, then calls the runtime refuses (marked `# refused`): mypy must flag exactly the
# refused lines, and the runtime must refuse exactly those (TypeError; the Keras 3 classes raise
# Keras 3's ValueError). The Keras API classes type their `**kwargs` with
# `Unpack[kerasopt._features.BaseKeywords]`, so a misspelt keyword is a type error there too.
PRELUDE = """\
import torch
import kerasopt
import kerasopt.keras3.optim as optim3
import kerasopt.optim as optim

model = torch.nn.Linear(2, 1)
params = [torch.nn.Parameter(torch.zeros(2))]
"""
CALLS = """\
optim.Adam(params, lr=0.1, beta_1=0.8, beta_2=0.99, epsilon=1e-8, amsgrad=True)
optim.Adam(params, learning_rate=0.1, betas=(0.9, 0.99), weight_decay=0.01, decay=0.1)
optim.Adam(model.parameters(), 1e-3, clipnorm=1.0, use_ema=True, ema_momentum=0.9)
optim.AdamW(params, weight_decay=0.1, implementation="foreach", jit_compile=False)
optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, foreach=None, maximize=False)
optim.RMSprop([{"params": params, "lr": 0.1}], rho=0.8, centered=True, slot_dtype="float32")
optim.Nadam(params, schedule_decay=0.005, gradient_accumulation_steps=2)
optim.Muon(model.named_parameters(), exclude_layers=["bias"], ns_steps=3)
optim.Ftrl(params, l1_regularization_strength=0.01, beta=0.1)
optim.Adafactor(params, relative_step=False, clip_threshold=2.0)
optim3.Adam(params, lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
optim3.SGD(params, momentum=0.9, loss_scale_factor=None)
optim3.ScheduleFreeAdamW(params, warmup_steps=10)
kerasopt.optimizers.Adam(0.1, beta_1=0.8, clipnorm=1.0, decay=0.01, jit_compile=True)
kerasopt.optimizers.AdamW(weight_decay=0.1, use_ema=True, gradient_accumulation_steps=2)
kerasopt.optimizers.Nadam(schedule_decay=0.005, slot_dtype="float32")
kerasopt.keras3.RMSprop(learning_rate=0.1, rho=0.8, global_clipnorm=1.0)
kerasopt.optimizers.Adam(0.1, beta_11=0.9)  # refused
kerasopt.optimizers.SGD(momentum=0.9, clip_norm=1.0)  # refused
kerasopt.keras3.Adam(beta_11=0.9)  # refused
optim.Adam(params, beta_11=0.9)  # refused
optim3.Adam(params, beta_11=0.9)  # refused
optim.Adam(params, eps=1e-8)  # refused
optim.Lion(params, epsilon=1e-7)  # refused
optim.Adafactor(params, decay=0.1)  # refused
optim3.RMSprop(params, decay=0.1)  # refused
optim.Adagrad(params, 0.1, 0.2)  # refused
optim.SGD(params, maximize=True)  # refused
"""


def test_mypy_accepts_exactly_the_valid_calls(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(PRELUDE + CALLS)
    config = tmp_path / "mypy.ini"
    # mypy_path: this checkout's sources (and stubs), whatever is installed; follow_imports
    # silent: kerasopt and torch are analysed, only the snippet's errors are reported.
    config.write_text(
        f"[mypy]\nmypy_path = {ROOT / 'src'}\nfollow_imports = silent\n"
        f"cache_dir = {tmp_path / 'mypy_cache'}\n"
    )
    stdout, stderr, status = api.run(["--config-file", str(config), str(snippet)])
    print(stdout)
    first = len(PRELUDE.splitlines()) + 1
    lines = CALLS.splitlines()
    refused = {first + i for i, line in enumerate(lines) if line.endswith("# refused")}
    flagged = {int(m) for m in re.findall(r"^.*snippet\.py:(\d+): error:", stdout, re.M)}
    assert flagged == refused, stdout + stderr
    assert status == 1

    # the runtime agrees, call by call
    namespace: dict[str, object] = {}
    exec(PRELUDE, namespace)
    for line in lines:
        if line.endswith("# refused"):
            with pytest.raises(TypeError if "keras3." not in line else ValueError):
                exec(line, namespace)
        else:
            made = eval(line, namespace)
            assert isinstance(made, (torch.optim.Optimizer, kerasopt.optimizers.Optimizer)), line
