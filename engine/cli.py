"""The `chargebridge` command line: run, check, map, test, send, and operator actions.

Each subcommand prints a clear result and exits non-zero on failure; file problems are
printed as `file:line:col: where: what`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import ChargeBridgeError, ConfigError

Command = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> object:
    from engine.config import load_config

    return load_config(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.logging import configure_logging
    from engine.runtime import run_ingest_role, run_process_role

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    if args.role == "process":
        run_process_role(config, args.node)
    else:
        asyncio.run(run_ingest_role(config, node=args.node, child_role=args.role == "all",
                                    config_path=Path(args.config)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from engine.checks import check_all

    problems = check_all(Path(args.config))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    from engine.mapping.tools import map_files

    text, code = map_files(args.mapping, args.files, fmt=args.format, explain=args.explain)
    print(text)
    return code


def cmd_test(args: argparse.Namespace) -> int:
    from engine.mapping.tools import run_mapping_tests

    paths = args.paths or sorted(str(p) for p in Path("mappings").rglob("*.test.yaml"))
    text, code = run_mapping_tests(paths)
    print(text)
    return code


def cmd_send(args: argparse.Namespace) -> int:
    from engine.hl7.mllp import send_messages, split_file_messages
    from engine.hl7.tls import client_ssl_context

    ssl_context = client_ssl_context(args.ca, args.cert, args.key) if args.tls else None
    code = 0
    for file in args.files:
        messages = split_file_messages(Path(file).read_bytes())
        if not messages:
            print(f"{file}: no HL7 message found", file=sys.stderr)
            code = 1
            continue
        replies = asyncio.run(send_messages(args.host, args.port, messages,
                                            ssl_context=ssl_context, timeout=args.timeout))
        for reply in replies:
            text = reply.decode("utf-8", "replace")
            print(text.replace("\r", "\n").rstrip())
            if "MSA|AA|" not in text and "MSA|CA|" not in text:
                code = 2
    return code


def cmd_release(args: argparse.Namespace) -> int:
    from engine.pipeline.actions import release_charges

    store = _open_store(args)
    results = release_charges(store, _config(args), args.charge_ids, who="cli")
    for charge_id, outcome in results.items():
        print(f"{charge_id}: {outcome}")
    return 0 if all(o == "released" for o in results.values()) else 1


def cmd_reprocess(args: argparse.Namespace) -> int:
    store = _open_store(args)
    code = 0
    for message_id in args.message_ids:
        ok = store.requeue_message(message_id, "cli")
        print(f"message {message_id}: {'queued for reprocessing' if ok else 'not found'}")
        code |= 0 if ok else 1
    return code


def cmd_reconcile(args: argparse.Namespace) -> int:
    from engine.pipeline.reconcile import reconcile_report

    text, code = reconcile_report(_open_store(args), args.since)
    print(text)
    return code


def _open_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from engine.config import load_config
    from engine.store import open_store

    config = load_config(args.config)
    return open_store(config.store.url, fsync=config.store.fsync, base_dir=str(config.base_dir))


def build_parser(extra: Sequence[Callable[[argparse._SubParsersAction], None]] = ()
                 ) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = argparse.ArgumentParser(prog="chargebridge",
                                     description="HL7 v2 / FHIR R4 charge interface engine")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "Run the engine on a config file.")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--role", choices=["all", "ingest", "process"], default="all")
    p.add_argument("--node", default="node-1", help="Node name (leases, health).")

    p = add("check", cmd_check, "Validate config.yaml and every mapping and table it uses.")
    p.add_argument("--config", default="config.yaml")

    p = add("map", cmd_map, "Dry-run a mapping on sample messages and print the charges.")
    p.add_argument("--mapping", required=True)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--explain", action="store_true", help="Show where each field came from.")
    p.add_argument("files", nargs="+")

    p = add("test", cmd_test, "Run mapping tests (*.test.yaml).")
    p.add_argument("paths", nargs="*")

    p = add("send", cmd_send, "Send HL7 file(s) over MLLP and print each ACK.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2575)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("files", nargs="+")

    p = add("release", cmd_release, "Release held charges to their destinations.")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("charge_ids", nargs="+")

    p = add("reprocess", cmd_reprocess, "Map and scrub message(s) again.")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("message_ids", nargs="+", type=int)

    p = add("reconcile", cmd_reconcile, "List messages whose lines in != charges out.")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--since", required=True, help="YYYY-MM-DD")

    for register in extra:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from engine.auth import user_cli
    from engine.auth.cli import register as register_token
    from engine.pipeline import flush
    from engine.pmsim import cli as pmsim_cli

    args = build_parser([flush.register, pmsim_cli.register, user_cli.register,
                         register_token]).parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except ChargeBridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
