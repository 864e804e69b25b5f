"""``kcbus demo``: the main job — the bus end to end on the embedded default.

The work is in :mod:`kcbus.airflow.demo.main` (which drives Airflow as subprocesses and imports
no Airflow itself); it is imported only when the command runs, so ``kcbus --help`` stays fast.
The command plugs into the ``kcbus`` CLI through the ``kcbus.commands`` entry point, so the core
CLI (``kcbus/cli``) never imports upward into ``kcbus.airflow``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the bus end to end on the embedded default (Airflow, partners, real adapters)",
        description=(
            "Set up the demo partners and their keys, start Airflow (SQLite, LocalExecutor), "
            "send a realistic mix of messages through the embedded default's transports, wait "
            "until every message is settled and print a summary per flow. Without --once, "
            "Airflow keeps running (UI and login are printed) until Ctrl-C."
        ),
    )
    parser.add_argument("--once", action="store_true",
                        help="run once, stop everything and exit (CI); exit 1 if any message "
                        "did not end as expected")
    parser.add_argument("--port", type=int, default=8080,
                        help="api-server port (default 8080; a free one if taken)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for every message to settle (default 300)")
    parser.add_argument("--large-mb", type=int, default=64, metavar="MB",
                        help="size of the building plan attachment (default 64 MiB)")
    parser.add_argument("--rabbitmq", metavar="URL",
                        help="use this RabbitMQ (amqp://user:pass@host:port/vhost) instead of "
                        "the embedded folder broker")
    parser.add_argument("--home", type=Path, help="the kcbus checkout (default: this one)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from kcbus.airflow.demo.main import DemoOptions, find_home, run_demo

    options = DemoOptions(
        home=args.home or find_home(),
        once=args.once,
        port=args.port,
        timeout=args.timeout,
        large_mb=args.large_mb,
        rabbitmq=args.rabbitmq,
    )
    result = run_demo(options)
    return 0 if result.ok else 1
