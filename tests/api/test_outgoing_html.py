"""HTML messages are cut down to what Skype for Business renders before they are stored.

The caller sees the sanitised HTML in the 202 answer; the stored record (what the worker sends)
holds the same.
"""

from __future__ import annotations

import pytest
import redis
from flask.testing import FlaskClient

from bridge.outbound.messages import MessageStore
from bridge.ucwa.html_policy import sanitize_outgoing_html
from tests.api.conftest import bearer


def send_html(client: FlaskClient, html: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        "/messages", json={"to": "sip:alice@contoso.com", "html": html}, headers=bearer()
    )
    return response.status_code, response.get_json()


@pytest.mark.parametrize(
    ("hostile", "sent"),
    [
        ("<b>build</b> <script>alert(1)</script>green", "<b>build</b> green"),
        ('<a href="javascript:alert(1)">log</a>', "<a>log</a>"),
        ('<a href="JaVaScRiPt&#58;alert(1)">log</a>', "<a>log</a>"),
        ('<a href=" vbscript:msgbox(1)">log</a>', "<a>log</a>"),
        ('<a href="data:text/html,&lt;script&gt;">log</a>', "<a>log</a>"),
        ('<a href="/relative">log</a>', "<a>log</a>"),
        ('<p onmouseover="alert(1)" onclick=x()>hi</p>', "<p>hi</p>"),
        ('<img src=x onerror="alert(1)">ok', "ok"),
        ('<iframe src="https://evil.example"></iframe>ok', "ok"),
        ("<svg><script>alert(1)</script></svg>ok", "ok"),
        ("<style>*{display:none}</style>ok", "ok"),
        ('<form action="https://evil.example"><input name=p></form>ok', "ok"),
        (
            '<span style="color:red;background-image:url(javascript:alert(1))">c</span>',
            '<span style="color:red">c</span>',
        ),
        ('<span style="color:expression(alert(1))">c</span>', "<span>c</span>"),
        ('<span style="color:&#101;xpression(alert(1))">c</span>', "<span>c</span>"),
        (
            '<span style="font-size:10pt;position:fixed;top:0">c</span>',
            '<span style="font-size:10pt">c</span>',
        ),
        ('<span style="font-family:Arial\\,sans">c</span>', "<span>c</span>"),
        ("<table><tr><td>cell</td></tr></table>", "cell"),
        ("<b>unclosed", "<b>unclosed</b>"),
    ],
)
def test_hostile_html_is_stored_and_answered_sanitised(
    client: FlaskClient, redis_client: redis.Redis, hostile: str, sent: str
) -> None:
    status, body = send_html(client, hostile)

    assert status == 202
    assert body["html"] == sent
    assert MessageStore(redis_client).get(str(body["id"])).html == sent


def test_what_skype_for_business_renders_is_kept(client: FlaskClient) -> None:
    html = (
        '<span style="font-size:10pt;font-family:Segoe UI;color:#000000">Deploy '
        '<b>4711</b> <i>finished</i>, <u>see</u> <a href="https://ci.example.com/4711" '
        'title="CI">the log</a> or <a href="sip:ops@contoso.com">ops</a></span><br>'
        '<p>next:</p><ul><li><font color="red" face="Consolas">one</font></li></ul>'
    )
    status, body = send_html(client, html)

    assert status == 202
    assert body["html"] == html


def test_html_with_nothing_left_to_show_is_422_naming_html(client: FlaskClient) -> None:
    response = client.post(
        "/messages",
        json={"to": "sip:alice@contoso.com", "html": "<script>alert(1)</script><img src=x>"},
        headers=bearer(),
    )

    assert response.status_code == 422
    assert response.get_json()["errors"] == [
        {
            "field": "html",
            "message": "nothing Skype for Business can show is left after sanitising",
            "code": "blank",
        }
    ]


def test_sanitising_is_idempotent() -> None:
    once = sanitize_outgoing_html('<a href="https://x.example" onclick=1>a</a><script>b</script>')
    assert sanitize_outgoing_html(once) == once == '<a href="https://x.example">a</a>'
