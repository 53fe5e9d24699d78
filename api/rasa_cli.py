"""``baton rasa train`` and ``baton rasa serve``: a Rasa server for a Baton knowledge base.

Rasa runs from its own venv (``BATON_RASA_VENV``, built by ``make rasa-venv``) in child
processes; this module only prepares the workspace (`bot.rasa_project`), runs them, waits
until the server has a model loaded, and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from api.auth import rasa_token
from api.settings import Settings
from bot.nlu.rasa_client import RasaNLU
from bot.rasa_project import (
    CONFIGS,
    RASA_DIR,
    RasaSetupError,
    Workspace,
    actions_command,
    prepare,
    rasa_binary,
    rasa_environment,
    server_command,
    train_command,
)

READY_SECONDS = 240.0  # a Rasa server loads TensorFlow and its model: ~35 s on 2 cores, more when busy
_STOP_SECONDS = 20.0


def add_commands(commands: argparse._SubParsersAction, settings: Settings) -> None:
    """Add ``baton rasa train`` and ``baton rasa serve`` to the ``baton`` parser's ``commands``."""
    rasa = commands.add_parser(
        "rasa",
        help="train and run a Rasa server on a knowledge base (Rasa as Baton's NLU engine)",
        description="Rasa Open Source 3.6 as Baton's second NLU engine, from the Rasa venv that "
        "`make rasa-venv` builds (Python 3.10). The knowledge base trains Rasa as it is.",
    )
    actions = rasa.add_subparsers(dest="rasa_command", required=True, metavar="ACTION")
    for name, text in (
        ("train", "train a Rasa model on the knowledge base (skipped when nothing changed)"),
        ("serve", "train if needed, then run the Rasa server and Baton's action server until Ctrl-C"),
    ):
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument(
            "--kb", type=Path, default=settings.kb, help=f"knowledge-base folder (default {settings.kb})"
        )
        p.add_argument("--epochs", type=int, help="DIET's and the ResponseSelector's epochs (default 100)")
        p.add_argument(
            "--config",
            choices=sorted(CONFIGS),
            default="mixed",
            help="mixed: Chinese and English (Jieba); en: Rasa's standard English pipeline",
        )
        if name == "serve":
            p.add_argument("--port", type=int, default=5005, help="the Rasa server's port (default 5005)")
            p.add_argument(
                "--actions-port", type=int, default=5055, help="the action server's port (default 5055)"
            )
            p.add_argument(
                "--baton-url",
                default=f"http://127.0.0.1:{settings.port}",
                help="where Baton's actions reach Baton (default: this machine's baton serve)",
            )


def cmd_rasa(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``baton rasa train`` or ``baton rasa serve``; 2 with a clear message when Rasa cannot run."""
    try:
        for port in (getattr(args, "port", 1), getattr(args, "actions_port", 1)):
            if not 0 < port < 65536:  # checked before training, which takes minutes
                raise RasaSetupError(f"port {port} is not between 1 and 65535")
        rasa = rasa_binary(settings.rasa_venv)
        workspace = prepare(
            args.kb, settings.data_dir / "rasa" / Path(args.kb).resolve().name, args.epochs, args.config
        )
        _train(rasa, workspace)
        if args.rasa_command == "train":
            print(f"Rasa model: {workspace.model}")
            return 0
        return _serve(rasa, workspace, args, settings)
    except RasaSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(rasa: Path, workspace: Workspace) -> None:
    print(
        f"training Rasa in {workspace.root} (the first epoch of each model is slow: TensorFlow compiles it)"
    )
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
    done = subprocess.run(train_command(rasa, workspace), cwd=workspace.root, env=env, check=False)
    if done.returncode != 0 or not workspace.model.exists():
        raise RasaSetupError(f"rasa train failed (exit status {done.returncode}); see its output above")


def _serve(rasa: Path, workspace: Workspace, args: argparse.Namespace, settings: Settings) -> int:
    from conversations.redis_server import RedisServer

    redis_server = None
    redis_url = settings.redis_url
    if not redis_url:  # Rasa's tracker and lock stores need a Redis: a private one, apart from Baton's
        redis_server = RedisServer(data_dir=settings.data_dir / "rasa" / "redis").start()
        redis_url = redis_server.url
    token = rasa_token(settings)
    actions_token = settings.rasa_actions_token.get_secret_value() if settings.rasa_actions_token else None
    env = {
        **os.environ,
        **rasa_environment(
            redis_url, f"http://127.0.0.1:{args.actions_port}/webhook", args.baton_url, actions_token
        ),
    }
    children: list[subprocess.Popen[bytes]] = []
    previous = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        children.append(subprocess.Popen(actions_command(rasa, args.actions_port), cwd=RASA_DIR, env=env))
        children.append(
            subprocess.Popen(
                server_command(rasa, workspace.model, args.port, token), cwd=workspace.root, env=env
            )
        )
        url = f"http://127.0.0.1:{args.port}"
        _wait_ready(url, token, children)
        print(
            f"\nRasa is ready at {url} (actions at http://127.0.0.1:{args.actions_port}).\n"
            f"  Baton uses it with: BATON_NLU_ENGINE=rasa BATON_RASA_URL={url} baton serve\n"
            + (
                ""
                if settings.rasa_token
                else f"  (the auth token is kept in {settings.data_dir / 'rasa_token'})\n"
            ),
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("error: a Rasa process stopped; stopping the other")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in children:
            _stop(child)
        if redis_server is not None:
            redis_server.stop()


def _wait_ready(url: str, token: str, children: list[subprocess.Popen[bytes]]) -> None:
    """Until ``GET /status`` shows a loaded model.

    Raises:
        RasaSetupError: a process ended, or the server was not ready within `READY_SECONDS`.
    """
    deadline = time.monotonic() + READY_SECONDS
    with RasaNLU(url, token, timeout=2) as rasa:
        while time.monotonic() < deadline:
            if any(child.poll() is not None for child in children):
                raise RasaSetupError("a Rasa process ended while starting; see its output above")
            if rasa.ready():
                return
            time.sleep(1)
    raise RasaSetupError(f"the Rasa server at {url} was not ready after {READY_SECONDS:g} s")


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
