"""Logging helpers: keep credentials out of the service's logs."""

from __future__ import annotations

import logging
import re

# token= (web and agent WebSockets, WeChat's access_token=) and secret= (WeChat's token request).
_CREDENTIAL = re.compile(r"((?:token|secret)=)[^&\s\"']+")
# uvicorn logs each request line, WebSocket URLs (with their ?token=) included; httpx logs the
# URLs of the requests Baton makes (WeChat's API wants its secret and token in the URL).
_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "httpx")


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` and ``secret=`` parameter replaced by ``***``."""
    return _CREDENTIAL.sub(r"\1***", text)


class CredentialRedactor(logging.Filter):
    """Redacts `redact`'s parameters in every log line that passes through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; always keep it."""
        message = record.getMessage()
        if "token=" in message or "secret=" in message:
            record.msg, record.args = redact(message), None
        return True


def hide_credentials(*names: str) -> None:
    """Install `CredentialRedactor` on the named loggers (default: uvicorn's and httpx's), once each.

    Call it after uvicorn has configured logging, which replaces its loggers' filters.
    """
    for name in names or _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, CredentialRedactor) for existing in logger.filters):
            logger.addFilter(CredentialRedactor())
