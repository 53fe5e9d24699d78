"""Credentials never reach the logs: tokens in WebSocket URLs, WeChat's secret and access token."""

from __future__ import annotations

import logging

from api.logs import CredentialRedactor, hide_credentials, redact


def test_token_and_secret_values_are_redacted_and_the_rest_kept():
    line = 'GET /ws/web?token=abc.123.def&after=4 and /cgi-bin/token?appid=wx1&secret=s3cr3t "x"'
    assert redact(line) == 'GET /ws/web?token=***&after=4 and /cgi-bin/token?appid=wx1&secret=*** "x"'
    assert redact("POST /custom/send?access_token=T0K3N") == "POST /custom/send?access_token=***"
    assert redact("nothing to hide") == "nothing to hide"


def test_the_filter_rewrites_records_and_is_installed_once():
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: %s", ("/t?secret=xyz",), None
    )
    assert CredentialRedactor().filter(record) and record.getMessage() == "HTTP Request: /t?secret=***"
    logger = logging.getLogger("t-logs-once")
    hide_credentials("t-logs-once")
    hide_credentials("t-logs-once")
    assert sum(isinstance(f, CredentialRedactor) for f in logger.filters) == 1
