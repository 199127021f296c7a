"""``convrepro-data``: fetch and check the data sets in the data root.

    convrepro-data download usps [--root DIR] [--form esl|libsvm] [--base-url URL]
    convrepro-data check usps [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from convrepro.data.errors import DataError
from convrepro.data.paths import DEFAULT_ROOT


def _root(value: str | None) -> Path:
    return Path(value or os.environ.get("CONVREPRO_DATA_DIR") or DEFAULT_ROOT).expanduser().resolve()


def data_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a public data set into the data root, verified")
    dl.add_argument("dataset", choices=["usps"])
    dl.add_argument("--root", help="data root (default: $CONVREPRO_DATA_DIR or ../shared/data)")
    dl.add_argument("--form", default="esl", choices=["esl", "libsvm"], help="USPS file form")
    dl.add_argument("--base-url", help="fetch from this mirror instead of the public site")
    ck = sub.add_parser("check", help="verify a data set's files against their checksums")
    ck.add_argument("dataset", choices=["usps"])
    ck.add_argument("--root")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            from convrepro.data import usps

            for path in usps.download(_root(args.root), form=args.form, base_url=args.base_url):
                print(f"ok  {path}")
        elif args.command == "check":
            from convrepro.data.usps import USPS

            for split in ("train", "test"):
                ds = USPS(_root(args.root), split)
                print(f"ok  {ds.folder / ds.source.name}: {len(ds)} digits, checksum verified")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(data_main())
