import base64

import pytest

from bridge.ucwa.datauri import (
    decode_data_uri,
    encode_data_uri,
    html_to_text,
    is_data_uri,
)
from bridge.ucwa.errors import InvalidDataUri, UcwaError


def test_documented_form_url_encoded_message() -> None:
    content = decode_data_uri("data:text/plain;charset=utf-8,Hi+Tosh%0d%0a")
    assert content.text == "Hi Tosh"
    assert content.mime == "text/plain"
    assert content.charset == "utf-8"


def test_plus_is_space_but_encoded_plus_stays_plus() -> None:
    assert decode_data_uri("data:text/plain,1+%2b+1+%3D+2").text == "1 + 1 = 2"
    assert decode_data_uri("data:text/plain,C%2B%2B").text == "C++"


def test_lower_and_upper_case_escapes_and_utf8() -> None:
    assert decode_data_uri("data:text/plain;charset=utf-8,caf%c3%a9").text == "café"
    assert decode_data_uri("data:text/plain;charset=utf-8,caf%C3%A9").text == "café"


def test_only_one_trailing_crlf_is_stripped() -> None:
    assert decode_data_uri("data:text/plain,a%0d%0a%0d%0a").text == "a\r\n"
    assert decode_data_uri("data:text/plain,line1%0d%0aline2").text == "line1\r\nline2"


def test_base64_plain_and_html() -> None:
    assert decode_data_uri("data:text/plain;base64,SGVsbG8gV29ybGQ=").text == "Hello World"
    html = "<b>Hi</b> &amp; bye\r\n"
    uri = "data:text/html;base64," + base64.b64encode(html.encode()).decode()
    content = decode_data_uri(uri)
    assert content.is_html
    assert content.text == "<b>Hi</b> &amp; bye"
    assert content.plain_text() == "Hi & bye"


def test_base64_with_charset_after_or_before() -> None:
    raw = base64.b64encode("grüß".encode()).decode()
    assert decode_data_uri(f"data:text/plain;charset=utf8;base64,{raw}").text == "grüß"
    assert decode_data_uri(f"data:text/plain;base64;charset=utf-8,{raw}").text == "grüß"


def test_latin1_charset() -> None:
    assert decode_data_uri("data:text/plain;charset=iso-8859-1,caf%e9").text == "café"


def test_unknown_charset_falls_back_to_utf8() -> None:
    assert decode_data_uri("data:text/plain;charset=x-bogus,ok%21").text == "ok!"


def test_doc_whitespace_artefacts_tolerated() -> None:
    assert decode_data_uri("data : text/plain;base64,\n SGVsbG8gV29ybGQ=").text == "Hello World"
    assert decode_data_uri(" data:text/plain;charset=utf-8,\n Hi+there").text == "Hi there"


def test_missing_base64_padding_tolerated() -> None:
    assert decode_data_uri("data:text/plain;base64,SGk").text == "Hi"


def test_empty_mime_defaults_to_text_plain() -> None:
    assert decode_data_uri("data:,hello").mime == "text/plain"


def test_real_sfb_html_message() -> None:
    uri = (
        "data:text/html;charset=utf-8,%3cspan+style%3d%22font-size%3a10pt%3bfont-family%3a"
        "Segoe+UI%3bcolor%3a%23000000%3b%22%3eHello%3c%2fspan%3e"
    )
    content = decode_data_uri(uri)
    assert content.text.startswith('<span style="font-size:10pt;font-family:Segoe UI;')
    assert content.plain_text() == "Hello"


@pytest.mark.parametrize(
    "bad",
    ["https://example.com/x", "text/plain,hi", "data:text/plain;base64", "", "data:;base64,@@@"],
)
def test_rejects_non_data_uris(bad: str) -> None:
    with pytest.raises(InvalidDataUri):
        decode_data_uri(bad)


def test_invalid_data_uri_is_in_the_tree_and_a_value_error() -> None:
    with pytest.raises(UcwaError):
        decode_data_uri("http://x")
    with pytest.raises(ValueError):
        decode_data_uri("http://x")


@pytest.mark.parametrize("use_base64", [True, False])
@pytest.mark.parametrize("text", ["Hello World", "1 + 1 = 2 & café\r\nok", "%41 +"])
def test_encode_round_trips(text: str, use_base64: bool) -> None:
    uri = encode_data_uri(text, use_base64=use_base64)
    assert uri.startswith("data:text/plain;charset=utf-8")
    assert ";base64," in uri if use_base64 else ";base64" not in uri
    assert " " not in uri
    assert decode_data_uri(uri).text == text


def test_encode_html_and_reject_other_types() -> None:
    assert encode_data_uri("<b>x</b>", "text/html").startswith(
        "data:text/html;charset=utf-8;base64,"
    )
    assert encode_data_uri("a b", use_base64=False) == "data:text/plain;charset=utf-8,a%20b"
    with pytest.raises(ValueError):
        encode_data_uri("x", "html/plain")


def test_html_to_text() -> None:
    html = (
        "<html><head><style>p{}</style></head><body><p>Line&nbsp;1</p>"
        "<div>Line 2<br>Line 3</div><a href='http://x'>link</a> &lt;ok&gt;"
        "<script>alert(1)</script></body></html>"
    )
    assert html_to_text(html) == "Line 1\nLine 2\nLine 3\nlink <ok>"


def test_is_data_uri() -> None:
    assert is_data_uri("data:text/plain,x")
    assert not is_data_uri("/ucwa/x")
    assert not is_data_uri(None)
