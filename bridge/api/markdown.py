"""Markdown message bodies turned into HTML, for the same sanitiser as the ``html`` form.

Pure: CommonMark with raw HTML off, so markup in the source shows as text, never as tags.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

# Raw HTML off: "<script>" in markdown is escaped to text. Links keep their href here; the
# outgoing HTML policy decides which schemes survive, as it does for the html form.
_RENDERER = MarkdownIt("commonmark", {"html": False})


def markdown_to_html(source: str) -> str:
    """The HTML of ``source``, trailing newline dropped (it would reach the recipient)."""
    return _RENDERER.render(source).strip()
