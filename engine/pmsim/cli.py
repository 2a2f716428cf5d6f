"""`chargebridge pm-sim` / `python -m engine.pmsim`: run the reference PM API server."""

from __future__ import annotations

import argparse
import contextlib
import signal
from typing import Any

__all__ = ["add_arguments", "register", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="Listen address.")
    parser.add_argument("--port", type=int, default=8099, help="Listen port (0 = any free).")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="Delay before answering each request.")
    parser.add_argument("--failure-rate", type=float, default=0.0,
                        help="Share of requests answered 503 (0.0-1.0).")
    parser.add_argument("--token", default=None,
                        help="Require this bearer token or X-API-Key on every request.")
    parser.add_argument("--seed", type=int, default=None, help="Seed for the failure dice.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (supervisors and tests send SIGTERM)."""
    from engine.pmsim.server import PmSim, SimSettings

    if not 0.0 <= args.failure_rate <= 1.0:
        print("error: --failure-rate must be between 0.0 and 1.0")
        return 2
    sim = PmSim(args.host, args.port, SimSettings(latency_ms=args.latency_ms,
                                                 failure_rate=args.failure_rate,
                                                 token=args.token, seed=args.seed))
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"pm-sim listening on {sim.url} (stats: {sim.url}/_stats)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def register(sub: Any) -> None:
    """Add the `pm-sim` subcommand to the chargebridge CLI's subparsers."""
    text = "Run the reference PM API server (idempotency keys, latency, failures)."
    parser = sub.add_parser("pm-sim", help=text, description=text)
    add_arguments(parser)
    parser.set_defaults(func=run)
