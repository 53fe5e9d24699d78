"""WeChat callback benchmark: how often, and how fast, a follower's question is answered in the callback.

WeChat waits 5 seconds for the callback's answer; Baton answers passively when the bot's reply
is ready within BATON_WECHAT_REPLY_SECONDS (4 s), else it answers ``success`` and sends the reply
through the customer-service API a moment later. The passive reply is the better one for the
follower (at once, no API quota used), so the figures are: the share of questions answered
passively, and the callback's response time (p50, p90, p99, max), under a steady load.

What it does, on 127.0.0.1: starts its own redis-server and `baton serve --kb nlu_data` with
the WeChat channel on (plaintext mode; WeChat's API pointed at a closed port: nothing here
needs it, since plain FAQ questions never escalate), then --followers followers each post a
signed text message every --interval seconds (+-25 % jitter, open loop) for --seconds. The
questions are the faq/* examples of nlu_data without any that asks for a person
(bench/handoff_latency.py's `load_questions`), half the followers in Chinese, half in English;
a follower does not come back to one of its last 10 topics and says "thanks" after every 6
questions, as people do, so no conversation is handed over.

Usage: .venv/bin/python bench/wechat_callback.py [--followers 50] [--interval 2] [--seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import Any

import httpx
from handoff_latency import StartedService, load_questions  # bench/ is on sys.path when run as a script
from web_load import BenchmarkError, distribution, free_port, machine

from api.channels.wechat_crypto import signature
from api.channels.wechat_xml import cdata, parse

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-wechat-token"
APP_ID = "wx0000000000bench"
THANKS_EVERY = 6
RECENT_TOPICS = 10


def message_xml(openid: str, text: str) -> bytes:
    """The XML WeChat posts for a follower's text message."""
    created = int(time.time())
    return (
        f"<xml><ToUserName>{cdata('gh_bench')}</ToUserName><FromUserName>{cdata(openid)}</FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(text)}</Content><MsgId>{uuid.uuid4().int % 10**19}</MsgId></xml>"
    ).encode()


async def follower(
    client: httpx.AsyncClient,
    url: str,
    questions: dict[str, list[str]],
    args: argparse.Namespace,
    results: list[dict[str, Any]],
) -> None:
    """One follower: a question every ``interval`` seconds until the run ends.

    ``questions`` maps FAQ intents to examples in the follower's language. A follower never comes
    back to one of its last `RECENT_TOPICS` topics: the repeated-question rule would hand it over.
    """
    openid = f"o{uuid.uuid4().hex[:27]}"
    end = time.monotonic() + args.seconds
    recent: deque[str] = deque(maxlen=RECENT_TOPICS)
    await asyncio.sleep(random.uniform(0, args.interval))  # spread the followers out
    sent = 0
    while time.monotonic() < end:
        sent += 1
        if sent % (THANKS_EVERY + 1) == 0:
            text = "thanks"
        else:
            topic = random.choice([intent for intent in questions if intent not in recent])
            recent.append(topic)
            text = random.choice(questions[topic])
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:8]
        params = {"signature": signature(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        started = time.perf_counter()
        try:
            answer = await client.post(url, params=params, content=message_xml(openid, text))
            seconds = time.perf_counter() - started
            passive = (
                answer.status_code == 200 and answer.text != "success" and "Content" in parse(answer.content)
            )
            results.append({"seconds": seconds, "status": answer.status_code, "passive": passive})
        except httpx.HTTPError as exc:
            results.append(
                {"seconds": time.perf_counter() - started, "status": 0, "passive": False, "error": str(exc)}
            )
        await asyncio.sleep(args.interval * random.uniform(0.75, 1.25))


async def load(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every follower at once; the results of every message."""
    by_language = load_questions(ROOT / "nlu_data" / "nlu.yml")
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=args.followers + 10)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        await asyncio.gather(
            *(
                follower(client, url, by_language["zh" if n % 2 else "en"], args, results)
                for n in range(args.followers)
            )
        )
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    service = StartedService(ROOT / "nlu_data", args.model_dir, "baton:", keep=False)
    service.settings.update(
        BATON_WECHAT_TOKEN=TOKEN,
        BATON_WECHAT_APP_ID=APP_ID,
        BATON_WECHAT_APP_SECRET="unused",
        BATON_WECHAT_API_BASE=f"http://127.0.0.1:{free_port()}",  # nothing listens: no API call expected
    )
    service.start(timeout=300)
    try:
        results = asyncio.run(load(f"{service.url}/channels/wechat", args))
    finally:
        service.stop()
    answered = [r for r in results if r["status"] == 200]
    return {
        "benchmark": "wechat_callback",
        "command": " ".join(sys.argv),
        "service": service.describe(),
        "machine": machine(),
        "followers": args.followers,
        "interval_seconds": args.interval,
        "seconds": args.seconds,
        "messages": len(results),
        "messages_per_second": round(len(results) / args.seconds, 1),
        "errors": len(results) - len(answered),
        "errors_by_status": dict(Counter(str(r["status"]) for r in results if r["status"] != 200)),
        "error_samples": sorted({r.get("error", "")[:120] for r in results if r["status"] == 0})[:5],
        "passive_share": round(sum(r["passive"] for r in answered) / len(answered), 4) if answered else None,
        "over_5_seconds": sum(r["seconds"] > 5 for r in results),
        # Answered in a callback WeChat had stopped waiting for: the follower would never see it.
        "passive_over_5_seconds": sum(r["seconds"] > 5 and r["passive"] for r in results),
        "callback_ms": distribution(r["seconds"] for r in answered),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/wechat_callback.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--followers", type=int, default=50, help="followers writing at once (default 50)")
    p.add_argument(
        "--interval", type=float, default=2.0, help="seconds between a follower's messages (default 2)"
    )
    p.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts (default 60)")
    p.add_argument(
        "--model-dir", type=Path, default=ROOT / "var" / "models", help="trained models (default var/models)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.followers < 1 or args.interval <= 0 or args.seconds <= 0:
        print("error: --followers, --interval and --seconds must be positive", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    ms = result["callback_ms"]
    print(
        f"{result['messages']} messages ({result['messages_per_second']}/s) from {result['followers']} followers: "
        f"{result['passive_share']:.1%} answered in the callback, {result['errors']} errors, "
        f"{result['over_5_seconds']} over 5 s; callback p50 {ms['p50']} ms, p99 {ms['p99']} ms, max {ms['max']} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
