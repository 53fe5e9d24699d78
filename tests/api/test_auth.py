"""Signed identity tokens (web visitors and app users)."""

from __future__ import annotations

import pytest

from api.auth import TokenError, load_or_create_secret, make_token, verify_token

SECRET = b"s" * 32


def test_a_token_verifies_to_its_subject_until_it_expires():
    token = make_token(SECRET, "web", "visitor.with.dots", ttl_seconds=60, now=1000)
    assert verify_token(SECRET, "web", token, now=1059) == "visitor.with.dots"
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, "web", token, now=1060)


@pytest.mark.parametrize(
    ("secret", "purpose", "mangle", "why"),
    [
        (b"t" * 32, "web", lambda t: t, "signature"),  # another secret
        (SECRET, "app", lambda t: t, "signature"),  # a web token offered as an app token
        (SECRET, "web", lambda t: "other" + t[t.index(".") :], "signature"),  # another subject
        (SECRET, "web", lambda t: t.replace(".1060.", ".9999999999."), "signature"),  # a later expiry
        (SECRET, "web", lambda t: t.rsplit(".", 1)[0], "malformed"),
        (SECRET, "web", lambda t: "", "malformed"),
        (SECRET, "web", lambda t: "a.b.c", "malformed"),
    ],
)
def test_tampered_or_misused_tokens_are_refused(secret, purpose, mangle, why):
    token = mangle(make_token(SECRET, "web", "visitor", ttl_seconds=60, now=1000))
    with pytest.raises(TokenError, match=why):
        verify_token(secret, purpose, token, now=1001)


def test_an_empty_or_huge_subject_cannot_be_signed():
    for subject in ("", "x" * 201):
        with pytest.raises(ValueError):
            make_token(SECRET, "web", subject, 60)


def test_the_generated_secret_is_kept_private_and_reused(tmp_path):
    path = tmp_path / "var" / "secret_key"
    first = load_or_create_secret(path)
    assert len(first) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == first
    path.write_text("short")
    with pytest.raises(ValueError, match="too short"):
        load_or_create_secret(path)
