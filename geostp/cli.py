"""The ``geostp`` command line: wires library calls together, holds no logic of its own."""
# (the parser's description is _DESCRIPTION, written for users; this docstring is for readers of the code)

from __future__ import annotations

import argparse
import os
import re
import sys

from geostp.errors import GeostpError

__all__ = ["main", "build_parser"]

_DESCRIPTION = "geostp: spatiotemporal forecasting of gridded data (radar nowcasting)."


def _cmd_demo(args: argparse.Namespace) -> int:
    from geostp.demo import run_demo

    run_demo(args.out, minutes=args.minutes, model=args.model, fine_tune_minutes=args.fine_tune_minutes,
             progress=not args.quiet)
    return 0


def _parse_adapter_args(pairs: list[str]) -> dict:
    """``key=value`` pairs into keyword arguments; values are read as YAML (numbers, lists, mappings,
    booleans), and kept as plain strings where they are not YAML (``*.gif``, ``%Y%m%d``)."""
    from geostp.data.safe_yaml import YamlAliasError, YamlDuplicateKeyError, load_yaml
    from geostp.errors import ConfigError

    out: dict = {}
    seen: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--arg {pair!r} is not KEY=VALUE; expected e.g. --arg importer=mch_gif "
                              "--arg timestep=5 --arg 'importer_kwargs={accutime: 5}'")
        if key.strip() in out:  # as a YAML mapping that gives a key twice: refused, not the last one silently
            raise ConfigError(f"--arg {key.strip()} is given twice ({seen[key.strip()]!r}, then {pair!r}); "
                              "expected each key once")
        seen[key.strip()] = pair
        try:
            out[key.strip()] = load_yaml(value, where=f"--arg {key.strip()}") if value.strip() else ""
        except (YamlAliasError, YamlDuplicateKeyError):  # refused as such, not taken for plain text
            raise
        except ConfigError:
            out[key.strip()] = value  # not YAML: the text as it is
    return out


def _cmd_ingest(args: argparse.Namespace) -> int:
    from geostp.checks import count
    from geostp.cube import describe
    from geostp.data.adapters import open_source
    from geostp.data.catalog import open_catalog
    from geostp.errors import ConfigError
    from geostp.store import ingest, open_cube

    count(args.time_chunk, "--time-chunk", what="frames per chunk")
    count(args.spatial_chunk, "--spatial-chunk", what="pixels per chunk side")
    extra = _parse_adapter_args(args.arg or [])
    if args.adapter is not None:
        if args.source is not None or args.catalog is not None:
            raise ConfigError("give either a catalog source (SOURCE --catalog NAME) or --adapter NAME, not both")
        source, name = args.adapter, args.adapter
    else:
        if args.source is None or args.catalog is None:
            raise ConfigError("nothing to ingest: give SOURCE with --catalog NAME, or --adapter NAME "
                              "with --arg KEY=VALUE ...")
        source, name = open_catalog(args.catalog).source(args.source), args.source
    cube = open_source(source, extra)
    # ingest() writes into a '.partial-' sibling and renames it when complete; a run that was
    # interrupted leaves only that partial folder, which the next run removes before it starts.
    store = ingest(cube, args.out, time_chunk=args.time_chunk, spatial_chunk=args.spatial_chunk,
                   overwrite=args.overwrite, progress=not args.quiet, source=name, client=args.dask_scheduler)
    print(describe(open_cube(store)))
    print(f"wrote {store}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from geostp.cube import describe
    from geostp.store import open_cube, verify_store

    check = verify_store(args.path, full=args.verify)  # a damaged store is an error before anything is printed
    print(describe(open_cube(args.path, verify="none")))
    print(f"verified: {check}" if check.manifest else f"note: {check}")
    return 0


def _cmd_catalogs(args: argparse.Namespace) -> int:
    from geostp.data.catalog import catalog_dirs, catalog_files, open_catalog

    found = catalog_files()
    if not found:
        print("geostp: error: no catalog found; searched (in order): "
              + ", ".join(str(d) for d in catalog_dirs()) + " ($GEOSTP_CATALOGS, then the built-in catalogs)",
              file=sys.stderr)
        return 1
    for stem, f in found.items():
        cat = open_catalog(f)
        print(f"{stem}: {cat.description}  [{f}]")
        for name in cat.names():
            print(f"  {name:24s} {cat.entry(name).adapter:16s} {cat.entry(name).description}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import geostp.models as models

    failed = 0
    for name in models.names():
        try:
            cls = models.model_class(name)  # a plug-in's class is imported here
        except GeostpError as exc:
            print(f"{name:16s} (not usable: {exc})")
            failed += 1
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        first = re.sub(r":\w+:`~?([^`]*)`", r"\1", doc[0]).replace("``", "") if doc else ""  # plain, not reST
        kind = "learned" if cls.trainable else "baseline"
        print(f"{name:16s} {kind:9s} {first}  [{cls.__module__}]")
    if failed:
        print(f"geostp: error: {failed} model(s) cannot be loaded (listed above as 'not usable'); expected every "
              "installed plug-in to load", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    """``geostp run`` / ``geostp nowcast``: load a recipe (with --set overrides) and run it."""
    from geostp.errors import ConfigError
    from geostp.recipes.bundled import resolve_recipe
    from geostp.recipes.schema import load_recipe, recipe_to_yaml

    if args.reference_time is not None:  # a time that is not one is refused before the recipe is even read
        from geostp.cube import parse_time

        args.reference_time = parse_time(args.reference_time, argument="--reference-time")
    from geostp.recipes.resolve import check_sources, check_watch

    check_watch(args.watch, args.poll, args.max_polls, names=("--poll", "--max-polls"))
    recipe = load_recipe(resolve_recipe(args.recipe), args.set or [])
    if args.command == "nowcast" and recipe.kind != "nowcast":
        raise ConfigError(f"{recipe.where}: kind: 'geostp nowcast' runs kind 'nowcast' recipes, this one is "
                          f"{recipe.kind!r} (use 'geostp run')")
    if args.check:
        check_sources(recipe)  # the catalog, sources and adapters it names, without reading any data
        print(recipe_to_yaml(recipe), end="")
        return 0
    from geostp.cluster import dask_client
    from geostp.train import ddp

    nproc = getattr(args, "nproc", None)
    if nproc is not None:
        if nproc < 1:
            raise ConfigError(f"--nproc {nproc}; expected 1 or more processes")
        if nproc > 1 and recipe.kind != "train":
            raise ConfigError(f"--nproc is for kind 'train' recipes; {recipe.where} is kind {recipe.kind!r}")
        if nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the processes; each runs this command
            return ddp.launch_local(args.argv, nproc)
    from geostp.recipes.run import run_recipe

    # Under torchrun (or --nproc) join the process group: the trainer then runs DDP.
    grouped = ddp.init_from_env() if recipe.kind == "train" else False
    try:
        with dask_client(getattr(args, "dask_scheduler", None)):
            result = run_recipe(recipe, watch=args.watch, poll_seconds=args.poll, max_polls=args.max_polls,
                                reference_time=args.reference_time, progress=not args.quiet)
    finally:
        if grouped:
            ddp.shutdown()
    if recipe.kind != "nowcast" and ddp.is_main_process():
        for f in result.files:
            print(f"wrote {f}")
    if result.exit_code:  # a cycle skipped or refused: said on stderr too, --quiet or not
        print(f"geostp: error: {_failed_run(recipe, result)}", file=sys.stderr)
    return result.exit_code


def _failed_run(recipe, result) -> str:
    """One line on a run that ended without its output: the nowcast cycle's outcome and reason, and the log."""
    rec = result.cycles[-1] if result.cycles else {}
    log = recipe.output.log or (result.out_dir / "nowcast.log.jsonl")
    what = (f"the nowcast cycle for reference time {rec.get('reference_time', '?')} was {rec.get('outcome', 'not run')}"
            if recipe.kind == "nowcast" else f"the {recipe.kind} run failed")
    return f"{recipe.where}: {what}: {rec.get('reason', 'see the log')}; no forecast was written (log: {log})"


#: dask.distributed moves tasks and results as pickles: whoever runs the scheduler (or a worker) runs code here.
_SCHEDULER_TRUST = ("Security: dask sends tasks and results as pickles, so a tcp:// scheduler and its workers can "
                    "run any code in this process and read the data; connect only to a cluster you control on a "
                    "trusted network, or use tls:// with dask's security settings (docs/scale-out.md).")


def _example_names() -> str:
    from geostp.recipes.bundled import example_recipes

    return ", ".join(example_recipes()) or "(none)"


def _add_run_parser(sub) -> None:
    for name, text in (("run", "run a recipe: kind train, evaluate or nowcast"),
                       ("nowcast", "run a nowcast recipe once, or --watch a feed folder")):
        p = sub.add_parser(name, help=text, description=text + ". Values of --set are read as YAML.")
        p.add_argument("recipe", help="a recipe YAML file (see docs/recipes.md), or the name of an example "
                                      "recipe shipped with geostp: " + _example_names())
        p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                       help="override a recipe value, e.g. --set training.max_iterations=10 (repeatable)")
        p.add_argument("--check", action="store_true", help="check the recipe and print it resolved; run nothing")
        p.add_argument("--watch", action="store_true",
                       help="nowcast: keep polling for new frames until SIGTERM/SIGINT")
        p.add_argument("--poll", type=float, default=None,
                       help="nowcast --watch: seconds between polls, a number > 0 (default: nowcast.poll_seconds)")
        p.add_argument("--max-polls", type=int, default=None,
                       help="nowcast --watch: stop after this many polls (1 or more)")
        p.add_argument("--reference-time", default=None,
                       help="nowcast once: forecast from this reference time (ISO 8601, e.g. 2024-07-01T12:30; "
                            "UTC unless it names a zone) instead of the newest")
        p.add_argument("--quiet", action="store_true", help="no progress bars or score tables")
        if name == "run":
            p.add_argument("--nproc", type=int, default=None, metavar="N",
                           help="train with N local processes (DDP; gloo on CPU, nccl on GPUs); for "
                                "several machines use torchrun -m geostp run (docs/scale-out.md)")
        p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                       help="compute the dask work (statistics, evaluation) on a dask.distributed scheduler: "
                            "tcp://host:8786, or local:N for N local worker processes. " + _SCHEDULER_TRUST)
        p.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    from geostp._version import __version__

    parser = argparse.ArgumentParser(prog="geostp", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"geostp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND",
                                help="one of these (each has its own --help):")

    text = "the end-to-end nowcast demo on the embedded synthetic radar"
    p = sub.add_parser("demo", help=text, description=text + ": ingest, forecast, verify, write a CF netCDF.")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--minutes", type=float, default=2.0,
                   help="training budget in minutes when the model is fitted on the demo's history (a model "
                        "without shipped weights); a second run with the same data and settings loads it from "
                        "the model store (default: 2)")
    p.add_argument("--fine-tune-minutes", type=float, default=0.0,
                   help="fine-tune the shipped pretrained TAU on the demo's history for this long (default: 0)")
    p.add_argument("--model", default="tau",
                   help="the learned model (default: tau, the pretrained advection-aware TAU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("ingest", help="write a catalog source or an adapter's cube into a zarr store",
                       description="Write a cube into a chunked zarr store, atomically: either a catalog source "
                                   "(SOURCE --catalog NAME) or an adapter with its arguments (--adapter NAME "
                                   "--arg KEY=VALUE ...). Re-running after an interruption starts cleanly.")
    p.add_argument("source", nargs="?", help="source name in the catalog")
    p.add_argument("--catalog", help="a catalog's name (geostp catalogs lists them) or a catalog file")
    p.add_argument("--adapter", help="an adapter name (radar, netcdf, taxibj, ...) to call without a catalog")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE",
                   help="an adapter argument (repeatable; the value is read as YAML); with a catalog source it "
                        "overrides the catalog's argument")
    p.add_argument("--out", "-o", required=True, help="zarr store to write")
    p.add_argument("--time-chunk", type=int, default=20, help="frames per chunk, 1 or more (default: 20)")
    p.add_argument("--spatial-chunk", type=int, default=256,
                   help="pixels per chunk side, 1 or more; clipped to the grid (default: 256)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="write on a dask.distributed cluster: tcp://host:8786 (the workers must reach --out), "
                        "or local:N for N local worker processes. " + _SCHEDULER_TRUST)
    p.set_defaults(func=_cmd_ingest)

    text = "describe a cube store (dims, time range, gaps, projection)"
    p = sub.add_parser("info", help=text, description="Describe a cube store: dims, variables, time range, gaps "
                                                       "and map projection.")
    p.add_argument("path", help="a zarr store written by geostp ingest")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk and compare its digest with the manifest ingest wrote (without it, "
                        "only that every chunk is there with its size); a damaged store is an error naming the "
                        "chunk")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("catalogs", help="list the catalogs and their sources",
                       description="List the catalogs and their sources: those in the folders of "
                                   "$GEOSTP_CATALOGS, then the built-in ones; exits 1 where none is found.")
    p.set_defaults(func=_cmd_catalogs)

    p = sub.add_parser("models", help="list the models, built-in and from installed plug-ins",
                       description="List the models usable by name: geostp's own and those installed packages "
                                   "declare in the entry-point group geostp.models; exits 1 where one cannot be "
                                   "loaded.")
    p.set_defaults(func=_cmd_models)

    _add_run_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc hands each process
    try:
        return int(args.func(args) or 0)
    except GeostpError as exc:
        print(f"geostp: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a file geostp did not expect to fail on: say which, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"geostp: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geostp: error: interrupted (Ctrl-C or SIGINT) before the command finished", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
