"""`python -m engine.pmsim --port 8099`: the reference PM API server."""

from __future__ import annotations

import argparse
import sys

from engine.pmsim.cli import add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.pmsim",
                                     description="Reference PM API server.")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
