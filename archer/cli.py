"""The ``archer`` command: serve, db, demo, emulate, bench, spool, tools.

Layer: cli. Parses arguments, builds ``Settings`` once (checking only the settings the command
uses), configures logging, and hands over. Every mistake a user can make at start-up (a bad or
missing setting, a missing or malformed file, a port in use, an unreachable database) is one
line on standard error that names the setting or file and the fix, never a traceback: exit
status 2 for configuration, 1 for the rest.

Size (over 400 lines, on purpose): the parser of every command and the one place that turns
start-up failures into one line each; every command's work lives in its own module, and what
stays here is the table of commands, options and their help, read together.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import trio

from archer import __version__
from archer.bench.options import build_parser as build_bench_parser
from archer.errors import ArcherError, ConfigError, SettingsError, StoreError
from archer.logs import configure_logging
from archer.settings import (
    REQUIRED_FOR_CARTESIA_EMULATOR,
    REQUIRED_FOR_SERVING,
    REQUIRED_FOR_TWILIO_EMULATOR,
    Settings,
    settings_from_os,
)

#: What each command reads: the settings groups it checks (``None``: all) and the variables it
#: cannot do without. ``archer demo`` and ``archer bench`` bring their own.
NEEDS: Final[dict[str, tuple[Collection[str] | None, Collection[str]]]] = {
    "serve": (None, REQUIRED_FOR_SERVING),
    "db": (("database", "logs"), ()),
    "spool": (("database", "spool", "logs"), ()),
    "tools": (("logs",), ()),
    "demo": ((), ()),
    "bench": ((), ()),
    "emulate cartesia": ((), REQUIRED_FOR_CARTESIA_EMULATOR),
    "emulate call": ((), REQUIRED_FOR_TWILIO_EMULATOR),
    "keys": (("database", "logs"), ()),
    "call": (("database", "logs"), ()),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Options with their defaults, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, []) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    """A sub-command whose one-line summary is both its entry in the list and its description."""
    return commands.add_parser(
        name, help=summary, description=summary, formatter_class=_HelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archer",
        description="Archer: a telephony bridge from Twilio Media Streams to Cartesia voice"
        " agents. Settings come from the environment and .env (see .env.example).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"archer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(commands, "serve", "run the production server (hypercorn on trio)")
    serve.add_argument("--host", help="bind address (default: ARCHER_HOST, or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: ARCHER_PORT, PORT, or 8000)")
    serve.add_argument(
        "--hypercorn-config",
        type=Path,
        help="a hypercorn TOML file read on top of Archer's packaged defaults, e.g. a copy of"
        " config/hypercorn.toml (default: the packaged defaults alone)",
    )
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="worker processes sharing the socket (default: ARCHER_WORKERS, or 1)",
    )
    # Internal: how the --workers supervisor starts each worker (archer.workers).
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, action="append", default=[], help=argparse.SUPPRESS)

    db = _command(commands, "db", "database administration: create the schema, load demo data")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    _command(db_commands, "init", "create the schema in DATABASE_URL (idempotent)")
    seed = _command(db_commands, "seed", "load the demo bank into DATABASE_URL (idempotent)")
    seed.add_argument(
        "--file",
        type=Path,
        help="seed data as JSON (default: the demo bank shipped with Archer)",
    )
    demo = _command(
        commands, "demo", "one scripted call through Archer and both emulators, no accounts needed"
    )
    demo.add_argument(
        "--transfer", action="store_true", help="the variant that ends in a transfer to a human"
    )
    demo.add_argument(
        "--outbound",
        action="store_true",
        help="the bank rings a customer about a suspicious payment instead (a fraud alert)",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("archer-demo-caller.wav"), help="what the caller heard"
    )
    demo.add_argument(
        "--protocol",
        choices=("managed", "line"),
        default="managed",
        help="the agent's protocol: Managed Agents or a Line agent (Calls API)",
    )

    emulate = _command(commands, "emulate", "run an emulated peer (Cartesia or a caller)")
    emulators = emulate.add_subparsers(dest="emulator", required=True, metavar="EMULATOR")
    cartesia = _command(
        emulators,
        "cartesia",
        "a Cartesia agent server: accepts CARTESIA_API_KEY, serves CARTESIA_AGENT_ID",
    )
    cartesia.add_argument("--host", default="127.0.0.1", help="bind address")
    cartesia.add_argument("--port", type=int, default=9000, help="port")
    cartesia.add_argument("--script", default="bank_demo", help="agent script (name or path)")
    call = _command(
        emulators,
        "call",
        "one caller via emulated Twilio (signs with TWILIO_AUTH_TOKEN for WEBHOOK_BASE_URL);"
        " exits 0 only when the call completed",
    )
    call.add_argument(
        "--url", required=True, help="where Archer listens, e.g. http://127.0.0.1:8000"
    )
    call.add_argument("--script", default="caller_demo", help="caller script (name or path)")
    call.add_argument("--from-number", default="+15555550101", help="the caller's number")
    call.add_argument("--rest-port", type=int, default=8100, help="port of the emulated REST API")
    call.add_argument(
        "--out", type=Path, help="write what the caller heard to this WAV file (default: none)"
    )

    bench = commands.add_parser(
        "bench",
        help="drive many emulated calls through a real Archer process and measure it",
        formatter_class=_HelpFormatter,
        description="Starts Archer (and, with --floor, the thinnest relay on the same stack) in"
        " its own process on a throw-away SQLite database, drives concurrent emulated calls"
        " through it and prints per-frame latency, set-up time, drops, CPU and memory per call.",
    )
    build_bench_parser(bench)

    spool = _command(commands, "spool", "call records the database did not take")
    spool_commands = spool.add_subparsers(
        dest="spool_command", required=True, metavar="SPOOL_COMMAND"
    )
    _command(spool_commands, "replay", "save every spooled record now (SPOOL_PATH)")

    tools = _command(commands, "tools", "the client tools the agent may call")
    tools_commands = tools.add_subparsers(
        dest="tools_command", required=True, metavar="TOOLS_COMMAND"
    )
    _command(
        tools_commands, "export", "print the client-tool definitions to register with Cartesia"
    )
    _add_outbound_commands(commands)
    return parser


def _add_outbound_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``archer keys`` and ``archer call`` (issue 22: outbound calls)."""
    from archer.call.outbound import PURPOSES

    keys = _command(commands, "keys", "API keys for POST /calls (only a hash is stored)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create = _command(keys_commands, "create", "create a key; it is printed once, as the last line")
    create.add_argument("name", help="who the key is for, e.g. fraud-engine")
    revoke = _command(keys_commands, "revoke", "revoke a key: it is refused from now on")
    revoke.add_argument("name", help="the key's name")
    _command(keys_commands, "list", "list the keys' names and dates (never a key)")
    call = _command(commands, "call", "queue an outbound call, as POST /calls does; prints its id")
    call.add_argument("to", help="the customer's number, E.164 (+ and 7 to 15 digits)")
    call.add_argument("--purpose", required=True, choices=PURPOSES, help="why the bank rings")
    call.add_argument(
        "--transaction", required=True, type=int, help="the transaction's id in the bank"
    )
    call.add_argument("--idempotency-key", help="the same key again queues nothing new")


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    """``archer keys create|revoke|list``; its exit status."""
    from archer.db.engine import init_schema
    from archer.db.outbound import SqlOutbound

    queue = SqlOutbound.open(settings.database_url, pool_size=1)
    try:
        with _database_errors(settings):
            init_schema(queue.engine)
            match args.keys_command:
                case "create":
                    key = queue.create_key(args.name)
                    print(f"created API key {args.name!r}; it is shown this once, keep it safe:")
                    print(key)
                case "revoke":
                    if not queue.revoke_key(args.name):
                        raise ArcherError(f"no live API key named {args.name!r}")
                    print(f"revoked API key {args.name!r}")
                case _:
                    for key_info in queue.list_keys():
                        state = (
                            "live"
                            if key_info.revoked_at is None
                            else f"revoked {key_info.revoked_at.isoformat()}"
                        )
                        print(
                            f"{key_info.name}\tcreated {key_info.created_at.isoformat()}\t{state}"
                        )
    finally:
        queue.close()
    return 0


def queue_call(args: argparse.Namespace, settings: Settings) -> int:
    """``archer call +E164 --purpose P --transaction ID``; prints the answer POST /calls gives."""
    from archer.call.outbound import OutboundRequestError, parse_call_request
    from archer.db.engine import init_schema
    from archer.db.outbound import SqlOutbound

    try:
        request = parse_call_request(
            {"to": args.to, "purpose": args.purpose, "transaction_id": args.transaction}
        )
    except OutboundRequestError as exc:
        raise ArcherError(str(exc)) from None
    queue = SqlOutbound.open(settings.database_url, pool_size=1)
    try:
        with _database_errors(settings):
            init_schema(queue.engine)
            queued = queue.enqueue_sync(
                request, api_key_id=None, idempotency_key=args.idempotency_key
            )
    finally:
        queue.close()
    print(json.dumps({"id": queued.id, "status": queued.status}))
    return 0


@contextmanager
def _database_errors(settings: Settings) -> Iterator[None]:
    """The driver's errors as one line naming DATABASE_URL (without its password)."""
    from sqlalchemy.exc import SQLAlchemyError

    from archer.db import admin

    try:
        yield
    except (SQLAlchemyError, StoreError) as exc:
        raise StoreError(
            f"the database at DATABASE_URL={admin.describe(settings.database_url)}"
            f" failed: {_one_line(str(exc))}; check DATABASE_URL and that the database"
            " is running and reachable"
        ) from exc


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def export_tools() -> str:
    """The client-tool definitions as Cartesia's ``POST /v1/agents/tools`` takes them, checked."""
    from archer.bank.definitions import load_definitions

    return json.dumps([dict(d.raw) for d in load_definitions()], indent=2)


async def replay_spool(settings: Settings) -> int:
    """Save the spooled entries now; the number still waiting (database down, or a live writer).

    Replays every journal in ``SPOOL_PATH``'s directory whose writer is gone (a running
    server's journal is locked, and that server replays it itself).
    """
    from archer.db.spool import JsonlSpool
    from archer.db.store import SqlCallStore

    store = SqlCallStore.open(settings.database_url, pool_size=1)
    try:
        return await JsonlSpool(Path(settings.spool_path)).replay(store)
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = f"emulate {args.emulator}" if args.command == "emulate" else args.command
    try:
        # A command missing from NEEDS checks every setting and requires none.
        groups, requires = NEEDS.get(command, (None, ()))
        settings = settings_from_os(groups=groups, requires=requires)
        match args.command:
            case "demo" | "emulate" | "bench":
                # People watch these: quiet, readable logs; the progress lines tell the story.
                configure_logging("warning", "console")
            case _:
                configure_logging(
                    settings.log_level,
                    settings.log_format,
                    secrets=(
                        settings.twilio_auth_token,
                        settings.cartesia_api_key,
                        *settings.twilio_shared_keys.values(),
                    ),
                )
        return _run(args, settings)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"archer: configuration error: {problem}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"archer: configuration error: {exc}", file=sys.stderr)
        return 2
    except ArcherError as exc:
        print(f"archer: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Piped into a reader that stopped early (`archer tools export | head`): not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command ``args`` names; its exit status."""
    match args.command:
        case "serve":
            return _serve(args, settings)
        case "db":
            from archer.db import admin

            try:
                if args.db_command == "init":
                    admin.init_database(settings.database_url)
                    print(f"schema ready in {admin.describe(settings.database_url)}")
                else:
                    summary = admin.seed_database(settings.database_url, args.file)
                    print(f"seeded {admin.describe(settings.database_url)}: {summary}")
            except StoreError as exc:
                raise StoreError(
                    f"the database at DATABASE_URL={admin.describe(settings.database_url)}"
                    f" failed: {_one_line(str(exc))}; check DATABASE_URL and that the database"
                    " is running and reachable"
                ) from exc
        case "tools":
            print(export_tools())
        case "bench":
            from archer.bench.run import main as bench_main

            return bench_main(args)
        case "spool":
            waiting = trio.run(replay_spool, settings)
            print(f"{waiting} records still waiting in {settings.spool_path}")
            return 0 if waiting == 0 else 1
        case "demo" if args.outbound and args.transfer:
            print("archer demo: --outbound and --transfer are two different demos", file=sys.stderr)
            return 2
        case "demo" if args.outbound:
            from archer.demo_outbound import main_outbound_demo

            return main_outbound_demo(protocol=args.protocol)
        case "demo":
            from archer.demo import main_demo

            return main_demo(transfer=args.transfer, out=args.out, protocol=args.protocol)
        case "emulate":
            return _emulate(args, settings)
        case "keys":
            return run_keys(args, settings)
        case "call":
            return queue_call(args, settings)
    return 0


def _emulate(args: argparse.Namespace, settings: Settings) -> int:
    """``archer emulate cartesia|call``; a port in use is one line naming the option."""
    from archer import emulate

    option, port = (
        ("--port", args.port) if args.emulator == "cartesia" else ("--rest-port", args.rest_port)
    )
    try:
        if args.emulator == "cartesia":
            emulate.run_cartesia(settings, host=args.host, port=args.port, script=args.script)
            return 0
        return emulate.run_call(
            settings,
            url=args.url,
            script=args.script,
            from_number=args.from_number,
            rest_port=args.rest_port,
            out=args.out,
        )
    except (OSError, ArcherError, ExceptionGroup) as exc:
        # A bind that failed (in trio.run's group, or wrapped by the --workers supervisor).
        if not _address_in_use(exc):
            raise
        raise ConfigError(
            f"{option} {port} is already in use: stop what listens there, or give another {option}"
        ) from None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """``archer serve``: one process or a supervisor of ``--workers``; its exit status."""
    from archer.hypercorn_settings import load_hypercorn_settings

    # A bad --hypercorn-config is one line now, not a failure halfway through starting.
    load_hypercorn_settings(args.hypercorn_config)
    workers = args.workers if args.workers is not None else settings.workers
    host = args.host if args.host is not None else settings.host
    try:
        if args.worker_index is not None:
            from archer.workers import run_worker

            run_worker(
                settings,
                index=args.worker_index,
                host=args.host,
                listen_fds=args.listen_fd,
                supervisor_fd=args.supervisor_fd,
                hypercorn_toml=args.hypercorn_config,
            )
            return 0
        if workers > 1:
            from archer.workers import run_supervisor

            return run_supervisor(
                settings,
                workers=workers,
                host=args.host,
                port=args.port,
                hypercorn_toml=args.hypercorn_config,
            )
        from archer.server import serve

        trio.run(
            lambda: serve(
                settings, host=args.host, port=args.port, hypercorn_toml=args.hypercorn_config
            )
        )
    except (OSError, ArcherError, ExceptionGroup) as exc:
        # A bind that failed (in trio.run's group, or wrapped by the --workers supervisor).
        if not _address_in_use(exc):
            raise
        port = args.port if args.port is not None else settings.port
        raise ConfigError(_port_in_use_message(host, port, settings.media_port)) from None
    return 0


def _address_in_use(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its group or cause) is a bind failing on a busy port."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(inner) for inner in exc.exceptions)
    return exc.__cause__ is not None and _address_in_use(exc.__cause__)


def _port_in_use_message(host: str, port: int, media_port: int) -> str:
    """Which of Archer's ports is taken (bind errors do not always say), and the fix."""
    if media_port and not _port_free(host, media_port) and _port_free(host, port):
        return (
            f"MEDIA_PORT={media_port} is already in use on {host}: stop what listens there,"
            " or set MEDIA_PORT to a free port (0 serves media on ARCHER_PORT only)"
        )
    return (
        f"ARCHER_PORT={port} is already in use on {host}: stop what listens there, or set"
        " ARCHER_PORT (or --port) to a free port"
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _one_line(text: str) -> str:
    """The first line of a library's message (drivers add hints and links on later lines)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text
