"""The agent panel's pages as the service serves them: headers, and every module they load."""

from __future__ import annotations

import re

import httpx
import pytest

from agent_assist.panel import STATIC

IMPORT = re.compile(r"""^import .* from '\./([\w-]+\.js)';$|^} from '\./([\w-]+\.js)';$""", re.MULTILINE)
PAGE_ASSET = re.compile(r"""(?:src|href)="(/static/agent/[\w/.-]+)\"""")


@pytest.mark.parametrize("path", ["/agent", "/agent/supervisor"])
def test_the_pages_are_served_with_a_policy_that_runs_only_their_own_scripts(baton_service, path):
    page = httpx.get(f"{baton_service.url}{path}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assets = PAGE_ASSET.findall(page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert httpx.get(f"{baton_service.url}{asset}").status_code == 200, asset


def test_every_module_a_page_imports_is_served_as_javascript(baton_service):
    modules = sorted((STATIC / "js").glob("*.js"))
    assert modules
    for module in modules:
        for name in (a or b for a, b in IMPORT.findall(module.read_text(encoding="utf-8"))):
            answer = httpx.get(f"{baton_service.url}/static/agent/js/{name}")
            assert answer.status_code == 200, f"{module.name} imports {name}, which is not served"
            assert "javascript" in answer.headers["content-type"]
