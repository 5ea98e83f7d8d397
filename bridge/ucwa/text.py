"""Where text becomes Python ``str``: unpaired UTF-16 surrogates and control characters.

JSON may escape half an emoji (``"\\ud83d"``); Python keeps it, and encoding it later raises. Pure.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
# Surrogate code points left in a ``str`` are always unpaired: a valid pair decodes to one
# astral character.
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON text can only carry a surrogate as a \\u escape, so this finds every candidate body.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
# C0 controls and DEL, except tab, line feed and carriage return, which messages legitimately carry.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def may_carry_surrogates(json_text: str) -> bool:
    """Cheap test on a JSON text before ``repair``: only an escape can yield a surrogate."""
    return _ESCAPED_SURROGATE.search(json_text) is not None


def repair(value: Any) -> Any:
    """The same JSON value with every unpaired surrogate (in keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, list):
        return [repair(item) for item in value]
    if isinstance(value, dict):
        return {repair(k): repair(v) for k, v in value.items()}
    return value


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot be sent as it is, or None: what the API refuses in a message field."""
    found = _SURROGATE.search(text)
    if found:
        return f"contains an unpaired UTF-16 surrogate at position {found.start()}"
    found = _CONTROL.search(text)
    if found:
        return (
            f"contains the control character U+{ord(found.group()):04X} at position "
            f"{found.start()} (only tab, line feed and carriage return are allowed)"
        )
    return None


def unpaired_surrogate(value: Any) -> tuple[tuple[str | int, ...], int] | None:
    """Where the first unpaired surrogate in a JSON value is: the path to its string (a key's
    own path when the key carries it, with surrogates in the path replaced) and its position.

    Walks with its own stack: a value as deep as the JSON parser allows must not exhaust
    Python's.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _KeyAt):
            return path, int(item)
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                return path, found.start()
            continue
        if isinstance(item, list):
            children: list[tuple[tuple[str | int, ...], Any]] = [
                ((*path, index), child) for index, child in enumerate(item)
            ]
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str):
                    found = _SURROGATE.search(key)
                    if found is not None:
                        children.append(((*path, repair(key)), _KeyAt(found.start())))
                        continue
                children.append(((*path, key), child))
        else:
            continue
        stack.extend(reversed(children))  # depth first, in document order
    return None


class _KeyAt(int):
    """Stands for a key that carries a surrogate at this position, in ``unpaired_surrogate``."""
