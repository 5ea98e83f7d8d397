"""HTML of outgoing messages, cut down with nh3 to what a Skype for Business client renders.

Formatting, fonts, colours, lists and links with safe schemes survive; scripts, event handlers,
embedded content and style values that could run or fetch anything do not.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import nh3

# The Skype for Business IM window renders inline formatting, fonts and colours (its own
# messages are a styled <span>), paragraphs and line breaks, bullet lists and links.
ALLOWED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "u", "s", "strike", "br", "p", "div", "span", "font"}
    | {"ul", "ol", "li"}
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "font": {"color", "face", "size"},
    "span": {"style"},
    "p": {"style"},
    "div": {"style"},
}
SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto", "sip", "sips", "tel"})
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
    # A relative link points nowhere in an IM window; only absolute safe-scheme links stay.
    if attribute == "href" and not urlsplit(value.strip()).scheme:
        return None
    return value


def sanitize_outgoing_html(html: str) -> str:
    """``html`` restricted to the allowed tags, attributes, URL schemes and style values."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        url_schemes=set(SAFE_URL_SCHEMES),
        link_rel=None,
    ).strip()
