"""Every python block of README.md runs, each on its own (README shows what works today)."""

from __future__ import annotations

import pytest

from tests.doc_blocks import ROOT, blocks, run

BLOCKS = blocks(ROOT / "README.md")


def test_readme_has_examples():
    assert BLOCKS
    assert all(b.skip_reason is None for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: str(b.index))
def test_readme_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(block)
