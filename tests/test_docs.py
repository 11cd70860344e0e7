"""The documentation's code blocks run, each on its own, and the docs cite only files the
repository contains."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.doc_blocks import ROOT, blocks, run

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [b for page in PAGES for b in blocks(page)]


def test_docs_have_examples():
    assert len(BLOCKS) >= 20
    for b in BLOCKS:
        assert b.skip_reason is None or b.skip_reason.startswith("needs "), b.label


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.label.removeprefix("docs/"))
def test_docs_block_runs(block, tmp_path, monkeypatch):
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    if "import lightning" in block.code:
        pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    run(block)


def test_no_file_cites_a_document_outside_the_repository():
    # The specification and design notes once kept beside the repository are now
    # docs/reference-behaviour.md and docs/design.md; nothing may cite the old files.
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(r"\b(SPEC|DESIGN)\.md\b")
    offenders = [
        f
        for f in files
        if (ROOT / f).is_file()
        and not f.endswith((".npz", ".png"))
        and pattern.search((ROOT / f).read_text(errors="replace"))
    ]
    assert offenders == []


def test_links_between_docs_pages_resolve():
    link = re.compile(r"\]\(([^)#\s]+\.md)(#[^)]*)?\)")
    for page in [*PAGES, ROOT / "README.md"]:
        for target, _ in link.findall(page.read_text()):
            if target.startswith("http"):
                continue
            resolved = (page.parent / target).resolve()
            generated = resolved.parent.name == "optimizers"  # written by tools/docs_hooks.py
            assert resolved.exists() or generated, f"{page.name} links to missing {target}"
