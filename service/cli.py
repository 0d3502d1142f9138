"""Command line: `cardiac-ct-cds serve | evaluate | check-config | dev-token | report`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from service.config import ConfigError, Settings, load_settings
from service.logs import configure_logging

app = typer.Typer(
    help="CDS Hooks 2.0 decision support for cardiac CT orders (FFR-CT 75580, CAC 75571).",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: embedded development profile)",
        envvar="CARDIAC_CDS_CONFIG",
    ),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes (uvicorn's process manager). More than one needs "
            "cache.redis_url, so every worker shares the JWT replay cache.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP service."""
    import uvicorn

    settings = _settings(config)
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics.enabled:
        from service.api.metrics import prepare_multiprocess

        prepare_multiprocess(settings.state_dir)  # before any metric exists, workers included
    from service.app import create_app

    if workers > 1 and settings.auth.enabled and not settings.cache.redis_url:
        # Each worker would keep its own jti replay cache: a token replayed to another worker
        # would be accepted. Refuse rather than weaken replay detection.
        typer.echo(
            "--workers > 1 needs cache.redis_url: the JWT replay cache must be shared by the "
            "workers (or run one worker per process behind a load balancer, each with Redis)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        application = create_app(settings)  # startup validation: rules, cards, keys
        if workers > 1:
            _migrate_once(settings)  # before the workers start, so they never race on it
    except Exception as exc:  # say what is wrong, never a traceback
        typer.echo(f"startup failed: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.metrics.enabled:
        from service.api.metrics import serve_metrics

        try:
            serve_metrics(settings.metrics.host, settings.metrics.port)
        except OSError as exc:
            typer.echo(f"startup failed: metrics listener: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"metrics at http://{settings.metrics.host}:{settings.metrics.port}/metrics", err=True
        )
    if settings.admin.enabled:
        # The rule owners' dashboard on its own listener, once in this (the parent) process.
        import atexit

        from service.dashboard.listener import AdminListener

        admin = AdminListener(settings)
        try:
            admin.start()
        except (OSError, RuntimeError, ValueError) as exc:
            typer.echo(f"startup failed: admin listener: {exc}", err=True)
            raise typer.Exit(2) from None
        atexit.register(admin.stop)
        typer.echo(f"rule owners' dashboard at {admin.url}", err=True)
    typer.echo(f"serving CDS Hooks discovery at {settings.service_url('/cds-services')}", err=True)
    # JSON logs: uvicorn keeps the root logger's format instead of configuring its own.
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    if workers == 1:
        uvicorn.run(
            application,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=log_config,
        )
        return
    if config is not None:
        os.environ["CARDIAC_CDS_CONFIG"] = str(config.resolve())  # read again by each worker
    uvicorn.run(
        "service.app:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=log_config,
    )


def _migrate_once(settings: Settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from service.storage.database import make_engine, migrate

    engine = make_engine(settings.storage.url)
    try:
        migrate(engine)
    except (SQLAlchemyError, OSError) as exc:  # the workers start degraded and retry
        logging.getLogger(__name__).error(
            "storage unreachable before start: %s", type(exc).__name__
        )
    finally:
        engine.dispose()


@app.command("admin-password")
def admin_password() -> None:
    """Read a password from stdin; print its scrypt hash for admin.password_hash."""
    import getpass
    import sys

    from service.dashboard.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("dashboard password: ")
        if getpass.getpass("again: ") != password:
            typer.echo("the passwords differ", err=True)
            raise typer.Exit(2)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        typer.echo("use a password of 12 characters or more", err=True)
        raise typer.Exit(2)
    typer.echo(hash_password(password))


@app.command()
def evaluate(
    request_file: Annotated[Path, typer.Argument(help="CDS Hooks request JSON")],
    config: ConfigOption = None,
    service_id: Annotated[str | None, typer.Option("--service", help="Service id")] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print the response JSON only")] = False,
    today: Annotated[
        str | None,
        typer.Option(
            "--today",
            help="Evaluate as of this date (YYYY-MM-DD); default: a scenario file's `today`, "
            "else the system date",
        ),
    ] = None,
) -> None:
    """Run one CDS Hooks request or scenario file offline (prefetch only, no network)."""
    from datetime import date

    from service.offline import evaluate_file, read_request_file, render_scenario, render_text

    settings = _settings(config)
    configure_logging("WARNING")
    try:
        as_of = date.fromisoformat(today) if today else None
        file = read_request_file(request_file)
        as_of = as_of or file.today or date.today()
        response = asyncio.run(evaluate_file(settings, request_file, service_id, as_of))
    except ValueError as exc:
        typer.echo(f"cannot evaluate {request_file}: {exc}", err=True)
        raise typer.Exit(2) from None
    if raw:
        typer.echo(json.dumps(response, indent=2))
    elif file.scenario is not None:
        typer.echo(render_scenario(file, response, as_of))
    else:
        typer.echo(render_text(response))


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the configuration, client keys, rule data and card content, then exit."""
    from service.cdshooks.discovery import ServiceRegistry
    from service.pipeline import Knowledge, check_topic_modes
    from service.security.auth import check_auth_config

    settings = _settings(config)
    rules = settings.rules
    try:
        knowledge = Knowledge.load(rules.extra_data_dir)
        check_auth_config(settings)
        services = ServiceRegistry()
        check_topic_modes(rules.topic_modes, rules.service_topic_modes, knowledge, services.by_id)
    except Exception as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"ok: rule data {knowledge.rule_data.version}, {len(knowledge.cards.templates)} card "
        f"templates, {len(settings.auth.clients)} trusted client(s), auth "
        f"{'on' if settings.auth.enabled else 'OFF'}"
    )
    for service_id in sorted(services.by_id):  # the topics not shown as usual, per service
        for topic, mode in sorted(rules.modes_for(service_id).items()):
            if mode != "active":
                typer.echo(f"  {service_id}: {topic} is {mode}")


@app.command("dev-token")
def dev_token(
    aud: Annotated[
        str,
        typer.Option(
            "--aud",
            help="The exact URL you will call (JWT audience), or a path such as /cds-services",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Print a JWT signed by the local dev client (valid 5 minutes, single use)."""
    from service.security.dev_client import DevClientError, ensure_dev_client, sign_dev_token

    settings = _settings(config)
    if not (settings.auth.enabled and settings.auth.dev_client):
        typer.echo("this configuration does not enable the dev client (auth.dev_client)", err=True)
        raise typer.Exit(2)
    audience = settings.service_url(aud) if aud.startswith("/") else aud
    try:
        keys = ensure_dev_client(settings.state_dir)
    except (OSError, DevClientError) as exc:
        typer.echo(f"dev client key unusable: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(sign_dev_token(keys, audience))


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def report(
    since: Annotated[
        str | None,
        typer.Option(help="First day (YYYY-MM-DD) or ISO date-time; default 30 days ago"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Last day, included (YYYY-MM-DD), or ISO date-time; default now"),
    ] = None,
    output: Annotated[ReportFormat, typer.Option("--format", help="Output format")] = (
        ReportFormat.table
    ),
    config: ConfigOption = None,
) -> None:
    """Override analytics: cards issued, accepted and overridden per topic, payer and reason."""
    from rich.console import Console
    from sqlalchemy.exc import SQLAlchemyError

    from service.storage.report import as_csv, build_report, period, print_table
    from service.storage.service import utc_now
    from service.storage.store import Storage

    settings = _settings(config)
    configure_logging("WARNING")
    try:
        start, end = period(since, until, utc_now())
    except ValueError as exc:
        typer.echo(f"invalid --since/--until: {exc}", err=True)
        raise typer.Exit(2) from None
    storage = Storage(settings.storage.url)
    try:
        result = build_report(storage, start, end)
    except SQLAlchemyError as exc:
        typer.echo(f"database unavailable: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    finally:
        storage.dispose()
    if output is ReportFormat.json:
        typer.echo(json.dumps(result.wire(), indent=2))
    elif output is ReportFormat.csv:
        typer.echo(as_csv(result), nl=False)
    else:
        print_table(result, Console())


@app.command()
def audit(
    hook_instance: Annotated[str, typer.Argument(help="The hookInstance of the call")],
    config: ConfigOption = None,
) -> None:
    """Print the audit record(s) of a hook call as JSON: cards, data sources, feedback."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.storage.store import Storage

    settings = _settings(config)
    configure_logging("WARNING")
    storage = Storage(settings.storage.url)
    try:
        calls = storage.find_calls(hook_instance)
    except SQLAlchemyError as exc:
        typer.echo(f"database unavailable: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    finally:
        storage.dispose()
    if not calls:
        typer.echo(f"no hook call with hookInstance {hook_instance!r}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(calls, indent=2))


class ResultFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"


@app.command()
def backtest(
    since: Annotated[str, typer.Option(help="First date of service (YYYY-MM-DD)")],
    until: Annotated[str, typer.Option(help="Last date of service, included (YYYY-MM-DD)")],
    output: Annotated[Path, typer.Option(help="Directory for results and summary.json")],
    fhir_server: Annotated[
        str | None, typer.Option(help="FHIR base URL to search past orders on")
    ] = None,
    ndjson: Annotated[
        Path | None, typer.Option(help="Directory of a FHIR Bulk Data export (*.ndjson)")
    ] = None,
    token_env: Annotated[
        str,
        typer.Option(help="Environment variable holding the FHIR server's bearer token"),
    ] = "CARDIAC_CDS_BACKTEST_FHIR_TOKEN",  # noqa: S107 - a variable's name, not a token
    output_format: Annotated[ResultFormat, typer.Option("--format")] = ResultFormat.ndjson,
    concurrency: Annotated[int, typer.Option(min=1, max=32)] = 4,
    config: ConfigOption = None,
) -> None:
    """What the service would have said about past orders (ids and topics only).

    Each order's date of service is its "today"; topic modes in the config apply (silent
    topics are counted). Results: output/results.ndjson (or .csv) and output/summary.json.
    """
    from datetime import date

    from service.backtest import run_backtest

    settings = _settings(config)
    configure_logging("WARNING")
    if (fhir_server is None) == (ndjson is None):
        typer.echo("give exactly one of --fhir-server and --ndjson", err=True)
        raise typer.Exit(2)
    try:
        first, last = date.fromisoformat(since), date.fromisoformat(until)
    except ValueError as exc:
        typer.echo(f"invalid --since/--until: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = asyncio.run(
        run_backtest(
            settings,
            since=first,
            until=last,
            output=output,
            output_format=output_format.value,
            fhir_server=fhir_server,
            fhir_token=os.environ.get(token_env) or None,
            ndjson=ndjson,
            concurrency=concurrency,
            progress=True,
        )
    )
    typer.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app()
