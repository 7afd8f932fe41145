"""A griffe extension for the API pages: neosx docstrings as mkdocstrings renders them best.

The modules are left as they are; before a docstring is parsed this extension

- renames ``Example:`` section headings to ``Examples:``. Google style (griffe) knows only
  the plural as a section of code examples; the singular is read as an admonition whose
  ``>>>`` lines Markdown turns into nested block quotes (and whose ``x[0][1]`` indexing it
  reads as reference links, which fails the strict build);
- turns reStructuredText roles (``:class:`~neosx.analysis.Outputs```) into code spans
  (the last component with ``~``, as Sphinx shows it) and a line-ending ``::`` into ``:``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    target = match[2]
    return f"`{target.rsplit('.', 1)[-1] if match[1] else target}`"


def clean(text: str) -> str:
    """The docstring text with the rewrites above applied."""
    text = _SINGULAR.sub(r"\1Examples:", text)
    text = _ROLE.sub(_role, text)
    return _LITERAL.sub(r"\1:", text)


class DocstringCleanup(griffe.Extension):
    """Apply :func:`clean` to every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = clean(obj.docstring.value)
