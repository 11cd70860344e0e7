"""The Python code blocks of a Markdown file, for tests that run them one by one.

A block runs on its own: in a fresh namespace, so it must import and define everything it uses
(a block that silently used a name from an earlier block would fail). A block that cannot run in
the test-suite (it needs torchrun, or a package that is not a dependency) is preceded by an HTML
comment saying why: ``<!-- not run: needs transformers -->``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"(<!-- not run: ([^>]*?) -->\n)?```python\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    index: int
    code: str
    skip_reason: str | None

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(ROOT)} block {self.index}"


def blocks(path: Path) -> list[Block]:
    """Every ```python block of ``path``, in order."""
    text = path.read_text()
    return [
        Block(path, i, m.group(3), m.group(2) if m.group(1) else None)
        for i, m in enumerate(_BLOCK.finditer(text))
    ]


def run(block: Block) -> None:
    """Runs one block in a namespace of its own (``...`` lines are placeholders)."""
    torch.manual_seed(0)
    code = "\n".join("pass" if line.strip() == "..." else line for line in block.code.splitlines())
    exec(compile(code, block.label, "exec"), {"__name__": "__doc_block__"})
