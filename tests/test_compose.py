"""docker-compose.yml, the Dockerfile and .dockerignore: what a deployment relies on, checked without Docker.

Docker does not run in the test environment, so these tests read the files and check that
they agree with each other and with the repository: services, profiles, volumes, ports,
healthchecks, the paths that are mounted and the variables that are interpolated.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, ${VAR:+x}, $VAR
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


# -- helpers: the long and short forms of Compose's settings, read the same way ------------------


def _environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {k: None if v is None else str(v) for k, v in env.items()}
    pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {name: value for name, value in pairs}


def _mounts(service: dict) -> list[dict]:
    """Each mount as {type, source, target, read_only} (short `src:dst[:mode]` or long syntax)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append(
                {
                    "type": entry.get("type", "volume"),
                    "source": entry.get("source"),
                    "target": entry["target"],
                    "read_only": bool(entry.get("read_only", False)),
                }
            )
            continue
        parts = entry.split(":")
        if len(parts) == 1:  # an anonymous volume
            mounts.append({"type": "volume", "source": None, "target": parts[0], "read_only": False})
            continue
        source, target = parts[0], parts[1]
        modes = parts[2].split(",") if len(parts) > 2 else []
        is_path = source.startswith((".", "/", "~"))
        mounts.append(
            {
                "type": "bind" if is_path else "volume",
                "source": source,
                "target": target,
                "read_only": "ro" in modes,
            }
        )
    return mounts


def _ports(service: dict) -> list[dict]:
    """Each published port as {host_ip, published, target}."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(
                {
                    "host_ip": entry.get("host_ip"),
                    "published": str(entry.get("published")),
                    "target": int(entry["target"]),
                }
            )
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        target = int(parts[-1])
        published = parts[-2] if len(parts) >= 2 else None
        host_ip = parts[0] if len(parts) == 3 else None
        ports.append({"host_ip": host_ip, "published": published, "target": target})
    return ports


def _container_ports(service: dict) -> set[int]:
    """The ports a service offers to the others: published ones and `expose`."""
    exposed = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    return exposed | {p["target"] for p in _ports(service)}


def _command_text(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(map(str, command))


def _command_words(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _interpolations(text: str) -> list[tuple[str, bool]]:
    """Every variable Compose interpolates in ``text``, with whether it has a default."""
    text = text.replace("$$", "")  # an escaped dollar reaches the container; Compose leaves it
    found = []
    for match in _INTERPOLATION.finditer(text):
        name = match.group(1) or match.group(3)
        operator = match.group(2) or ""
        found.append((name, "-" in operator))
    return found


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            keyword, _, arguments = current.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def _dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def _exec_form(arguments: str) -> list[str]:
    """The words of a CMD / ENTRYPOINT / HEALTHCHECK CMD, exec form (JSON) or shell form."""
    arguments = arguments.strip()
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def _settings_env_names() -> set[str]:
    """Every environment variable Baton's settings read."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names.add(choice.upper())
    return names


def _strings(node: object) -> list[str]:
    """Every string value in a parsed YAML document (comments are gone by then)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return [node] if isinstance(node, str) else []


def _url_of(value: str | None) -> str:
    """The URL in an environment value, taking the default of a ``${VAR:-default}``."""
    assert value, "expected a URL"
    match = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}", value)
    return match.group(1) if match else value


# -- the services ----------------------------------------------------------------------------------


def test_the_file_follows_the_compose_spec_without_a_version(compose: dict) -> None:
    assert "version" not in compose  # obsolete in the Compose spec; Compose v2 warns about it


def test_services_and_profiles(services: dict) -> None:
    assert {"redis", "baton", "rasa", "rasa-actions"} <= set(services)
    for name in ("redis", "baton"):
        assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"
    for name in ("rasa", "rasa-actions"):
        assert services[name].get("profiles") == ["rasa"], f"{name} belongs to the rasa profile only"


def test_every_service_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test, f"{name} has no healthcheck test"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: {test}"


def test_redis_keeps_an_append_only_file_on_a_named_volume(compose: dict, services: dict) -> None:
    redis = services["redis"]
    assert redis["image"].split(":")[0] == "redis"
    words = _command_words(redis)
    assert "--appendonly" in words and words[words.index("--appendonly") + 1] == "yes", words
    data = [m for m in _mounts(redis) if m["target"] == "/data"]
    assert len(data) == 1 and data[0]["type"] == "volume", "Redis's /data must be a named volume"
    assert data[0]["source"] in (compose.get("volumes") or {})
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"]) and "ping" in " ".join(
        redis["healthcheck"]["test"]
    )


def test_baton_waits_for_a_healthy_redis_and_uses_it(services: dict) -> None:
    baton = services["baton"]
    depends = baton.get("depends_on")
    assert isinstance(depends, dict), "depends_on needs the long form to wait for health"
    assert depends["redis"]["condition"] == "service_healthy"
    url = urlsplit(_environment(baton)["REDIS_URL"])
    assert url.scheme == "redis" and url.hostname == "redis"
    assert (url.port or 6379) == 6379
    assert baton.get("restart") == "unless-stopped"


def test_baton_publishes_its_port_and_checks_healthz(services: dict) -> None:
    baton = services["baton"]
    env = _environment(baton)
    port = int(env.get("BATON_PORT") or Settings.model_fields["port"].default)
    published = [p for p in _ports(baton) if p["target"] == port]
    assert published and published[0]["published"] == "8000", _ports(baton)
    assert env.get("BATON_HOST") == "0.0.0.0", "in a container, loopback is not reachable from outside"
    check = " ".join(baton["healthcheck"]["test"])
    assert f":{port}/healthz" in check
    assert '"/healthz"' in (ROOT / "api" / "app.py").read_text(encoding="utf-8")


def test_baton_keeps_its_models_and_secret_key_on_a_named_volume(
    services: dict, dockerfile: list[tuple[str, str]]
) -> None:
    baton = services["baton"]
    env = {**_dockerfile_env(dockerfile), **{k: v for k, v in _environment(baton).items() if v}}
    volumes = [m for m in _mounts(baton) if m["type"] == "volume" and m["source"]]
    for setting in ("BATON_DATA_DIR", "BATON_MODEL_DIR"):
        folder = Path(env[setting])
        assert folder.is_absolute(), f"{setting}={folder} would depend on the working directory"
        assert any(folder.is_relative_to(m["target"]) for m in volumes), (
            f"{setting}={folder} is not on a named volume: trained models would be lost with the container"
        )


def test_baton_reads_only_settings_that_exist(services: dict) -> None:
    known = _settings_env_names()
    unknown = set(_environment(services["baton"])) - known
    assert not unknown, f"baton's environment names settings Baton does not have: {sorted(unknown)}"


def test_baton_can_use_the_rasa_service_as_its_engine(services: dict) -> None:
    env = _environment(services["baton"])
    engine = env["BATON_NLU_ENGINE"]
    assert _interpolations(engine) == [("BATON_NLU_ENGINE", True)], "the user chooses the engine"
    assert _url_of(engine) == "baton", "without the rasa profile Baton's own engine answers"
    rasa_url = urlsplit(_url_of(env["BATON_RASA_URL"]))
    assert rasa_url.hostname == "rasa"
    assert rasa_url.port in _container_ports(services["rasa"])
    # One variable for both ends, so Baton's token is the one the Rasa server requires.
    rasa_env = _environment(services["rasa"])
    token_vars = {name for name, _ in _interpolations(env["BATON_RASA_TOKEN"])}
    assert token_vars and token_vars == {name for name, _ in _interpolations(rasa_env["RASA_TOKEN"])}
    assert '"$$RASA_TOKEN"' in _command_text(services["rasa"]), "rasa run must require the token"


def test_secrets_are_passed_on_only_when_set(services: dict) -> None:
    # `${VAR:-}` would hand Baton an empty secret (an empty signing key), not no secret.
    env = _environment(services["baton"])
    for name in ("BATON_SECRET_KEY", "BATON_APP_SECRET", "BATON_WECHAT_TOKEN", "BATON_WECHAT_AES_KEY"):
        assert name in env and env[name] is None, f"{name}: pass it on by name only"


def test_rasa_server(services: dict) -> None:
    rasa = services["rasa"]
    image, _, tag = rasa["image"].partition(":")
    assert image == "rasa/rasa" and (tag == "3.6.21" or tag.startswith("3.6.21-")), rasa["image"]
    assert 5005 in _container_ports(rasa)
    assert "5005" in " ".join(rasa["healthcheck"]["test"])
    binds = {m["source"]: m for m in _mounts(rasa) if m["type"] == "bind"}
    for source in ("./bot/rasa", "./nlu_data"):
        assert source in binds and binds[source]["read_only"], f"{source} must be mounted read-only"
    text = _command_text(rasa)
    assert "rasa train" in text and "rasa run" in text and "--enable-api" in text


def test_rasa_command_uses_files_that_exist_in_the_repository(services: dict) -> None:
    rasa = services["rasa"]
    binds = [m for m in _mounts(rasa) if m["type"] == "bind"]
    used = set()
    for path in re.findall(r"(/[\w.-]+(?:/[\w.-]+)+)", _command_text(rasa)):
        for mount in binds:
            target = mount["target"].rstrip("/")
            if path == target or path.startswith(target + "/"):
                host = (COMPOSE_FILE.parent / mount["source"] / path[len(target) :].lstrip("/")).resolve()
                assert host.exists(), f"the rasa command uses {path}, i.e. {host}, which does not exist"
                used.add(path)
    assert {"/project/rasa/config.yml", "/project/rasa/endpoints.yml", "/project/kb/nlu.yml"} <= used


def test_rasa_command_escapes_every_dollar_for_compose(services: dict) -> None:
    # A single `$` would be replaced by Compose (with an empty string when unset), not by the shell.
    text = _command_text(services["rasa"]).replace("$$", "")
    assert "$" not in text, "escape the shell's variables in the rasa command as $$"


def test_rasa_gets_every_variable_its_endpoints_read(services: dict) -> None:
    rasa = services["rasa"]
    env = _environment(rasa)
    endpoints = yaml.safe_load((ROOT / "bot" / "rasa" / "endpoints.yml").read_text(encoding="utf-8"))
    wanted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", " ".join(_strings(endpoints))))
    assert wanted, "bot/rasa/endpoints.yml reads its addresses from the environment"
    missing = {name for name in wanted if not env.get(name)}
    assert not missing, f"bot/rasa/endpoints.yml reads {sorted(missing)}, which rasa's environment lacks"
    assert env["REDIS_HOST"] == "redis" and int(env["REDIS_PORT"]) == 6379
    assert rasa["depends_on"]["redis"]["condition"] == "service_healthy"
    actions = urlsplit(env["BATON_ACTIONS_URL"])
    assert actions.hostname == "rasa-actions"
    assert actions.port in _container_ports(services["rasa-actions"])


def test_rasa_action_server(services: dict) -> None:
    actions = services["rasa-actions"]
    assert actions["image"] == "rasa/rasa-sdk:3.6.2"
    assert 5055 in _container_ports(actions)
    assert "5055/health" in " ".join(actions["healthcheck"]["test"])
    assert any(
        m["type"] == "bind" and m["source"] == "./bot/rasa/actions" and m["target"] == "/app/actions"
        for m in _mounts(actions)
    )
    env = _environment(actions)
    baton = urlsplit(env["BATON_URL"])
    assert baton.hostname == "baton" and baton.port in _container_ports(services["baton"])
    assert "BATON_RASA_ACTIONS_TOKEN" in env


# -- volumes, paths and variables --------------------------------------------------------------------


def test_every_named_volume_is_declared_and_used(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        m["source"]
        for service in services.values()
        for m in _mounts(service)
        if m["type"] == "volume" and m["source"]
    }
    assert used <= declared, f"volumes used but not declared: {sorted(used - declared)}"
    assert declared <= used, f"volumes declared but not used: {sorted(declared - used)}"


def test_every_mounted_host_path_exists_in_the_repository(services: dict) -> None:
    for name, service in services.items():
        for mount in _mounts(service):
            if mount["type"] != "bind":
                continue
            host = (COMPOSE_FILE.parent / mount["source"]).resolve()
            assert host.is_relative_to(ROOT), f"{name} mounts {host}, outside the repository"
            assert host.exists(), f"{name} mounts {mount['source']}, which does not exist"


def test_variables_without_a_default_are_documented() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    undocumented = {name for name, has_default in _interpolations(text) if not has_default} - set(
        re.findall(r"[A-Z_][A-Z0-9_]+", readme)
    )
    assert not undocumented, f"set these in docker-compose.yml or document them: {sorted(undocumented)}"


def test_the_readme_names_the_variables_compose_reads() -> None:
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run with Docker Compose", 1)
    assert len(section) == 2, "README.md has no 'Run with Docker Compose' section"
    section_text = section[1].split("\n## ", 1)[0]
    for name in ("RASA_TOKEN", "BATON_RASA_ACTIONS_TOKEN", "BATON_NLU_ENGINE"):
        assert name in section_text, f"the README's compose section does not say to set {name}"
        assert name in compose_text, f"the README says to set {name}, which docker-compose.yml ignores"


# -- the image ---------------------------------------------------------------------------------------


def test_baton_is_built_from_the_dockerfile(services: dict) -> None:
    build = services["baton"]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE


def test_dockerfile_serves_checks_health_and_exposes_the_mapped_port(
    services: dict, dockerfile: list[tuple[str, str]]
) -> None:
    assert dockerfile[0][0] == "FROM"
    runtime_base = [args for keyword, args in dockerfile if keyword == "FROM"][-1]
    assert runtime_base.split()[0] == "python:3.11-slim"

    exposed = {int(word.split("/")[0]) for k, a in dockerfile if k == "EXPOSE" for word in a.split()}
    mapped = {p["target"] for p in _ports(services["baton"])}
    assert mapped and mapped <= exposed, f"compose maps {mapped}, the image exposes {exposed}"

    healthchecks = [args for keyword, args in dockerfile if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert "curl" not in healthchecks[0], "python:3.11-slim has no curl"

    command = []
    for keyword, args in dockerfile:
        if keyword in ("ENTRYPOINT", "CMD"):
            command += _exec_form(args)
    assert command[:2] == ["baton", "serve"], command


def test_dockerfile_runs_as_an_unprivileged_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_installs_cpu_torch_before_the_rest(dockerfile: list[tuple[str, str]]) -> None:
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    torch = next(i for i, run in enumerate(runs) if "pip install torch==2.13.0" in run)
    others = [i for i, run in enumerate(runs) if "pip install" in run and i != torch]
    assert others and torch < min(others), "torch must come first, or pip pulls a CUDA build"
    pinned = [line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"torch==' in line]
    assert pinned and "torch==2.13.0" in pinned[0], "the Dockerfile's torch must match pyproject's pin"


def test_dockerfile_ships_the_default_knowledge_base(dockerfile: list[tuple[str, str]]) -> None:
    env = _dockerfile_env(dockerfile)
    workdir = [args for keyword, args in dockerfile if keyword == "WORKDIR"][-1]
    copies = [args.split() for keyword, args in dockerfile if keyword == "COPY" and "--from" not in args]
    destinations = {
        (Path(workdir) / words[-1]).as_posix() for words in copies if words[0].rstrip("/") == "nlu_data"
    }
    assert env["BATON_KB"] in destinations, f"BATON_KB={env['BATON_KB']} but nlu_data goes to {destinations}"


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_copies(
    dockerfile: list[tuple[str, str]],
) -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.rstrip("/")) for pattern in patterns)

    for path in (".venv", "var", ".git", ".env", "bench/out", "test-artifacts"):
        assert ignored(path), f".dockerignore lets {path} into the build context"
    for keyword, args in dockerfile:
        if keyword == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert not ignored(source.rstrip("/")), (
                    f"the Dockerfile copies {source}, .dockerignore drops it"
                )
