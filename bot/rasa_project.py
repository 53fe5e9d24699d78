"""The Rasa project of ``bot/rasa/``: training a knowledge base with Rasa and the commands that serve it.

Rasa lives in its own Python 3.10 venv (``.venv-rasa``, built by ``make rasa-venv``), so Baton
never imports it: it prepares a workspace and runs Rasa's command line. The knowledge base is
used as it is: its ``nlu.yml`` is Rasa's training data and its ``domain.yml`` is merged by Rasa
with ``bot/rasa/domain.yml`` (Baton's actions), so a knowledge base trains Baton and Rasa alike.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

RASA_DIR = Path(__file__).resolve().parent / "rasa"
CONFIGS = {"mixed": RASA_DIR / "config.yml", "en": RASA_DIR / "config-en.yml"}
# The components whose training length is set by `prepare(epochs=...)`.
_TRAINED_COMPONENTS = ("DIETClassifier", "ResponseSelector")
MODEL_NAME = "baton"


class RasaSetupError(RuntimeError):
    """Rasa cannot be run: no Rasa venv, or a knowledge base without Rasa's files."""


@dataclass(frozen=True)
class Workspace:
    """The files one ``rasa train`` reads, and where its model goes."""

    root: Path
    config: Path
    domain: Path  # a folder: Rasa merges every domain file in it
    data: tuple[Path, ...]
    models: Path

    @property
    def model(self) -> Path:
        """The trained model's file."""
        return self.models / f"{MODEL_NAME}.tar.gz"


def rasa_binary(venv: Path) -> Path:
    """The ``rasa`` command of the Rasa venv.

    Raises:
        RasaSetupError: the venv has no ``rasa`` (build it with ``make rasa-venv``).
    """
    binary = (Path(venv) / "bin" / "rasa").absolute()  # Rasa runs in its workspace, not here
    if not binary.exists():
        raise RasaSetupError(
            f"no Rasa in {venv} (looked for {binary}); build it with `make rasa-venv`, "
            "which needs Python 3.10 (Rasa 3.6 does not run on 3.11)"
        )
    return binary


def prepare(kb: Path, root: Path, epochs: int | None = None, config: str = "mixed") -> Workspace:
    """Write the training workspace for ``kb`` under ``root``.

    Args:
        kb: a knowledge-base folder (``nlu.yml``, ``domain.yml``).
        root: the workspace folder (created; its config and domain are rewritten).
        epochs: DIET's and the ResponseSelector's epochs (None: the config's own, 100).
        config: ``mixed`` (Chinese and English, Jieba) or ``en`` (Rasa's standard English pipeline).

    Raises:
        RasaSetupError: ``kb`` lacks ``nlu.yml`` or ``domain.yml``, or ``config`` is unknown.
    """
    kb = Path(kb).resolve()
    for name in ("nlu.yml", "domain.yml"):
        if not (kb / name).is_file():
            raise RasaSetupError(
                f"{kb} has no {name}: Rasa trains on a knowledge base's nlu.yml and domain.yml"
            )
    if config not in CONFIGS:
        raise RasaSetupError(f"unknown Rasa config {config!r}; expected one of {', '.join(CONFIGS)}")
    if epochs is not None and epochs < 1:
        raise RasaSetupError("epochs must be at least 1")
    root = Path(root).resolve()
    domain = root / "domain"
    shutil.rmtree(domain, ignore_errors=True)
    domain.mkdir(parents=True)
    shutil.copyfile(kb / "domain.yml", domain / "knowledge_base.yml")
    shutil.copyfile(RASA_DIR / "domain.yml", domain / "baton_actions.yml")
    config_path = write_config(root / "config.yml", config, epochs)
    return Workspace(root, config_path, domain, (kb / "nlu.yml", RASA_DIR / "data"), root / "models")


def write_config(path: Path, config: str = "mixed", epochs: int | None = None) -> Path:
    """Write one of `CONFIGS` to ``path``, with DIET's and the ResponseSelector's ``epochs`` if given."""
    settings = yaml.safe_load(CONFIGS[config].read_text(encoding="utf-8"))
    if epochs is not None:
        for component in settings["pipeline"]:
            if component["name"] in _TRAINED_COMPONENTS:
                component["epochs"] = epochs
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def train_command(rasa: Path, workspace: Workspace) -> list[str]:
    """``rasa train`` for ``workspace`` (Rasa skips the work when nothing changed since the last model)."""
    return [
        str(rasa),
        "train",
        "--config",
        str(workspace.config),
        "--domain",
        str(workspace.domain),
        "--data",
        *map(str, workspace.data),
        "--out",
        str(workspace.models),
        "--fixed-model-name",
        MODEL_NAME,
    ]


def server_command(rasa: Path, model: Path, port: int, token: str, host: str = "127.0.0.1") -> list[str]:
    """``rasa run`` with its HTTP API on ``host:port``, guarded by ``token``."""
    return [
        str(rasa),
        "run",
        "--enable-api",
        "--interface",
        host,
        "--port",
        str(port),
        "--auth-token",
        token,
        "--model",
        str(model),
        "--endpoints",
        str(RASA_DIR / "endpoints.yml"),
    ]


def actions_command(rasa: Path, port: int) -> list[str]:
    """Rasa's action server with Baton's actions (run it in `RASA_DIR`; `rasa_environment` binds it)."""
    return [str(rasa), "run", "actions", "--actions", "actions", "--port", str(port)]


def rasa_environment(
    redis_url: str, actions_url: str, baton_url: str, actions_token: str | None, host: str = "127.0.0.1"
) -> dict[str, str]:
    """The variables ``bot/rasa/endpoints.yml`` and Baton's actions read, for Rasa's processes.

    Raises:
        RasaSetupError: ``redis_url`` is not a ``redis://host:port/db`` address.
    """
    parts = urlsplit(redis_url)
    if parts.scheme != "redis" or not parts.hostname:
        raise RasaSetupError(f"Rasa's tracker store needs a redis://host:port/db address, not {redis_url!r}")
    database = parts.path.strip("/") or "0"
    return {
        "RASA_TELEMETRY_ENABLED": "false",
        "REDIS_HOST": parts.hostname,
        "REDIS_PORT": str(parts.port or 6379),
        "REDIS_DB": database,
        "BATON_ACTIONS_URL": actions_url,
        "BATON_URL": baton_url,
        "BATON_RASA_ACTIONS_TOKEN": actions_token or "",
        "SANIC_HOST": host,  # rasa-sdk binds 0.0.0.0 unless told otherwise
    }
