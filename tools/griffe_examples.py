"""griffe extension for the docs build: Google-style ``Example:`` sections become ``Examples:``.

The project's docstrings say ``Example:`` (pytest's ``--doctest-modules`` runs them); griffe only
parses the plural as doctest code, and would otherwise render ``>>>`` lines and their output as
Markdown (where ``[0.9, 1.9]`` reads as a link reference).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExamplesSection(griffe.Extension):
    """Renames a docstring's ``Example:`` section to ``Examples:`` before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites ``obj``'s docstring in place (only the section title)."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
