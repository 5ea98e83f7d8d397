"""The text boundary: every JSON string a UCWA server can send comes out encodable."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bridge.ucwa.messages import HttpResponse
from bridge.ucwa.text import (
    REPLACEMENT,
    may_carry_surrogates,
    repair,
    unencodable,
    unpaired_surrogate,
)

# Any code point, lone surrogates included, as JSON escapes them.
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)


def response(body: str) -> HttpResponse:
    return HttpResponse(200, {"Content-Type": "application/json"}, body, "https://ucwa.test/x")


@given(JSON_VALUES)
def test_every_parsed_body_encodes_as_utf8(value: object) -> None:
    body = json.dumps({"_embedded": value})  # ensure_ascii: surrogates travel as \\u escapes
    parsed = response(body).json()
    json.dumps(parsed, ensure_ascii=False).encode("utf-8")  # must not raise


def test_a_cut_emoji_becomes_a_replacement_character_and_pairs_survive() -> None:
    body = '{"name": "Ann \\ud83d", "ok": "\\ud83d\\ude00", "\\udc00key": ["\\udfff"]}'
    assert may_carry_surrogates(body)
    assert response(body).json() == {
        "name": "Ann " + REPLACEMENT,
        "ok": "\U0001f600",
        REPLACEMENT + "key": [REPLACEMENT],
    }


def test_plain_bodies_are_not_walked() -> None:
    assert not may_carry_surrogates('{"name": "Ann \\u00e9 \\n"}')
    assert repair({"a": ["b", 1, None]}) == {"a": ["b", 1, None]}


def test_the_api_policy_names_what_it_refuses() -> None:
    assert unencodable("tab\tline\nreturn\r ok \U0001f600") is None
    assert "surrogate" in (unencodable("half \ud83d") or "")
    assert "U+0000" in (unencodable("nul\x00") or "")
    assert "U+001B" in (unencodable("esc\x1b[31m") or "")
    assert "U+007F" in (unencodable("del\x7f") or "")


@given(JSON_VALUES)
def test_the_first_unpaired_surrogate_is_found_exactly_when_the_value_cannot_be_encoded(
    value: object,
) -> None:
    found = unpaired_surrogate(value)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        assert found is not None
    else:
        assert found is None
        return
    path, position = found
    assert position >= 0
    json.dumps(path, ensure_ascii=False).encode("utf-8")  # printable in a problem answer


def test_the_path_names_list_items_by_index_and_keys_by_their_repaired_text() -> None:
    assert unpaired_surrogate({"a": ["ok", {"b": "xy\udfff"}]}) == (("a", 1, "b"), 2)
    assert unpaired_surrogate({"ok": 1, "k\ud800": "v"}) == (("k" + REPLACEMENT,), 1)
    assert unpaired_surrogate("\U0001f600 \ud83d") == ((), 2)
    assert unpaired_surrogate([1, None, True, "fine"]) is None
