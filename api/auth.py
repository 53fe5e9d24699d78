"""Signed identity tokens: web visitors' (signed by Baton) and app users' (signed by the app's backend).

A token is ``<subject>.<expires>.<signature>``: the subject (a visitor id or the app's user
id), the expiry as Unix seconds, and the hex HMAC-SHA256 of ``<purpose>:<subject>.<expires>``
under a secret. The purpose (``web`` or ``app``) keeps a token of one kind from passing as the
other even if both secrets were the same. Subjects may contain dots: the token is split from
the right.

An app's backend makes its users' tokens like this (Python; any language with HMAC works)::

    expires = int(time.time()) + 3600
    signature = hmac.new(APP_SECRET, f"app:{user_id}.{expires}".encode(), "sha256").hexdigest()
    token = f"{user_id}.{expires}.{signature}"
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from api.settings import Settings

MAX_SUBJECT_CHARS = 200


class TokenError(ValueError):
    """A token that is malformed, wrongly signed or expired (the message says which)."""


def signature(secret: bytes, purpose: str, subject: str, expires: int) -> str:
    """The hex HMAC-SHA256 a token of ``purpose`` for ``subject`` carries."""
    return hmac.new(secret, f"{purpose}:{subject}.{expires}".encode(), hashlib.sha256).hexdigest()


def make_token(
    secret: bytes, purpose: str, subject: str, ttl_seconds: float, now: float | None = None
) -> str:
    """A token for ``subject`` that expires ``ttl_seconds`` from ``now``."""
    if not subject or len(subject) > MAX_SUBJECT_CHARS:
        raise ValueError(f"a token subject must have 1-{MAX_SUBJECT_CHARS} characters")
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return f"{subject}.{expires}.{signature(secret, purpose, subject, expires)}"


def verify_token(secret: bytes, purpose: str, token: str, now: float | None = None) -> str:
    """The subject of a valid, unexpired ``token``.

    Raises:
        TokenError: malformed, wrongly signed or expired.
    """
    parts = token.rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or len(parts[0]) > MAX_SUBJECT_CHARS or not parts[1].isdigit():
        raise TokenError("malformed token: expected <subject>.<expires>.<signature>")
    subject, expires_text, given = parts
    expected = signature(secret, purpose, subject, int(expires_text))
    if not hmac.compare_digest(expected, given.lower()):
        raise TokenError("the token's signature does not match")
    if int(expires_text) <= (time.time() if now is None else now):
        raise TokenError("the token has expired")
    return subject


def load_or_create_secret(path: Path) -> bytes:
    """The secret kept in ``path``, created (random, owner-only) on first use.

    Kept on disk so that visitors' tokens survive a restart of the service.
    """
    if path.exists():
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) < 32:
            raise ValueError(f"{path}: the secret key is too short (at least 32 characters)")
        return secret.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(secret + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: two processes starting at once both end up with one whole file
    return path.read_text(encoding="utf-8").strip().encode()


def rasa_token(settings: Settings) -> str:
    """The Rasa server's auth token: ``BATON_RASA_TOKEN``, else one kept in ``data_dir/rasa_token``,
    so that ``baton rasa serve`` and ``baton serve`` on one machine agree with no setup."""
    if settings.rasa_token is not None:
        return settings.rasa_token.get_secret_value()
    return load_or_create_secret(settings.data_dir / "rasa_token").decode()
