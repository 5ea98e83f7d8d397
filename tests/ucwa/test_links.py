from datetime import UTC, datetime
from urllib.parse import urljoin

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ucwa.errors import InvalidLink
from bridge.ucwa.links import (
    embedded,
    embedded_list,
    link,
    link_title,
    links,
    parse_ms_date,
    query_param,
    resolve,
    sip_uri_from_href,
    with_query,
)

APP = "/ucwa/oauth/v1/applications/102"
RESOURCE = {
    "_links": {
        "self": {"href": f"{APP}/communication"},
        "conversation": [{"href": f"{APP}/communication/conversations/1"}, {"href": "/c/2"}],
        "from": {"href": "/p/lenea@contoso.com", "title": "Lene Aaling"},
        "empty": {"title": "no href"},
    },
    "_embedded": {
        "me": {"rel": "me", "uri": "sip:toshm@contoso.com"},
        "acceptedByParticipant": [{"uri": "sip:a@x"}, {"uri": "sip:b@x"}],
    },
}


def test_link_single_and_repeatable() -> None:
    assert link(RESOURCE, "self") == f"{APP}/communication"
    assert link(RESOURCE, "conversation") == f"{APP}/communication/conversations/1"
    assert links(RESOURCE, "conversation") == [f"{APP}/communication/conversations/1", "/c/2"]
    assert links(RESOURCE, "self") == [f"{APP}/communication"]


def test_link_missing_or_malformed() -> None:
    assert link(RESOURCE, "nope") is None
    assert link(RESOURCE, "empty") is None
    assert link(None, "self") is None
    assert link({"_links": "junk"}, "self") is None
    assert links({}, "x") == []


def test_link_title() -> None:
    assert link_title(RESOURCE, "from") == "Lene Aaling"
    assert link_title(RESOURCE, "self") is None


def test_embedded() -> None:
    me = embedded(RESOURCE, "me")
    assert me is not None and me["uri"] == "sip:toshm@contoso.com"
    assert embedded(RESOURCE, "acceptedByParticipant") == {"uri": "sip:a@x"}
    assert [p["uri"] for p in embedded_list(RESOURCE, "acceptedByParticipant")] == [
        "sip:a@x",
        "sip:b@x",
    ]
    assert embedded(RESOURCE, "missing") is None
    assert embedded_list({"_embedded": None}, "me") == []


def test_resolve_relative_absolute_and_data() -> None:
    base = "https://lyncweb.contoso.com/ucwa/oauth/v1/applications"
    assert resolve(base, f"{APP}/events?ack=1") == f"https://lyncweb.contoso.com{APP}/events?ack=1"
    assert resolve(base, "https://pool2.contoso.com/x") == "https://pool2.contoso.com/x"
    assert resolve(base, "data:text/plain,hi") == "data:text/plain,hi"


def test_with_query_adds_to_existing_params() -> None:
    assert with_query("/e/events?ack=5", {"timeout": 180}) == "/e/events?ack=5&timeout=180"
    href = with_query("/c/conversations?filter=active", {"filter": "all"})
    assert href == "/c/conversations?filter=all"
    assert with_query("/m/messages", {"operationId": "a b+c"}) == "/m/messages?operationId=a+b%2Bc"


def test_with_query_removes_and_keeps_order() -> None:
    href = with_query("/x?a=1&b=2&c=3", {"b": None, "d": "4"})
    assert href == "/x?a=1&c=3&d=4"
    assert query_param(href, "D") == "4"
    assert query_param(href, "b") is None


def test_parse_ms_date_both_forms() -> None:
    expected = datetime(2013, 3, 26, 19, 58, 18, 968000, tzinfo=UTC)
    assert parse_ms_date("/Date(1364327898968)/") == expected
    assert parse_ms_date("\\/Date(1364327898968)\\/") == expected
    assert parse_ms_date("/Date(1364327898968+0100)/") == expected
    parsed = parse_ms_date("/Date(0)/")
    assert parsed is not None and parsed.tzinfo is not None


def test_parse_ms_date_rejects_other_values() -> None:
    assert parse_ms_date("2013-03-26") is None
    assert parse_ms_date(None) is None
    assert parse_ms_date(1364327898968) is None


def test_sip_uri_from_href() -> None:
    assert sip_uri_from_href(f"{APP}/people/lenea@contoso.com") == "sip:lenea@contoso.com"
    conv = f"{APP}/communication/conversations/21a1"
    assert sip_uri_from_href(f"{conv}/participants/lenea@contoso.com") == "sip:lenea@contoso.com"
    assert sip_uri_from_href(f"{conv}/participants/lenea%40contoso.com") == "sip:lenea@contoso.com"
    assert sip_uri_from_href(f"{conv}/messaging") is None
    assert sip_uri_from_href(None) is None


HREF_PIECES = st.sampled_from(
    [
        "/ucwa",
        "/x",
        "../",
        "./",
        "?ack=1",
        "#f",
        "//pool2.contoso.com",
        ":99999",
        ":8080",
        "https://",
        "http://[::1",
        "%zz",
        " ",
        "é",
        "data:",
        "/",
        "a",
        "\x00",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(
        ["https://lyncweb.contoso.com", "https://lyncweb.contoso.com:4443/ucwa/app/1", "http://h"]
    ),
    pieces=st.lists(HREF_PIECES, max_size=6),
    long=st.booleans(),
)
def test_resolve_answers_alike_the_first_time_and_again(
    base: str, pieces: list[str], long: bool
) -> None:
    """Kept or not (long hrefs are not kept), a href resolves to what ``urljoin`` makes of it,
    and an unusable one is refused every time it comes."""
    href = "".join(pieces) + ("/p" * 1500 if long else "")

    def outcome() -> str:
        try:
            return resolve(base, href)
        except InvalidLink:
            return "InvalidLink"

    first, again = outcome(), outcome()
    assert first == again
    if href.startswith("data:"):
        assert first == href
    elif first != "InvalidLink":
        assert first == urljoin(base, href)
