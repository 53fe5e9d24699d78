"""Logging helpers: keep credentials out of the service's logs."""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']+")
# uvicorn logs each request line, WebSocket URLs (with their ?token=) included.
_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error")


class TokenRedactor(logging.Filter):
    """Replaces the value of every ``token=`` query parameter in a log line with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; always keep it."""
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN.sub(r"\1***", message), None
        return True


def hide_tokens() -> None:
    """Install `TokenRedactor` on uvicorn's loggers (call it after uvicorn has configured logging)."""
    redactor = TokenRedactor()
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(redactor)
