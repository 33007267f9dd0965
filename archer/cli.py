"""The ``archer`` command: ``serve``, ``db init``, ``db seed``.

Layer: cli. Parses arguments, builds ``Settings`` once, configures logging, and hands over.
A bad setting is one line on standard error naming the variable, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from archer.bench.options import build_parser as build_bench_parser
from archer.db.seed import DEMO_BANK
from archer.errors import ArcherError, ConfigError
from archer.logs import configure_logging
from archer.settings import Settings, load_environ


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the production server")
    serve.add_argument("--host", help="bind address (default ARCHER_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default ARCHER_PORT, PORT or 8000)")
    serve.add_argument(
        "--hypercorn-config", type=Path, help="hypercorn TOML file (e.g. config/hypercorn.toml)"
    )
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        help="worker processes sharing the socket (default ARCHER_WORKERS or 1)",
    )
    # Internal: how the --workers supervisor starts each worker (archer.workers).
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, action="append", default=[], help=argparse.SUPPRESS)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("init", help="create the schema (idempotent)")
    seed = db_commands.add_parser("seed", help="load the demo bank (idempotent)")
    seed.add_argument("--file", type=Path, default=DEMO_BANK, help="seed data (JSON)")
    demo = commands.add_parser(
        "demo", help="one scripted call through Archer and both emulators, no accounts needed"
    )
    demo.add_argument(
        "--transfer", action="store_true", help="the variant that ends in a transfer to a human"
    )
    demo.add_argument(
        "--out", type=Path, default=Path("archer-demo-caller.wav"), help="what the caller heard"
    )
    demo.add_argument(
        "--protocol",
        choices=("managed", "line"),
        default="managed",
        help="the agent's protocol: Managed Agents (default) or a Line agent (Calls API)",
    )

    emulate = commands.add_parser("emulate", help="run an emulator against any Archer")
    emulators = emulate.add_subparsers(dest="emulator", required=True)
    cartesia = emulators.add_parser(
        "cartesia", help="a Cartesia Managed Agents server (key: CARTESIA_API_KEY)"
    )
    cartesia.add_argument("--host", default="127.0.0.1")
    cartesia.add_argument("--port", type=int, default=9000)
    cartesia.add_argument("--script", default="bank_demo", help="agent script (name or path)")
    call = emulators.add_parser(
        "call", help="one caller via Twilio (signs with TWILIO_AUTH_TOKEN for WEBHOOK_BASE_URL)"
    )
    call.add_argument(
        "--url", required=True, help="where Archer listens, e.g. http://127.0.0.1:8000"
    )
    call.add_argument("--script", default="caller_demo", help="caller script (name or path)")
    call.add_argument("--from-number", default="+15555550101", help="the caller's number")
    call.add_argument(
        "--rest-port", type=int, default=8100, help="port of the emulated Twilio REST API"
    )
    call.add_argument("--out", type=Path, help="write what the caller heard to this WAV file")

    bench = commands.add_parser(
        "bench",
        help="drive many emulated calls through a real Archer process and measure it",
        description="Starts Archer (and, with --floor, the thinnest relay on the same stack) in"
        " its own process on a throw-away SQLite database, drives concurrent emulated calls"
        " through it and prints per-frame latency, set-up time, drops, CPU and memory per call.",
    )
    build_bench_parser(bench)

    spool = commands.add_parser("spool", help="call records the database did not take")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True)
    spool_commands.add_parser("replay", help="save every spooled record now (SPOOL_PATH)")

    tools = commands.add_parser("tools", help="the client tools the agent may call")
    tools_commands = tools.add_subparsers(dest="tools_command", required=True)
    tools_commands.add_parser(
        "export", help="print the client-tool definitions to register with Cartesia (JSON)"
    )
    return parser


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
    try:
        settings = Settings.from_environ(load_environ(os.environ))
        match args.command:
            case "demo" | "emulate" | "bench":
                # People watch these: quiet, readable logs; the progress lines tell the story.
                configure_logging("warning", "console")
            case _:
                configure_logging(
                    settings.log_level,
                    settings.log_format,
                    secrets=(settings.twilio_auth_token, settings.cartesia_api_key),
                )
        match args.command:
            case "serve":
                settings.check_serving()
                workers = args.workers if args.workers is not None else settings.workers
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
                        settings,
                        host=args.host,
                        port=args.port,
                        hypercorn_toml=args.hypercorn_config,
                    )
                )
            case "db":
                from archer.db import admin

                if args.db_command == "init":
                    admin.init_database(settings.database_url)
                    print(f"schema ready in {admin.describe(settings.database_url)}")
                else:
                    summary = admin.seed_database(settings.database_url, args.file)
                    print(f"seeded {admin.describe(settings.database_url)}: {summary}")
            case "tools":
                print(export_tools())
            case "bench":
                from archer.bench.run import main as bench_main

                return bench_main(args)
            case "spool":
                waiting = trio.run(replay_spool, settings)
                print(f"{waiting} records still waiting in {settings.spool_path}")
                return 0 if waiting == 0 else 1
            case "demo":
                from archer.demo import main_demo

                return main_demo(transfer=args.transfer, out=args.out, protocol=args.protocol)
            case "emulate":
                from archer import emulate

                if args.emulator == "cartesia":
                    emulate.run_cartesia(
                        settings, host=args.host, port=args.port, script=args.script
                    )
                else:
                    return emulate.run_call(
                        settings,
                        url=args.url,
                        script=args.script,
                        from_number=args.from_number,
                        rest_port=args.rest_port,
                        out=args.out,
                    )
    except ConfigError as exc:
        print(f"archer: configuration error: {exc}", file=sys.stderr)
        return 2
    except ArcherError as exc:
        print(f"archer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Piped into a reader that stopped early (`archer tools export | head`): not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
