"""Every python block of README.md runs (README shows what works today)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    import kerasopt as ko

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.rand(32, 3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    namespace = {"torch": torch, "ko": ko, "x": x, "y": y, "model": model}
    namespace["loss_fn"] = lambda: torch.mean((model(x) - y) ** 2)
    code = "\n".join(
        "pass" if line.strip() == "..." else line for line in BLOCKS[index].splitlines()
    )
    exec(compile(code, f"README.md block {index}", "exec"), namespace)
