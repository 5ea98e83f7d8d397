import pytest

from bridge.ucwa.challenge import MsRtcOAuthChallenge, parse_challenge

TOKEN_URL = "https://lyncweb.contoso.com/WebTicket/oauthtoken"
BEARER = (
    'Bearer trusted_issuers="00000002-0000-0ff1-ce00-000000000000@contoso.com", '
    'client_id="00000004-0000-0ff1-ce00-000000000000"'
)
MSRTC = (
    f'MsRtcOAuth href="{TOKEN_URL}",'
    'grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password"'
)
GRANTS = ("urn:microsoft.rtc:windows", "urn:microsoft.rtc:anonmeeting", "password")


def test_separate_header_values() -> None:
    assert parse_challenge([BEARER, MSRTC]) == MsRtcOAuthChallenge(TOKEN_URL, GRANTS)


def test_folded_into_one_line() -> None:
    challenge = parse_challenge(f"{BEARER}, {MSRTC}")
    assert challenge == MsRtcOAuthChallenge(TOKEN_URL, GRANTS)
    assert challenge.allows("password")
    assert not challenge.allows("urn:microsoft.rtc:passive")


def test_msrtc_first_then_bearer_does_not_leak_bearer_params() -> None:
    challenge = parse_challenge(f'{MSRTC}, Bearer trusted_issuers="x", client_id="y"')
    assert challenge is not None
    assert challenge.grant_types == GRANTS


def test_unquoted_href_and_grant_list() -> None:
    value = f"MsRtcOAuth href={TOKEN_URL},grant_type=urn:microsoft.rtc:windows,password"
    challenge = parse_challenge(value)
    assert challenge == MsRtcOAuthChallenge(TOKEN_URL, ("urn:microsoft.rtc:windows", "password"))


def test_unquoted_folded_followed_by_other_scheme() -> None:
    value = f'MsRtcOAuth href={TOKEN_URL},grant_type=password, Bearer client_id="z"'
    assert parse_challenge(value) == MsRtcOAuthChallenge(TOKEN_URL, ("password",))


def test_spaces_and_case() -> None:
    value = f"msrtcoauth  HREF = '{TOKEN_URL}' , Grant_Type = \"password\""
    assert parse_challenge([value]) == MsRtcOAuthChallenge(TOKEN_URL, ("password",))


def test_missing_grant_type_gives_empty_tuple() -> None:
    assert parse_challenge(f'MsRtcOAuth href="{TOKEN_URL}"') == MsRtcOAuthChallenge(TOKEN_URL, ())


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        [],
        BEARER,
        "Negotiate, NTLM",
        'MsRtcOAuth grant_type="password"',
        'XMsRtcOAuth href="https://h/t"',
    ],
)
def test_no_challenge(value: object) -> None:
    assert parse_challenge(value) is None  # type: ignore[arg-type]
