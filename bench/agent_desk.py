"""Agent desk benchmark: how fast the agent's page (/agent) shows what happens, in a real browser.

Debian's Chromium (driven by Playwright) keeps the desk open, signed in as the demo agent
``alice``, online; web visitors over WebSocket escalate one after another. Everything runs
on 127.0.0.1 against a `baton serve --kb nlu_data` that this benchmark starts (its own
redis-server in a temporary folder, the default ``assign`` routing, the demo agents) and
stops. The machine should be otherwise idle: these are the desk's own times, not figures
under load (bench/handoff_latency.py measures the handoff under load).

What it measures, per escalation (--chats of them, default 30):

- ``shown``: the visitor sends "talk to a human" (after one ordinary question the bot
  answers) -> the chat is in the desk's "My chats" list;
- ``opened``: -> the chat is open with that message in its transcript (the handoff package
  fetched and drawn);
- ``message``: the visitor writes again -> the message is in the open transcript;
- ``suggestions``: -> the suggested replies are redrawn for it (the service parses the message,
  scores its sentiment and ranks replies, then sends an "understood" frame);
- ``reply``: the agent presses Enter on a reply -> the visitor's socket has it;
- ``resolve``: the agent clicks Resolve -> the visitor's socket has the rating request.

And ``desk_ready``: a reload of the signed-in desk -> its live socket is open (--loads times).

Clocks: the visitor's times are time.time() when its reader thread gets a frame, the page's are
Date.now() in a MutationObserver; one machine, one clock. Percentiles are nearest-rank. The
issue's bound is the 1 s from escalation to the desk showing the handoff (``shown``).

Usage: .venv/bin/python bench/agent_desk.py [--chats 30] [--loads 10] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from handoff_latency import StartedService  # bench/ is on sys.path when run as a script
from playwright.sync_api import Page, sync_playwright
from web_load import BenchmarkError, distribution, machine
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
WAIT_S = 30.0
QUESTIONS = ("how much is shipping?", "退款多久到账", "how do I return a jacket?", "可以开发票吗")
FOLLOW_UPS = ("my order LM2024051234 has not arrived", "我的订单LM2024051234还没到", "can I get a refund?")

# Playwright's string expressions would need eval, which the desk's CSP forbids: every script
# handed to the page below is a function.
# The page records when things appear: chats in the list, turns in the open transcript, each
# redraw of the suggestions, the live socket opening.
RECORDER = """
window.__marks = {};
window.__suggested = [];
const mark = (key) => { if (!(key in window.__marks)) window.__marks[key] = Date.now(); };
new MutationObserver((records) => {
  for (const item of document.querySelectorAll('#chats .item')) mark('listed:' + item.dataset.conversationId);
  const open = decodeURIComponent(location.hash.replace('#/c/', ''));
  for (const turn of document.querySelectorAll('#transcript .turn')) mark('turn:' + open + ':' + turn.dataset.seq);
  if (records.some((r) => r.target.id === 'suggestion-list')) window.__suggested.push(Date.now());
  if (document.body?.dataset.connection === 'open') mark('socket-open');
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-connection']});
"""


class Visitor:
    """A web chat visitor whose reader thread timestamps every frame as it arrives."""

    def __init__(self, url: str) -> None:
        session = httpx.post(f"{url}/api/v1/web/session", json={}, timeout=WAIT_S)
        session.raise_for_status()
        ws_url = url.replace("http://", "ws://") + f"/ws/web?token={session.json()['token']}"
        self.ws: ClientConnection = connect(ws_url, open_timeout=WAIT_S)
        self.frames: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the socket closing ends the thread
            for text in self.ws:
                self.frames.put((time.time(), json.loads(text)))

    def send(self, text: str) -> float:
        """Send a message; returns the moment it went out (epoch seconds)."""
        frame = {"type": "message", "text": text, "client_message_id": uuid.uuid4().hex}
        sent = time.time()
        self.ws.send(json.dumps(frame, ensure_ascii=False))
        return sent

    def wait(self, test: Any) -> tuple[float, dict[str, Any]]:
        """The first frame passing ``test`` (and when it arrived); earlier frames are dropped."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                at, frame = self.frames.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if test(frame):
                return at, frame
        raise BenchmarkError("the visitor did not get the expected frame in time")

    def close(self) -> None:
        self.ws.close()


def is_ack(frame: dict[str, Any]) -> bool:
    return frame["type"] == "ack"


def is_turn(sender: str, rating: bool = False) -> Any:
    def test(frame: dict[str, Any]) -> bool:
        if frame["type"] != "turn" or frame["turn"]["sender"] != sender:
            return False
        return not rating or any(b["payload"].startswith("/rate_") for b in frame["turn"]["buttons"])

    return test


def page_mark(page: Page, key: str) -> float:
    """When the page recorded ``key`` (epoch seconds), waiting for it up to WAIT_S."""
    page.wait_for_function("(key) => key in window.__marks", arg=key, timeout=WAIT_S * 1000)
    return page.evaluate("(key) => window.__marks[key]", key) / 1000


def first_suggestion_redraw_after(page: Page, moment: float) -> float:
    """The first redraw of the suggestions after ``moment`` (epoch seconds)."""
    after = moment * 1000
    page.wait_for_function("(t) => window.__suggested.some((x) => x >= t)", arg=after, timeout=WAIT_S * 1000)
    return page.evaluate("(t) => window.__suggested.find((x) => x >= t)", after) / 1000


def one_chat(page: Page, url: str, n: int) -> dict[str, float]:
    """One escalation, answered and resolved on the desk; its times in seconds."""
    visitor = Visitor(url)
    try:
        visitor.send(QUESTIONS[n % len(QUESTIONS)])
        visitor.wait(is_turn("bot"))
        escalated = visitor.send("转人工" if n % 2 else "talk to a human")
        _, ack = visitor.wait(is_ack)
        conversation_id, seq = ack["conversation_id"], ack["seq"]
        shown = page_mark(page, f"listed:{conversation_id}")
        opened = page_mark(page, f"turn:{conversation_id}:{seq}")

        written = visitor.send(FOLLOW_UPS[n % len(FOLLOW_UPS)])
        _, ack = visitor.wait(is_ack)
        message = page_mark(page, f"turn:{conversation_id}:{ack['seq']}")
        suggested = first_suggestion_redraw_after(page, written)

        page.locator(".suggestion").first.click()
        page.locator("#reply").press("End")
        page.locator("#reply").type(" 🙂")
        replied = time.time()
        page.locator("#reply").press("Enter")
        reply_at, _ = visitor.wait(is_turn("agent"))

        resolved = time.time()
        page.locator("#resolve").click()
        rating_at, _ = visitor.wait(is_turn("system", rating=True))
    finally:
        visitor.close()
    return {
        "shown": shown - escalated,
        "opened": opened - escalated,
        "message": message - written,
        "suggestions": suggested - written,
        "reply": reply_at - replied,
        "resolve": rating_at - resolved,
    }


def desk_ready(page: Page) -> float:
    """Reload the signed-in desk; seconds from the navigation to its live socket being open."""
    page.reload()
    page.wait_for_function("() => 'socket-open' in window.__marks", timeout=WAIT_S * 1000)
    started = page.evaluate("() => performance.timeOrigin")
    return (page.evaluate("() => window.__marks['socket-open']") - started) / 1000


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/agent")
    page.locator("input[name=agent_id]").fill("alice")
    page.locator("input[name=password]").fill("alice-demo")
    page.locator("#signin-form button[type=submit]").click()
    page.wait_for_function("() => document.body.dataset.connection === 'open'", timeout=WAIT_S * 1000)
    page.locator("#online").check()
    page.wait_for_function("() => document.getElementById('online-label').textContent === 'Online'")


def run(args: argparse.Namespace) -> dict[str, Any]:
    service = StartedService(ROOT / "nlu_data", args.model_dir, "baton:", keep=False)
    service.settings["BATON_SEED_DEMO_AGENTS"] = "true"
    service.start(timeout=300)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.add_init_script(RECORDER)
            sign_in(page, service.url)
            loads = [desk_ready(page) for _ in range(args.loads)]
            page.locator("#online").check()  # a reload keeps the agent online; this is a no-op then
            chats = [one_chat(page, service.url, n) for n in range(args.chats)]
            browser.close()
    finally:
        service.stop()
    return {
        "benchmark": "agent_desk",
        "command": " ".join(sys.argv),
        "service": service.describe(),
        "machine": machine(),
        "chats": args.chats,
        "desk_ready_ms": distribution(loads),
        **{f"{name}_ms": distribution([c[name] for c in chats]) for name in chats[0]},
        "target": {"shown_ms_max": 1000},
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/agent_desk.py",
        description="How fast the agent desk shows handoffs, messages and suggestions, in Chromium.",
    )
    p.add_argument("--chats", type=int, default=30, help="escalations, one after another (default 30)")
    p.add_argument("--loads", type=int, default=10, help="reloads of the desk to time (default 10)")
    p.add_argument(
        "--model-dir", type=Path, default=ROOT / "var" / "models", help="trained models (default var/models)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.chats < 1 or args.loads < 1:
        print("error: --chats and --loads must be at least 1", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"agent desk, {result['chats']} escalations ({result['machine'].get('nproc')} CPUs)")
    for name, values in result.items():
        if name.endswith("_ms"):
            cells = "  ".join(f"{k} {v:8.1f}" for k, v in values.items() if isinstance(v, int | float))
            print(f"  {name[:-3]:<12} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
