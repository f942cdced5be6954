"""`python -m devstack up|status|down`: the local edge stack's only entry point."""

from __future__ import annotations

import argparse
import sys

from devstack import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "status", "down"])
    args = parser.parse_args(argv)
    return {"up": stack.up, "status": stack.status, "down": stack.down}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
