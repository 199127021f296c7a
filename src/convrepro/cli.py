"""``convrepro-data``: fetch and check the data sets in the data root.

    convrepro-data download usps [--root DIR] [--form esl|libsvm] [--base-url URL]
    convrepro-data download arctic --speakers bdl,rms,jmk [--root DIR] [--base-url URL]
    convrepro-data download imagenette [--size 320|160|full] [--root DIR] [--base-url URL]
    convrepro-data prepare imagenette|imagenet|FOLDER [--size 256] [--root DIR] [--workers N] [--force]
    convrepro-data check [usps|speech|imagenette|prepared|all] [--root DIR]
    convrepro-data speech-tokens --format lab|timit --root DIR [--out tokens.csv] [--speaker NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from convrepro.data.paths import DEFAULT_ROOT, data_root
from convrepro.errors import DataError


def _root(value: str | None) -> Path:
    return Path(value or os.environ.get("CONVREPRO_DATA_DIR") or DEFAULT_ROOT).expanduser().resolve()


def data_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a public data set into the data root, verified")
    dl.add_argument("dataset", choices=["usps", "arctic", "imagenette"])
    dl.add_argument("--size", default="320", choices=["320", "160", "full"], help="imagenette: image size")
    dl.add_argument("--speakers", default="bdl,rms,jmk", help="arctic: comma-separated speakers")
    dl.add_argument("--root", help="data root (default: $CONVREPRO_DATA_DIR or ../shared/data)")
    dl.add_argument("--form", default="esl", choices=["esl", "libsvm"], help="USPS file form")
    dl.add_argument("--base-url", help="fetch from this mirror instead of the public site")
    pr = sub.add_parser("prepare", help="write an image folder once as the 256x256 uint8 store AlexNet reads")
    pr.add_argument("dataset", help="imagenette (imagenette2-224), imagenet, or any ImageFolder tree in the data root")
    pr.add_argument("--size", type=int, default=256, help="side S of the stored S x S images (the paper: 256)")
    pr.add_argument("--root", help="data root (default: $CONVREPRO_DATA_DIR or ../shared/data)")
    pr.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores but one)")
    pr.add_argument("--no-checksums", action="store_true", help="fingerprint by size instead of SHA-256 "
                    "(ImageNet, which publishes no SHA256SUMS)")
    pr.add_argument("--force", action="store_true", help="replace a store made from other files")
    ck = sub.add_parser("check", help="hash a data set's files against their checksums (all: every set present)")
    ck.add_argument("dataset", nargs="?", default="all", choices=["usps", "speech", "imagenette", "prepared", "all"])
    ck.add_argument("--root")
    tk = sub.add_parser("speech-tokens", help="write a /b/ /d/ /g/ token table from a labelled speech folder")
    tk.add_argument("--format", required=True, choices=["lab", "timit"],
                    help="lab: <root>/lab/*.lab + audio; timit: <speaker>/<sentence>.phn + .wav")
    tk.add_argument("--root", required=True, help="the corpus folder")
    tk.add_argument("--out", default="tokens.csv")
    tk.add_argument("--speaker", default=None, help="speaker name (lab format; default: the folder name)")
    tk.add_argument("--corpus", default=None, help="corpus name in the table (default: the folder name)")
    tk.add_argument("--vowels", default="sampa", choices=["sampa", "festvox"], help="lab label inventory")
    tk.add_argument("--audio-dir", default="flac", help="lab format: folder of the recordings")
    tk.add_argument("--audio-suffix", default=".flac")
    tk.add_argument("--split", default="test", help="timit format: the split its tokens belong to")
    args = parser.parse_args(argv)
    try:
        if args.command == "download" and args.dataset == "usps":
            from convrepro.data import usps

            for path in usps.download(_root(args.root), form=args.form, base_url=args.base_url):
                print(f"ok  {path}")
        elif args.command == "download" and args.dataset == "imagenette":
            from convrepro.data.images import imagenette

            path = imagenette.download(_root(args.root), args.size, base_url=args.base_url)
            print(f"ok  {path}  (train with data.folder={path.name})")
        elif args.command == "prepare":
            _prepare(args)
        elif args.command == "download":
            from convrepro.data.speech import arctic

            speakers = [s.strip() for s in args.speakers.split(",") if s.strip()]
            for path in arctic.download(_root(args.root), speakers, base_url=args.base_url):
                print(f"ok  {path}")
        elif args.command == "check":
            _check(args.dataset, _root(args.root))
        elif args.command == "speech-tokens":
            _speech_tokens(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _prepare(args) -> None:
    import json

    from convrepro.data.images.datamodule import default_workers
    from convrepro.data.images.prepare import prepare
    from convrepro.data.images.store import DATASETS, kept_counts

    if args.size < 1:
        raise DataError(f"--size {args.size}: the stored images need a positive side (the paper: 256)")
    folder = DATASETS.get(args.dataset, args.dataset)
    checksums = not args.no_checksums and folder != "imagenet"
    out = prepare(folder, args.size, str(_root(args.root)), workers=default_workers("jpeg") if args.workers is None
                  else args.workers, verify_checksums=checksums, force=args.force)
    manifest = json.loads((out / "manifest.json").read_text())
    counts = kept_counts(manifest)
    gigabytes = sum(f.stat().st_size for f in out.glob("*.u8")) / 1e9
    print(f"ok  {out}: {counts} images at {args.size}x{args.size} ({gigabytes:.2f} GB)")
    for problem in manifest["problems"]:
        print(f"skipped: {problem}", file=sys.stderr)


def _check(dataset: str, root: Path) -> None:
    """Every file hashed again (checking is hashing: the digest cache is what is being checked)."""
    from convrepro.data.integrity import rehash

    data_root(root)  # a missing root: the project's own message
    rehash()
    try:
        _check_sets(dataset, root)
    finally:
        rehash(False)  # this process's later reads may trust the cache again


def _check_sets(dataset: str, root: Path) -> None:
    from convrepro.data.images.store import check_stores
    from convrepro.data.integrity import check_folder
    from convrepro.data.usps import USPS

    wanted = ("usps", "speech", "imagenette", "prepared") if dataset == "all" else (dataset,)
    found = 0
    if "usps" in wanted and (dataset == "usps" or (root / "usps").is_dir()):
        for split in ("train", "test"):
            ds = USPS(root, split)
            print(f"ok  {ds.folder / ds.source.name}: {len(ds)} digits, checksum verified")
            found += 1
    folders = {"speech": sorted(p.parent for p in (root / "speech").glob("*/SHA256SUMS")),
               "imagenette": [root / "imagenette2-224"] if (root / "imagenette2-224").is_dir() else []}
    for name in ("speech", "imagenette"):
        if name in wanted and dataset == name and not folders[name]:
            raise DataError(f"no {name} data under {root} (`convrepro-data download "
                            f"{'arctic' if name == 'speech' else name}`)")
        for folder in folders[name] if name in wanted else []:
            print(f"ok  {folder}: {check_folder(folder)} files, checksums verified")
            found += 1
    if "prepared" in wanted:
        for line in check_stores(str(root), required=dataset == "prepared"):
            print(f"ok  {line}")
            found += 1
    if not found:
        raise DataError(f"no data set under {root}: `convrepro-data download usps` fetches the first")


def _speech_tokens(args) -> None:
    from convrepro.data.speech import tokens as tk

    root = Path(args.root).expanduser().resolve()
    problems: list[str] = []
    if args.format == "lab":
        found = tk.tokens_from_lab(root, corpus=args.corpus or root.name, speaker=args.speaker or root.name,
                                   vowels=args.vowels, audio_dir=args.audio_dir, audio_suffix=args.audio_suffix,
                                   problems=problems)
    else:
        found = tk.tokens_from_timit(root, corpus=args.corpus or "timit", split=args.split, problems=problems)
    tk.write_table(found, Path(args.out))
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    for split, per_class in sorted(tk.counts(found).items()):
        print(f"{split:6s} " + "  ".join(f"/{c}/ {n}" for c, n in per_class.items()))
    print(f"{len(found)} tokens written to {args.out} ({len(problems)} problem(s))")


if __name__ == "__main__":
    raise SystemExit(data_main())
