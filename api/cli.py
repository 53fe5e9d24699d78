"""The ``baton`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from api.rasa_cli import add_commands as add_rasa_commands
from api.rasa_cli import cmd_rasa
from api.settings import Settings
from knowledge_index.encoders import ENCODERS
from knowledge_index.errors import KnowledgeBaseError, Problem

EXIT_BAD_INPUT = 2

DESCRIPTION = """\
Baton: a customer-support bot for Chinese and English with human handoff.

Commands:
  train      train the NLU model and vector index of a knowledge base
  validate   check a knowledge base and report every problem with file and line
  evaluate   train on one Rasa NLU file, score on another, print the metrics
  chat       talk to the bot in the terminal (trains first if needed)
  serve      run the service: chat page, web and app channels (trains first if needed)
  rasa       train and run a Rasa server on a knowledge base (BATON_NLU_ENGINE=rasa uses it)

Settings come from BATON_* environment variables (see README); flags override them.
"""


def _encoder_help() -> str:
    return (
        "sentence encoder; "
        + "; ".join(f"{k}: {v}" for k, v in ENCODERS.items())
        + "; auto picks by language"
    )


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baton", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def kb_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--kb", type=Path, default=settings.kb, help=f"knowledge-base folder (default {settings.kb})"
        )
        p.add_argument(
            "--model-dir",
            type=Path,
            default=settings.model_dir,
            help=f"models folder (default {settings.model_dir})",
        )

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--encoder", default=settings.encoder, help=_encoder_help())
        p.add_argument(
            "--threshold",
            type=float,
            default=settings.fallback_threshold,
            help="fallback confidence threshold, 0-1 (default: chosen from the training data)",
        )

    train = commands.add_parser("train", help="train the NLU model and index of a knowledge base")
    kb_args(train)
    model_args(train)

    validate = commands.add_parser("validate", help="check a knowledge base without training")
    validate.add_argument("--kb", type=Path, default=settings.kb, help="knowledge-base folder")

    evaluate = commands.add_parser(
        "evaluate",
        help="train on one Rasa NLU file, predict another, print metrics",
        description="Train Baton's NLU on TRAIN and score it on TEST (Rasa 3 NLU files). A test example "
        "labelled out_of_scope counts as caught when predicted out_of_scope or nlu_fallback.",
    )
    evaluate.add_argument("--train", type=Path, required=True, help="Rasa NLU YAML to train on")
    evaluate.add_argument(
        "--test",
        type=Path,
        required=True,
        action="append",
        help="Rasa NLU YAML to score (repeat to combine files)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    evaluate.add_argument(
        "--report", type=Path, help="also write a detailed JSON report (confusions, threshold)"
    )
    model_args(evaluate)

    serve = commands.add_parser(
        "serve",
        help="run the service: chat page, web and app channels (trains first if needed)",
        description="Run Baton on one port: the chat page at /, the web chat WebSocket, the app API "
        "and its docs at /docs. Uses REDIS_URL when set, else starts a private Redis under "
        "BATON_DATA_DIR and stops it on exit. Ctrl-C stops everything.",
    )
    kb_args(serve)
    model_args(serve)
    serve.add_argument(
        "--host", default=settings.host, help=f"address to listen on (default {settings.host})"
    )
    serve.add_argument("--port", type=int, default=settings.port, help=f"port (default {settings.port})")
    serve.add_argument("--retrain", action="store_true", help="train even if a current model exists")

    simulate = commands.add_parser(
        "simulate",
        help="run scripted conversations through the whole service and score escalation",
        description="Start the whole service in this process on a fresh store (a private Redis unless "
        "REDIS_URL is set), play each scenario's turns through the turn pipeline with the demo agents "
        "online, and score the handoffs against the scenarios' expectations. Scenario format: README, 'Scenario files'.",
    )
    kb_args(simulate)
    model_args(simulate)
    simulate.add_argument(
        "--scenarios", type=Path, required=True, action="append", help="JSON Lines file (repeat for more)"
    )
    simulate.add_argument("--json", action="store_true", help="print one JSON object with the scores")
    simulate.add_argument("--retrain", action="store_true", help="train even if a current model exists")

    sentiment = commands.add_parser(
        "sentiment",
        help="score a labelled CSV with the escalation's sentiment model",
        description="Score each row of a CSV with columns label (1 positive, 0 negative) and review; a row "
        "is predicted negative when its probability of being negative is at least --threshold. Prints "
        "accuracy, negative_precision and negative_recall.",
    )
    sentiment.add_argument("--csv", type=Path, required=True, help="CSV with columns label,review")
    sentiment.add_argument("--json", action="store_true", help="print one JSON object")
    sentiment.add_argument(
        "--skip-empty", action="store_true", help="leave out rows with an empty review (counted as skipped)"
    )
    sentiment.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability of negative from which a row counts as negative",
    )

    chat = commands.add_parser("chat", help="chat with the bot in the terminal")
    kb_args(chat)
    model_args(chat)
    chat.add_argument("--retrain", action="store_true", help="train even if a current model exists")
    add_rasa_commands(commands, settings)
    return parser


def _fail(problems: list[Problem] | str) -> int:
    if isinstance(problems, str):
        print(f"error: {problems}", file=sys.stderr)
    else:
        print(f"error: refused, {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load_kb(path: Path, settings: Settings):
    from knowledge_index.loader import load_kb

    return load_kb(path, settings.kb_max_file_bytes)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a knowledge base."""
    kb = _load_kb(args.kb, settings)
    intents = kb.nlu.intents
    print(
        f"{args.kb}: OK - {len(intents)} intents, {len(kb.nlu.examples)} examples, "
        f"{len(kb.responses)} responses, {len(kb.articles)} articles"
    )
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train and publish the models of a knowledge base."""
    from bot.trained import train_bot

    kb = _load_kb(args.kb, settings)
    print(
        f"training {args.kb}: {len(kb.nlu.intents)} intents, {len(kb.nlu.examples)} examples ...", flush=True
    )
    started = time.perf_counter()
    trained = train_bot(kb, args.model_dir, args.encoder, args.threshold)
    meta = trained.nlu.meta
    print(
        f"done in {time.perf_counter() - started:.1f} s: encoder {meta['encoder_id']}, "
        f"fallback threshold {trained.nlu.threshold:.2f}, {trained.index.manifest.size} index entries\n"
        f"published {trained.path}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Train on one NLU file and score another."""
    from bot.evaluation import evaluate
    from knowledge_index.model import NLUData
    from knowledge_index.nlu_file import load_nlu_file

    conflicts: list[Problem] = []
    train = load_nlu_file(args.train, settings.kb_max_file_bytes, conflicts)
    test = NLUData()
    for path in args.test:
        test.examples += load_nlu_file(path, settings.kb_max_file_bytes, []).examples
    if conflicts:
        print(
            f"warning: {len(conflicts)} training example(s) appear under two intents, e.g.", file=sys.stderr
        )
        print(f"  {conflicts[0]}", file=sys.stderr)
    try:
        report = evaluate(train, test, args.encoder, args.threshold)
    except ValueError as exc:
        return _fail(str(exc))
    if args.report:
        args.report.write_text(
            json.dumps({"metrics": report.metrics, **report.details}, indent=2, ensure_ascii=False),
            encoding="utf-8",
        )
    if args.json:
        print(json.dumps(report.metrics))
    else:
        for key, value in report.metrics.items():
            print(f"{key:18} {value if value is not None else '-'}")
        print(f"{'encoder':18} {report.details['encoder']}  (threshold {report.details['threshold']})")
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    """An interactive chat with the bot."""
    from bot.reply import ChatSession, render

    trained = _trained_bot(args, settings)
    print("Baton is listening. Type a message in Chinese or English; Ctrl-D or 'quit' to leave.\n")
    # No order connector in the terminal: order-status questions say so instead of inventing a status.
    with ChatSession(trained) as session:
        while True:
            try:
                text = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if text.lower() in {"quit", "exit", "退出"}:
                return 0
            if not text:
                continue
            print(render(session.send(text)), flush=True)


def _trained_bot(args: argparse.Namespace, settings: Settings):
    """The current model of ``args.kb``, trained first if there is none (or ``--retrain``)."""
    from bot.trained import load_bot, train_bot

    kb = _load_kb(args.kb, settings)
    trained = None if args.retrain else load_bot(kb, args.model_dir)
    if trained is None:
        print(f"training {args.kb} (first run, or the knowledge base changed) ...", flush=True)
        trained = train_bot(kb, args.model_dir, args.encoder, args.threshold)
    trained.nlu.warm_up()
    return trained


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the service until Ctrl-C (or SIGTERM)."""
    import logging

    import uvicorn

    from api.app import create_app
    from api.logs import hide_credentials
    from api.service import Service
    from conversations.redis_server import RedisServer

    if not 0 < args.port < 65536:
        return _fail("--port must be between 1 and 65535")
    settings = settings.model_copy(
        update={"kb": args.kb, "model_dir": args.model_dir, "host": args.host, "port": args.port}
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trained = _trained_bot(args, settings)
    redis_server = None
    redis_url = settings.redis_url
    if not redis_url:
        redis_server = RedisServer(data_dir=settings.data_dir / "redis").start()
        redis_url = redis_server.url
        print(f"started a private Redis on {redis_url} (data in {redis_server.data_dir})", flush=True)
    base = f"http://{args.host}:{args.port}"

    async def start_service() -> Service:
        hide_credentials()  # here: uvicorn has set up its loggers by now
        service = await Service.start(settings, trained, redis_url)
        print(
            "\nBaton is ready.\n"
            f"  chat page:   {base}/\n"
            f"  agent desk:  {base}/agent\n"
            f"  supervisor:  {base}/agent/supervisor\n"
            f"  API docs:    {base}/docs\n"
            f"  health:      {base}/healthz\n",
            flush=True,
        )
        return service

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler that
    # was there before it: the default one would end the process before `finally` stops the
    # private Redis. This one makes SIGTERM end the run the way Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        uvicorn.run(
            create_app(start_service), host=args.host, port=args.port, log_level="info", ws="websockets"
        )
    except SystemExit as stopped:
        if stopped.code not in (None, 0):
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if redis_server is not None:
            redis_server.stop()
    return 0


def _exit_quietly(signum: int, frame: object) -> None:
    """A SIGTERM handler: end the command like a normal return (exit status 0)."""
    raise SystemExit(0)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Play scenarios through the whole service and print the escalation scores."""
    import asyncio
    import tempfile

    from api.scenarios import load_scenarios
    from api.simulate import simulate
    from conversations.redis_server import RedisServer

    scenarios = load_scenarios(args.scenarios)  # refused with file:line before anything trains
    trained = _trained_bot(args, settings)
    with tempfile.TemporaryDirectory(prefix="baton-simulate-") as scratch:
        settings = settings.model_copy(
            update={
                "kb": args.kb,
                "data_dir": Path(scratch),
                "assign_workers": 1,
                "rate_limit_messages": 1000,
            }
        )
        server = None if settings.redis_url else RedisServer(data_dir=Path(scratch) / "redis").start()
        redis_url = settings.redis_url or server.url
        if settings.redis_url:  # someone else's Redis: keep this run's keys apart from theirs
            settings = settings.model_copy(update={"redis_prefix": f"baton-simulate-{os.getpid()}:"})
        try:
            result = asyncio.run(simulate(settings, trained, redis_url, scenarios))
        finally:
            if server is not None:
                server.stop()
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for key in (
        "scenarios",
        "automation_rate",
        "escalation_precision",
        "escalation_recall",
        "reason_accuracy",
        "premature_escalations",
        "late_escalations",
        "intent_accuracy",
        "explicit_requests",
        "explicit_caught_on_turn",
        "run_seconds",
    ):
        print(f"{key:24} {result.get(key)}")
    for failure in result.get("failures", []):
        print(f"  miss: {failure}")
    return 0


def cmd_sentiment(args: argparse.Namespace, settings: Settings) -> int:
    """Score a labelled CSV with the sentiment model."""
    from handoff.sentiment import SentimentScorer, evaluate_csv

    if not 0 < args.threshold < 1:
        return _fail("--threshold must be between 0 and 1")
    scorer = SentimentScorer.load(settings.data_dir / "sentiment")
    result = evaluate_csv(args.csv, scorer, args.threshold, skip_empty=args.skip_empty)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20} {value}")
    return 0


COMMANDS = {
    "simulate": cmd_simulate,
    "sentiment": cmd_sentiment,
    "train": cmd_train,
    "validate": cmd_validate,
    "evaluate": cmd_evaluate,
    "chat": cmd_chat,
    "serve": cmd_serve,
    "rasa": cmd_rasa,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``baton`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from installed packages, never a download
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = Settings()
    args = _parser(settings).parse_args(argv)
    if getattr(args, "threshold", None) is not None and not 0 <= args.threshold <= 1:
        return _fail("--threshold must be between 0 and 1")
    try:
        return COMMANDS[args.command](args, settings)
    except KnowledgeBaseError as exc:
        return _fail(exc.problems)
    except ValueError as exc:  # an unknown encoder name, an empty test file, ...
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
