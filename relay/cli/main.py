"""The ``relay`` command: serve, publish, watch, demo, token, init."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr, ValidationError

from relay import __version__
from relay.cli.addresses import cannot_listen, host_port, os_reason
from relay.protocol.event import Status
from relay.protocol.frames import ANY_TYPE
from relay.protocol.liveness import DEFAULT_STALL_AFTER

if TYPE_CHECKING:
    from aiohttp import web

    from relay.cli.settings_table import SettingDoc
    from relay.cli.workers import Worker
    from relay.server.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
REDIS_URL_HELP = (
    "publish straight to this Redis instead (redis+cluster://... for a cluster, "
    "redis+sentinel://... through Sentinel; a plain URL of a cluster node is found out)"
)


def _gateway_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("RELAY_URL") or DEFAULT_GATEWAY)


SERVER_EXTRA = "pip install 'relay-progress[server]'"


def _missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """The module not found, when it is a dependency rather than a part of relay."""
    name = exc.name or ""
    return None if not name or name.split(".")[0] == "relay" else name


def _flag_options(doc: SettingDoc) -> dict[str, Any]:
    """How argparse reads one setting: by the type of its field."""
    annotation = doc.field.annotation
    if get_origin(annotation) in (Union, UnionType):
        # Optional settings: the flag gives the value; leaving it out keeps the default.
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        return {"choices": [str(choice) for choice in get_args(annotation)]}
    if annotation in (int, float):
        return {"type": annotation, "metavar": "N"}
    if annotation is SecretStr:
        return {"metavar": "SECRET"}
    if annotation is str:
        # Given as text, the way the environment variable is, for Settings to check.
        return {"metavar": "TEXT"}
    raise TypeError(f"no relay serve flag for Settings.{doc.name}: {annotation!r}")


def _serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a gateway",
        description="Run a gateway. Every flag is also a RELAY_* environment variable; "
        "a flag given wins over its variable.",
    )
    try:
        from relay.cli.settings_table import documented_settings
    except ModuleNotFoundError as exc:
        missing = _missing_dependency(exc)
        if missing is None:
            raise
        # A light install: the command still parses, and main says what is missing.
        serve.set_defaults(missing_module=missing)
        return
    for doc in documented_settings():
        help_text = f"{doc.description} ({doc.env}; default: {doc.shown_default})"
        if doc.field.annotation in (SecretStr, SecretStr | None):
            # Other users of the machine can read a process's arguments, not its environment.
            help_text += "; prefer the variable, since flags show in the process list"
        serve.add_argument(
            doc.flag,
            dest=doc.name,
            default=None,
            help=help_text.replace("%", "%%"),
            **_flag_options(doc),
        )


def _publish_parser(commands: Any) -> None:
    publish = commands.add_parser("publish", help="publish one event")
    publish.add_argument("--type", dest="workflow_type", required=True, help="workflow type")
    publish.add_argument("--session", dest="session_id", required=True, help="session id")
    publish.add_argument("--step", required=True, help="step name")
    publish.add_argument("--progress", type=float, required=True, help="0 to 100")
    publish.add_argument("--metadata", help="a JSON object")
    publish.add_argument("--status", choices=get_args(Status))
    publish.add_argument("--error", help="error message, with --status failed")
    publish.add_argument(
        "--retry-for", type=float, default=5.0, help="seconds to keep retrying (default 5)"
    )
    publish.add_argument("--api-key", help="publisher key (RELAY_API_KEY)")
    target = publish.add_mutually_exclusive_group()
    target.add_argument("--url", help=f"gateway to post to (RELAY_URL, default {DEFAULT_GATEWAY})")
    target.add_argument("--redis-url", help=REDIS_URL_HELP)


def _watch_parser(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="show events as they arrive",
        description="Live progress bars on a terminal (or with --bars), one JSON event per "
        "line with --json, plain lines when the output is not a terminal.",
    )
    watch.add_argument(
        "--type", dest="workflow_type", default=ANY_TYPE, help=f"workflow type or {ANY_TYPE}"
    )
    watch.add_argument("--session", dest="session_id", help="only this session")
    watch.add_argument("--url", help=f"gateway (RELAY_URL, default {DEFAULT_GATEWAY})")
    view = watch.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="one JSON event per line")
    view.add_argument(
        "--bars", action="store_true", help="live progress bars even when not on a terminal"
    )
    watch.add_argument("--token", help="subscriber token (RELAY_TOKEN)")
    watch.add_argument(
        "--linger",
        type=float,
        metavar="SECONDS",
        help="how long an ended session stays on the bars (default: a minute)",
    )


def _demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="publish simulated map, character and encounter sessions",
        description="Publish simulated sessions (some fail, are cancelled, retried or stall) until "
        "interrupted or --duration passes; sessions still running then end cancelled.",
    )
    target = demo.add_mutually_exclusive_group()
    target.add_argument("--url", help=f"gateway to post to (RELAY_URL, default {DEFAULT_GATEWAY})")
    target.add_argument("--redis-url", help=REDIS_URL_HELP)
    demo.add_argument("--rate", type=float, default=1.0, help="new sessions a second (default 1)")
    demo.add_argument(
        "--duration", type=parse_duration, help="stop after this long: 30, 30s, 5m (default never)"
    )
    demo.add_argument(
        "--max-sessions", type=int, default=12, help="sessions running at once (default 12)"
    )
    demo.add_argument("--seed", type=int, help="seed of the random choices, for repeatable runs")
    demo.add_argument(
        "--stall-after",
        type=float,
        default=DEFAULT_STALL_AFTER,
        metavar="SECONDS",
        help="the gateway's RELAY_STALL_AFTER: silent workers stay quiet longer than this, "
        f"the others send heartbeats in time (default {DEFAULT_STALL_AFTER:g})",
    )
    demo.add_argument("--api-key", help="publisher key (RELAY_API_KEY)")


def _token_parser(commands: Any) -> None:
    token = commands.add_parser("token", help="mint a subscriber token")
    token.add_argument("--sub", required=True, help="who the token is for")
    token.add_argument(
        "--type", dest="workflow_types", action="append", default=[], help="grant a type (or *)"
    )
    token.add_argument(
        "--session", dest="sessions", action="append", default=[], help="grant one session"
    )
    token.add_argument(
        "--cancel",
        action="store_true",
        help="also allow cancelling what the token may watch (watching alone never does)",
    )
    token.add_argument(
        "--owner-sessions",
        action="store_true",
        help="grant every session owned by --sub, now and to come (the owner_sessions claim)",
    )
    token.add_argument("--ttl", default="1h", help="lifetime: 90, 90s, 15m, 1h or 2d (default 1h)")
    token.add_argument("--secret", help="signing secret (RELAY_TOKEN_SECRET)")
    token.add_argument(
        "--dashboard",
        action="store_true",
        help="print a dashboard link that signs in with the token, not the token alone",
    )
    token.add_argument(
        "--url", help=f"gateway of the --dashboard link (RELAY_URL, default {DEFAULT_GATEWAY})"
    )


def _init_parser(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="write a .env file of fresh secrets for docker compose",
        description="Write a .env file (mode 0600) with a new publisher key and token secret, "
        "for docker compose to read.",
    )
    init.add_argument(
        "--dir", default=".", help="directory to write .env in (default: the current one)"
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an existing .env (its secrets are lost: give the new ones to publishers)",
    )


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``2d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a duration: {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``relay`` command."""
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    _publish_parser(commands)
    _watch_parser(commands)
    _demo_parser(commands)
    _token_parser(commands)
    _init_parser(commands)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with every flag given on the command line winning."""
    from relay.server.settings import Settings

    given = {name: getattr(args, name, None) for name in Settings.model_fields}
    return Settings(**{name: value for name, value in given.items() if value is not None})


def _configure_logging(level: str, log_format: str = "text") -> None:
    from relay.cli.logs import configure_logging

    configure_logging(level, log_format)


def serve(args: argparse.Namespace) -> int:
    """Run a gateway, or ``--workers`` of them on one port, until SIGINT or SIGTERM."""
    settings = settings_from_args(args)
    if settings.worker_count > 1:
        from relay.cli.workers import run_workers

        return run_workers(settings, serve_gateway)
    _configure_logging(settings.log_level, settings.log_format)
    return serve_gateway(settings)


def serve_gateway(settings: Settings, worker: Worker | None = None) -> int:
    """Run one gateway until SIGINT or SIGTERM; as one of several when ``worker`` is given."""
    from relay.server.app import create_app, create_metrics_app
    from relay.server.connections import connect

    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        # Asking a plain URL's server whether it is a cluster takes a round trip.
        connections = runner.run(connect(settings))
        app = create_app(settings, connections)
        # One demo publisher for the whole service, not one per worker.
        if settings.demo and (worker is None or worker.number == 1):
            from relay.cli.demo import alongside

            app.cleanup_ctx.append(
                alongside(
                    connections.commands,
                    prefix=settings.stream_prefix,
                    maxlen=settings.stream_maxlen,
                    stall_after=settings.stall_after,
                )
            )
        metrics_app = create_metrics_app(app) if settings.metrics_apart else None
        return runner.run(_serve_until_stopped(app, metrics_app, settings, worker))


async def _serve_until_stopped(
    app: web.Application,
    metrics_app: web.Application | None,
    settings: Settings,
    worker: Worker | None,
) -> int:
    """Start ``app`` (and ``metrics_app`` on the metrics port), serve until SIGINT or SIGTERM.

    A worker also stops when its parent process is gone. The exit code: 1
    when a port cannot be listened on.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if worker is not None:
        parent_gone = worker.parent_gone

        def orphaned() -> None:
            loop.remove_reader(parent_gone)
            logger.warning("the parent process is gone; stopping")
            stop.set()

        loop.add_reader(parent_gone, orphaned)
    async with contextlib.AsyncExitStack() as running:
        # Workers share the port; the kernel spreads connections over them.
        port = await _listen(running, app, settings, settings.port, shared=worker is not None)
        if port is None:
            return 1
        metrics_port = settings.metrics_port if worker is None else worker.metrics_port(settings)
        if metrics_app is not None and metrics_port is not None:
            metrics_port = await _listen(running, metrics_app, settings, metrics_port)
            if metrics_port is None:
                return 1
        where = "embedded in-process store" if settings.embedded else "Redis"
        if worker is not None:
            where += f", worker {worker.number} of {worker.count}, pid {os.getpid()}"
        if settings.demo and (worker is None or worker.number == 1):
            where += ", publishing demo sessions"
        logger.info("relay gateway on http://%s (%s)", host_port(settings.host, port), where)
        if metrics_port is not None:
            logger.info("metrics on http://%s/metrics", host_port(settings.host, metrics_port))
        await stop.wait()
    return 0


async def _listen(
    running: contextlib.AsyncExitStack,
    app: web.Application,
    settings: Settings,
    port: int,
    *,
    shared: bool = False,
) -> int | None:
    """Serve ``app`` on the gateway's host and ``port`` until ``running`` closes.

    With ``shared``, the port is bound with ``SO_REUSEPORT``, beside the other
    workers. The port bound (which differs from the one asked for when that
    is 0), or None once a busy or foreign address is told in one line.
    """
    from aiohttp import web

    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5,
        # aiohttp closes a connection that has not sent complete headers within its
        # keep-alive timeout (idle or not), which makes it the header timeout too.
        keepalive_timeout=settings.header_timeout,
    )
    await runner.setup()
    running.push_async_callback(runner.cleanup)
    try:
        await web.TCPSite(runner, settings.host, port, reuse_port=shared or None).start()
    except OSError as exc:
        print(cannot_listen(settings.host, port, exc), file=sys.stderr)
        return None
    return int(runner.addresses[0][1])


def publish(args: argparse.Namespace) -> int:
    """Publish one event over HTTP or straight to Redis; prints its id."""
    from relay.client.reporters import HttpReporter, Reporter
    from relay.client.retry import ReportError, RetryPolicy

    try:
        metadata = json.loads(args.metadata) if args.metadata else None
    except json.JSONDecodeError as exc:
        print(f"relay publish: --metadata is not JSON: {exc}", file=sys.stderr)
        return 2
    fields = (args.session_id, args.workflow_type, args.step, args.progress, metadata)
    try:
        # A one-shot command should fail fast rather than buffer for a next report.
        retry = RetryPolicy(retry_for=args.retry_for, buffer_size=0)
        if args.redis_url:
            with Reporter(args.redis_url, retry=retry) as reporter:
                entry_id = reporter.report(*fields, status=args.status, error=args.error)
        else:
            api_key = args.api_key or os.environ.get("RELAY_API_KEY")
            http = HttpReporter(_gateway_url(args), api_key=api_key, retry=retry)
            entry_id = http.report(*fields, status=args.status, error=args.error)
    except ValidationError as exc:
        print(f"relay publish: invalid event:\n{exc}", file=sys.stderr)
        return 2
    except (ReportError, OSError) as exc:
        print(f"relay publish: {exc}", file=sys.stderr)
        return 1
    print(entry_id)
    return 0


def watch(args: argparse.Namespace) -> int:
    """Show events of a type or session until interrupted."""
    from relay.cli.watch import choose_mode, watch_bars, watch_events
    from relay.client.subscriber import TokenRefused

    gateway = _gateway_url(args)
    token = args.token or os.environ.get("RELAY_TOKEN")
    mode = choose_mode(as_json=args.json, bars=args.bars, is_terminal=sys.stdout.isatty())
    try:
        if mode == "bars":
            return asyncio.run(
                watch_bars(
                    gateway, args.workflow_type, args.session_id, token=token, linger=args.linger
                )
            )
        return asyncio.run(
            watch_events(
                gateway,
                args.workflow_type,
                args.session_id,
                as_json=mode == "json",
                token=token,
            )
        )
    except KeyboardInterrupt:
        return 0
    except TokenRefused as refused:
        hint = "" if refused.expired else " (give --token or RELAY_TOKEN)"
        print(f"relay watch: {refused}{hint}", file=sys.stderr)
        return 1


def demo(args: argparse.Namespace) -> int:
    """Publish simulated sessions until interrupted or ``--duration`` passes."""
    import aiohttp
    from redis.exceptions import RedisError

    from relay.cli.demo import DemoOptions, describe_end, run_demo
    from relay.client.redis_urls import redacted

    if args.rate < 0 or args.max_sessions < 1 or not args.stall_after >= 0:
        print(
            "relay demo: --rate and --stall-after must be 0 or more, --max-sessions 1 or more",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level="WARNING", format="relay demo: %(message)s")
    url = None if args.redis_url else _gateway_url(args)
    where = redacted(args.redis_url) if args.redis_url else url
    until = f" for {args.duration:g}s" if args.duration else "; Ctrl-C stops"
    print(f"relay demo: publishing simulated sessions to {where}{until}", file=sys.stderr)
    options = DemoOptions(
        rate=args.rate, max_sessions=args.max_sessions, seed=args.seed, stall_after=args.stall_after
    )
    try:
        asyncio.run(
            run_demo(
                url=url,
                redis_url=args.redis_url,
                api_key=args.api_key or os.environ.get("RELAY_API_KEY"),
                options=options,
                duration=args.duration,
                on_end=lambda ended: print(describe_end(ended), flush=True),
            )
        )
    except KeyboardInterrupt:
        return 0
    except (OSError, aiohttp.ClientError, RedisError) as exc:
        print(f"relay demo: cannot reach {where}: {exc}", file=sys.stderr)
        return 1
    return 0


def token(args: argparse.Namespace) -> int:
    """Print a signed subscriber token."""
    from relay.server.auth import mint_token

    secret = args.secret or os.environ.get("RELAY_TOKEN_SECRET")
    if not secret:
        print("relay token: give --secret or set RELAY_TOKEN_SECRET", file=sys.stderr)
        return 2
    if not (args.workflow_types or args.sessions or args.owner_sessions):
        print(
            "relay token: grant at least one --type, --session or --owner-sessions",
            file=sys.stderr,
        )
        return 2
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"relay token: {exc}", file=sys.stderr)
        return 2
    minted = mint_token(
        secret,
        args.sub,
        workflow_types=args.workflow_types,
        sessions=args.sessions,
        ttl_seconds=ttl,
        cancel=args.cancel,
        owner_sessions=args.owner_sessions,
    )
    # In the fragment the token never reaches the gateway's or a proxy's logs;
    # the dashboard reads it and takes it out of the address.
    print(f"{_gateway_url(args).rstrip('/')}/#token={minted}" if args.dashboard else minted)
    return 0


def init(args: argparse.Namespace) -> int:
    """Write a ``.env`` file of fresh secrets; names what it wrote, never the secrets."""
    from relay.cli.init import ENV_FILE, NEXT_COMMAND, EnvFileExists, write_env

    directory = Path(args.dir)
    try:
        written = write_env(directory, force=args.force)
    except EnvFileExists as exc:
        print(f"relay init: {exc} exists; give --force to replace it", file=sys.stderr)
        return 1
    except OSError as exc:
        where = directory / ENV_FILE
        print(f"relay init: cannot write {where}: {os_reason(exc)}", file=sys.stderr)
        return 1
    print(f"relay init: wrote {' and '.join(written.names)} to {written.path} (mode 0600)")
    here = directory.resolve() == Path.cwd().resolve()
    print(f"next: {'' if here else f'cd {shlex.quote(str(directory))} && '}{NEXT_COMMAND}")
    return 0


def configuration_problems(exc: ValidationError) -> list[str]:
    """One line per problem of the settings, naming the flag and variable of each."""
    from relay.cli.settings_table import documented_settings

    settings = {doc.name: f"{doc.flag} / {doc.env}" for doc in documented_settings()}
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        reason = error["msg"]
        if error["type"] == "value_error":
            # Our own checks' words, without pydantic's "Value error, " before them.
            reason = str(error["ctx"]["error"])
        name = ".".join(str(part) for part in error["loc"])
        lines.append(f"{settings.get(name, name or 'invalid configuration')}: {reason}")
    return lines


def _missing_extra(command: str, module: str) -> int:
    print(
        f"relay {command}: needs the server extra (no module {module!r}): {SERVER_EXTRA}",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relay`` command."""
    parser = build_parser()
    # Known arguments first: without the server extra, serve has no flags to know.
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "missing_module"):
        return _missing_extra(args.command, args.missing_module)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {
        "serve": serve,
        "publish": publish,
        "watch": watch,
        "demo": demo,
        "token": token,
        "init": init,
    }
    try:
        return handlers[args.command](args)
    except ValidationError as exc:
        for line in configuration_problems(exc):
            print(f"relay {args.command}: {line}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # Only publish runs on the base dependencies; the other commands import
        # the server extra's modules when they start.
        missing = _missing_dependency(exc)
        if args.command == "publish" or missing is None:
            raise
        return _missing_extra(args.command, missing)


if __name__ == "__main__":
    sys.exit(main())
