"""The options of ``archer bench`` (kept apart so ``archer --help`` does not import the bench).

Layer: cli (argument parsing only).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

SERVERS: Final = ("archer", "archer-media", "floor")


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--calls", type=int, default=30, help="concurrent calls (default 30)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds measured per step (default 30)"
    )
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(n) for n in text.split(",")],
        help="comma-separated call counts to step through (finds the knee), instead of --calls",
    )
    parser.add_argument(
        "--servers",
        type=_servers,
        default=["archer"],
        help="comma-separated servers to measure, in order: archer (media on the quart-trio"
        " route), archer-media (MEDIA_PORT, the dedicated media listener), floor (default: archer)",
    )
    parser.add_argument(
        "--floor", action="store_true", help="run the same steps through the floor relay too"
    )
    parser.add_argument("--workers", type=int, default=1, help="archer serve --workers N")
    parser.add_argument(
        "--batch-ms",
        type=int,
        choices=(20, 40),
        default=20,
        help="AGENT_AUDIO_BATCH_MS: caller audio per agent message (default 20, no batching)",
    )
    parser.add_argument(
        "--soak", type=float, default=0.0, help="then churn --calls calls for this many seconds"
    )
    parser.add_argument("--database-url", help="Archer's database (default: a fresh SQLite file)")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_assignment,
        help="extra environment for the server under test (repeatable), e.g. a setting to try"
        " or PYTHONTRACEMALLOC=1 for a memory investigation (default: none)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--record-writes",
        type=int,
        default=0,
        metavar="N",
        help="instead: play N scripted calls' records into --database-url and report the"
        " database writes per call and what they cost (no server, no audio)",
    )
    return parser


def _servers(text: str) -> list[str]:
    servers = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown or not servers:
        raise argparse.ArgumentTypeError(f"servers are {', '.join(SERVERS)}; not {unknown}")
    return servers


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value
