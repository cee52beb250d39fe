"""The ``geostp`` command line: wires library calls together, holds no logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geostp.errors import GeostpError

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from geostp.cube import describe
    from geostp.data.catalog import open_catalog
    from geostp.data.ingest import ingest, open_cube

    out = Path(args.out)
    catalog = open_catalog("synthetic")
    cube = catalog.open("radar_small")
    store = out / "synthetic_radar.zarr"
    print(f"geostp demo: ingesting the embedded synthetic radar into {store}")
    ingest(cube, store, overwrite=True, progress=not args.quiet)
    opened = open_cube(store)
    print(describe(opened))
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(f"wrote {store} ({size / 1e6:.1f} MB on disk)")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from geostp.cube import describe
    from geostp.data.catalog import open_catalog
    from geostp.data.ingest import ingest, open_cube

    catalog = open_catalog(args.catalog)
    cube = catalog.open(args.source)
    store = ingest(cube, args.out, time_chunk=args.time_chunk, spatial_chunk=args.spatial_chunk,
                   overwrite=args.overwrite, progress=not args.quiet, source=args.source)
    print(describe(open_cube(store)))
    print(f"wrote {store}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from geostp.cube import describe
    from geostp.data.ingest import open_cube

    print(describe(open_cube(args.path)))
    return 0


def _cmd_catalogs(args: argparse.Namespace) -> int:
    from geostp.data.catalog import catalog_dirs, open_catalog

    for d in catalog_dirs():
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            cat = open_catalog(f)
            print(f"{f.stem}: {cat.description}")
            for name in cat.names():
                print(f"  {name:24s} {cat.entry(name).adapter:16s} {cat.entry(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from geostp import __version__

    parser = argparse.ArgumentParser(prog="geostp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"geostp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the main job on the embedded synthetic radar")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("ingest", help="write a catalog source into a chunked zarr store")
    p.add_argument("source", help="source name in the catalog")
    p.add_argument("--catalog", required=True, help="catalog name (catalogs/NAME.yaml) or path")
    p.add_argument("--out", "-o", required=True, help="zarr store to write")
    p.add_argument("--time-chunk", type=int, default=20)
    p.add_argument("--spatial-chunk", type=int, default=256)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("info", help="describe a cube store")
    p.add_argument("path")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("catalogs", help="list catalogs and their sources")
    p.set_defaults(func=_cmd_catalogs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GeostpError as exc:
        print(f"geostp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geostp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
