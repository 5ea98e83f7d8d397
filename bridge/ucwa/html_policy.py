"""HTML cut down with nh3: one mechanism, two policies (what goes to Skype for Business, what
goes to webhook receivers). Pure: no I/O.

Both drop scripts, event handlers, embedded content, relative links and style values that could
run or fetch anything; they differ only in the tags and link schemes they keep.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import nh3

# Harmless styling only (Skype for Business wraps every HTML message in a styled <span>).
ALLOWED_STYLE_PROPERTIES = frozenset(
    {
        "color",
        "background-color",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "text-decoration",
    }
)
DROPPED_WITH_CONTENT = frozenset({"script", "style"})
SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto", "sip", "sips", "tel"})
# Colours, sizes and font names only: no parentheses (url(), expression()), backslash escapes,
# comments or at-rules, so a value can neither run script nor fetch anything.
_SAFE_STYLE_VALUE = re.compile(r"^[#a-zA-Z0-9 ,.%'\"-]{1,100}$")


def _style(value: str) -> str | None:
    kept = []
    for declaration in value.split(";"):
        name, sep, setting = declaration.partition(":")
        name, setting = name.strip().lower(), setting.strip()
        if sep and name in ALLOWED_STYLE_PROPERTIES and _SAFE_STYLE_VALUE.match(setting):
            kept.append(f"{name}:{setting}")
    return ";".join(kept) or None


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "style":
        return _style(value)
    # A relative link points nowhere in an IM and could resolve against the reader's page.
    if attribute == "href" and not urlsplit(value.strip()).scheme:
        return None
    return value


@dataclass(frozen=True)
class HtmlPolicy:
    tags: frozenset[str]
    attributes: Mapping[str, frozenset[str]]
    url_schemes: frozenset[str] = SAFE_URL_SCHEMES
    link_rel: str | None = None

    def clean(self, html: str) -> str:
        """``html`` restricted to this policy's tags, attributes, URL schemes and style values."""
        return nh3.clean(
            html,
            tags=set(self.tags),
            clean_content_tags=set(DROPPED_WITH_CONTENT),
            attributes={tag: set(names) for tag, names in self.attributes.items()},
            attribute_filter=_filter_attribute,
            url_schemes=set(self.url_schemes),
            link_rel=self.link_rel,
        ).strip()


# What the Skype for Business IM window renders: inline formatting, fonts and colours,
# paragraphs and line breaks, bullet lists and links.
OUTGOING = HtmlPolicy(
    tags=frozenset(
        {"a", "b", "strong", "i", "em", "u", "s", "strike", "br", "p", "div", "span", "font"}
        | {"ul", "ol", "li"}
    ),
    attributes={
        "a": frozenset({"href", "title"}),
        "font": frozenset({"color", "face", "size"}),
        "span": frozenset({"style"}),
        "p": frozenset({"style"}),
        "div": frozenset({"style"}),
    },
)

# What a user's client may send and a receiver may show: also quotes, code and headings; links
# get rel="noopener noreferrer nofollow" because receivers render them in their own pages.
INBOUND = HtmlPolicy(
    tags=frozenset(
        {"a", "b", "strong", "i", "em", "u", "s", "strike", "del", "ins", "sub", "sup"}
        | {"p", "div", "br", "hr", "ul", "ol", "li", "blockquote", "code", "pre"}
        | {"h1", "h2", "h3", "h4", "h5", "h6", "small", "big", "span", "font"}
    ),
    attributes={
        "a": frozenset({"href", "title"}),
        "font": frozenset({"color", "face", "size"}),
        "*": frozenset({"style"}),
    },
    url_schemes=SAFE_URL_SCHEMES | {"im"},
    link_rel="noopener noreferrer nofollow",
)


def sanitize_outgoing_html(html: str) -> str:
    return OUTGOING.clean(html)


def sanitize_html(html: str) -> str:
    """Inbound HTML safe for a receiver to show."""
    return INBOUND.clean(html)
