"""The agent panel's web pages: plain HTML, CSS and JavaScript modules in ``static/``, no build step.

`api/` serves them: ``/agent`` (the agent desk), ``/agent/supervisor`` and the files under
``/static/agent/``. They talk to the agent API only; everything they show from customers is
inserted as text.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
AGENT_PAGE = STATIC / "agent.html"
SUPERVISOR_PAGE = STATIC / "supervisor.html"

# The pages load only their own scripts and styles and talk only to their own origin, so an
# injected <script> or inline handler would not run even if some text did become markup.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
