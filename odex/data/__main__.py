"""Fetch real datasets into a folder (needs internet): `python -m odex.data mnist cifar10 --root data`."""
from __future__ import annotations

import argparse
import sys

from odex.errors import OdexError
from odex.data import vision

FETCHERS = {name: getattr(vision, name) for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m odex.data", description=__doc__)
    p.add_argument("names", nargs="+", choices=sorted(FETCHERS))
    p.add_argument("--root", default="data", help="folder to download into (default: data)")
    args = p.parse_args(argv)
    for name in args.names:
        try:
            bundle = FETCHERS[name](root=args.root, download=True)
        except OdexError as e:
            print(f"odex: error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: {len(bundle.train)} train / {len(bundle.test)} test images in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
