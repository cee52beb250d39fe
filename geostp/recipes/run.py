"""Run a recipe: wiring only (open the data, build the model, call the trainer / forecaster / metrics / nowcast runner).

Every decision lives in the library (``geostp.stream``, ``geostp.train``,
``geostp.forecast``, ``geostp.metrics``, ``geostp.operate``); this module maps
the recipe's sections onto those calls, writes the resolved recipe beside
every output and inside every checkpoint (``metadata["recipe"]``; its
``${VAR}`` references as written, never their values:
:func:`geostp.recipes.schema.stored_recipe`), and turns data-dependent
problems into errors that name the recipe key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import xarray as xr

from geostp.data.adapters import AdapterArgumentsError, Source, UnknownAdapterError, open_source
from geostp.errors import ConfigError, CubeError, UnknownNameError, writing
from geostp.recipes.schema import (
    Crop,
    OutputSection,
    Recipe,
    SourceEntry,
    expanded_references,
    load_recipe,
    recipe_to_yaml,
    resolved_model_args,
    stored_recipe,
)
from geostp.writers import (
    RECOGNISE_BYTES,
    atomic_path,
    atomic_write_text,
    check_own_file,
    head_bytes,
    is_json_object_with,
    redacted,
)

__all__ = ["RunResult", "run_recipe", "run_file", "open_data", "crop_slices", "build_forecaster", "check_outputs",
           "RECIPE_HEADER"]


@dataclass
class RunResult:
    """What a run produced: its folder, the files written, and kind-specific results."""

    kind: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    scores: xr.Dataset | None = None
    checkpoint: Path | None = None
    cycles: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0


def _where(recipe: Recipe) -> str:
    return recipe.where


#: The first line of every recipe copy a run writes (``output.dir/recipe.yaml``): how the next run into the folder
#: knows the file is geostp's to replace.  A YAML comment: the copy still loads as a recipe.
RECIPE_HEADER = "# geostp: the resolved recipe of this run (written by geostp; every run into this folder replaces it)\n"


def _is_recipe_copy(path: Path) -> bool:
    """Whether ``path`` is a recipe copy geostp wrote: its header, or (a copy written before the header) the
    resolved recipe itself: every top-level key of a recipe and every key of ``output``, as only a copy has them."""
    data = head_bytes(path, RECOGNISE_BYTES + 1)
    if data.startswith(RECIPE_HEADER.split("(")[0].encode()):
        return True
    if len(data) > RECOGNISE_BYTES:
        return False
    from geostp.data.safe_yaml import load_yaml

    doc = load_yaml(data.decode("utf-8"), where=str(path))
    return isinstance(doc, dict) and set(doc) == set(Recipe.model_fields) and isinstance(doc.get("output"), dict) \
        and set(doc["output"]) == set(OutputSection.model_fields)


def _is_score_table(path: Path) -> bool:
    """Whether ``path`` is the table :func:`geostp.evaluate.format_table` writes (its header row)."""
    first = head_bytes(path, 1 << 16).split(b"\n", 1)[0].split()
    return first[:2] == [b"model", b"score"]


def _is_scores_file(path: Path) -> bool:
    """Whether ``path`` is a netCDF file of scores an evaluation wrote (dims model and lead_time)."""
    if head_bytes(path, 4)[:3] not in (b"CDF", b"\x89HD"):
        return False
    with xr.open_dataset(path, decode_cf=False) as ds:
        return {"model", "lead_time"} <= set(ds.dims)


#: The files a run writes under a fixed name in ``output.dir``: how each is recognised as geostp's own, what it
#: is and what was expected there (:func:`geostp.writers.check_own_file`).
_OWN_FILES: dict[str, tuple[Any, str, str]] = {
    "recipe.yaml": (_is_recipe_copy, "copy of the resolved recipe",
                    f"a recipe copy geostp wrote (first line {RECIPE_HEADER.split('(')[0].strip()!r})"),
    "history.json": (lambda p: is_json_object_with(p, ("stopped", "iterations", "steps")), "training history",
                     "the JSON object a training run writes (stopped, iterations, steps)"),
    "scores.json": (lambda p: is_json_object_with(p, ("cases", "lead_times", "scores")), "scores",
                    "the JSON object an evaluation writes (cases, lead_times, scores)"),
    "scores.txt": (_is_score_table, "score table", "the table an evaluation writes (a header row 'model  score ...')"),
    "scores.nc": (_is_scores_file, "scores", "a netCDF file of scores an evaluation wrote (dims model, lead_time)"),
}
#: The checkpoints a training run writes in ``output.dir``.
_CHECKPOINTS = ("model.pt", "checkpoints/last.pt", "checkpoints/best.pt")


def _check_own(recipe: Recipe, path: Path) -> Path:
    """Refuse (a WriteError naming it) to replace ``path`` (one of :data:`_OWN_FILES` or :data:`_CHECKPOINTS`)
    unless it is missing, empty or a file geostp wrote."""
    hint = f"move it away, or set output.dir of {_where(recipe)} to another folder"
    if path.name.endswith(".pt"):
        from geostp.train.checkpoint import check_replaceable

        return check_replaceable(path, hint=hint)
    is_own, what, expected = _OWN_FILES[path.name]
    return check_own_file(path, is_own, what=what, expected=expected, hint=hint)


def check_outputs(recipe: Recipe) -> None:
    """Before a run writes anything: every file it would replace under a fixed name in ``output.dir``
    (``recipe.yaml``; a training run's ``model.pt``, checkpoints and ``history.json``; an evaluation's ``scores.*``)
    is missing, empty or a file geostp wrote; anything else is a :class:`~geostp.errors.WriteError` naming it and
    what was expected, raised before the run starts.  A nowcast runner checks its own log, lock and grid record
    (:func:`geostp.operate.journal.check_runner_files`)."""
    out = recipe.output_dir
    names = ["recipe.yaml"]
    if recipe.kind == "train":
        names += ["history.json", *_CHECKPOINTS]
    if recipe.evaluation is not None and recipe.kind in ("train", "evaluate"):
        names += ["scores.nc", "scores.txt", "scores.json"]
    for name in names:
        _check_own(recipe, out / name)


def _atomic_write(path: Path, text: str, recipe: Recipe | None = None) -> Path:
    if recipe is not None:
        _check_own(recipe, path)
    return atomic_write_text(path, text)


def save_resolved(recipe: Recipe, out_dir: Path) -> Path:
    """Write the resolved recipe (every default filled in) as ``out_dir/recipe.yaml``, under :data:`RECIPE_HEADER`;
    a ``recipe.yaml`` there that geostp did not write (the user's own) is refused (a WriteError) and left as it is."""
    return _atomic_write(out_dir / "recipe.yaml", RECIPE_HEADER + recipe_to_yaml(recipe), recipe)


# ----------------------------------------------------------------------------- data


def crop_slices(crop: Crop, ny: int, nx: int, where: str = "recipe") -> dict[str, slice]:
    """The ``isel`` slices of a crop on a ``ny x nx`` grid (ConfigError if it does not fit)."""
    out: dict[str, slice] = {}
    if crop.size is not None:
        h, w = crop.shape()  # type: ignore[misc]
        if h > ny or w > nx:
            raise ConfigError(f"{where}: data.crop.size: {h} x {w} is larger than the grid ({ny} x {nx})")
        y0, x0 = crop.offset if crop.offset is not None else ((ny - h) // 2, (nx - w) // 2)
        if y0 < 0 or x0 < 0 or y0 + h > ny or x0 + w > nx:
            raise ConfigError(f"{where}: data.crop.offset: [{y0}, {x0}] + {h} x {w} leaves the grid ({ny} x {nx})")
        return {"y": slice(y0, y0 + h), "x": slice(x0, x0 + w)}
    for axis, n in (("y", ny), ("x", nx)):
        r = getattr(crop, axis)
        if r is not None:
            if r[1] > n:
                raise ConfigError(f"{where}: data.crop.{axis}: {list(r)} reaches beyond the grid's {n} pixels")
            out[axis] = slice(r[0], r[1])
    return out


def _source(recipe: Recipe) -> Source:
    """The recipe's source: ``data.adapter`` with ``data.args``, or a catalog source with ``data.args`` over its own."""
    from geostp.data.catalog import open_catalog

    d = recipe.data
    where = _where(recipe)
    if d.adapter is not None:
        return Source(d.adapter, dict(d.args), d.adapter)
    try:
        catalog = open_catalog(d.catalog)  # type: ignore[arg-type]
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: data.catalog: {exc}") from None
    try:
        source = catalog.source(d.source)  # type: ignore[arg-type]
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: data.source: {exc}") from None
    return Source(source.adapter, {**source.args, **d.args}, f"{d.catalog}:{d.source}")


def _open_source(recipe: Recipe) -> xr.Dataset:
    """The recipe's source as a lazy cube (:func:`geostp.data.adapters.open_source`), errors keyed by recipe path."""
    where = _where(recipe)
    try:
        return open_source(_source(recipe))
    except UnknownAdapterError as exc:
        raise ConfigError(f"{where}: {'data.adapter' if recipe.data.adapter else 'data.source'}: {exc}") from None
    except AdapterArgumentsError as exc:
        raise ConfigError(f"{where}: data.args: {exc}") from None


def open_data(recipe: Recipe) -> xr.Dataset:
    """The recipe's cube: the source, its time range, sequences, crop and variables; via the store if one is named."""
    from geostp.cube import validate_cube
    from geostp.store import ingest, open_cube

    d = recipe.data
    where = _where(recipe)
    fingerprint = json.dumps(d.model_dump(mode="json", include={"catalog", "source", "adapter", "args", "variables",
                                                                  "time", "crop", "sequences"}), sort_keys=True)
    # stored as a digest: the expanded arguments may hold what an environment variable holds (a secret)
    digest = "sha256:" + hashlib.sha256(fingerprint.encode()).hexdigest()
    if d.store is not None and Path(d.store).exists():
        cube = open_cube(d.store)
        if cube.attrs.get("geostp_recipe_data") not in (digest, fingerprint):  # the plain text: stores before
            raise ConfigError(f"{where}: data.store: {d.store} was ingested from other data settings (source, "
                              "args, time, crop, variables or sequences differ); delete it or name another store")
        return cube
    cube = _open_source(recipe)
    if d.time is not None:
        cube = cube.sel(time=slice(d.time.start, d.time.end))
        if cube.sizes["time"] == 0:
            raise ConfigError(f"{where}: data.time: {d.time.start} .. {d.time.end} selects no frame of the source")
    if d.sequences is not None:
        if "sequence" not in cube.dims:
            raise ConfigError(f"{where}: data.sequences: the cube has no 'sequence' dim")
        cube = cube.isel(sequence=slice(0, d.sequences))
    if d.crop is not None:
        cube = cube.isel(crop_slices(d.crop, cube.sizes["y"], cube.sizes["x"], where))
    if d.variables is not None:
        missing = [v for v in d.variables if v not in cube.data_vars]
        if missing:
            raise ConfigError(f"{where}: data.variables: {missing} not in the data; it has "
                              f"{[v for v in cube.data_vars if cube[v].ndim >= 3]}")
        keep = set(d.variables)
        cube = cube.drop_vars([v for v in cube.data_vars if v not in keep and cube[v].ndim >= 3])
    validate_cube(cube, source=where, check_values=False)
    if d.store is not None:
        cube.attrs["geostp_recipe_data"] = digest
        ingest(cube, d.store, progress=False, source=where)
        cube = open_cube(d.store)
    return cube


# ----------------------------------------------------------------------------- models


def _models():
    import geostp.models as models

    return models


def _build(name: str, args: dict[str, Any]):
    models = _models()
    getter = getattr(models, "get", None)
    if getter is not None:
        return getter(name, **args)
    from geostp.models.base import build_model

    return build_model(name, **args)


def fixed_normalizer(kind: str | None, variables: list[str]):
    """A baseline's working space: a pointwise transform, no standardisation; missing data is 'no rain'."""
    if kind is None or kind == "none":
        return None
    from geostp.stream import Normalizer, Transform

    t = Transform(kind=kind)
    zero = float(np.asarray(t.forward(np.zeros(1, np.float32)))[0])
    return Normalizer(variables, {v: t for v in variables}, {v: 0.0 for v in variables},
                      {v: 1.0 for v in variables}, fill_value=zero)


def build_forecaster(recipe: Recipe, variables: list[str], *, steps: int | None = None):
    """The recipe's model as a :class:`~geostp.forecast.FittedForecaster`: a checkpoint, or a baseline by name."""
    from geostp.forecast import FittedForecaster, load_forecaster

    if recipe.model.checkpoint is not None:
        return load_forecaster(recipe.model.checkpoint)
    args = resolved_model_args(recipe, channels=len(variables))
    if steps is not None:
        args.setdefault("output_steps", steps)
    normalizer = fixed_normalizer(recipe.model.transform, list(variables))
    return FittedForecaster(model=_build(recipe.model.name, args), variables=list(variables),  # type: ignore[arg-type]
                            normalizer=normalizer, fill_value=normalizer.fill_value if normalizer else 0.0,
                            metadata={"recipe": stored_recipe(recipe)})


def _baseline(name: str, args: dict[str, Any], variables: list[str], steps: int, transform: str | None = None):
    from geostp.forecast import FittedForecaster

    args = {"channels": len(variables), "output_steps": steps, **args}
    normalizer = fixed_normalizer(transform, list(variables))
    return FittedForecaster(model=_build(name, args), variables=list(variables), normalizer=normalizer,
                            fill_value=normalizer.fill_value if normalizer else 0.0)


# ----------------------------------------------------------------------------- train


def _splits(recipe: Recipe, cube: xr.Dataset):
    from geostp.stream import split_cube

    s = recipe.data.splits
    if s is None:
        return {}
    given = {k: (tuple(tuple(r) if isinstance(r, list) else r for r in v) if isinstance(v, list)
                 and v and isinstance(v[0], list) else v) for k, v in s.given().items()}
    try:
        return split_cube(cube, by=s.by, **given)
    except ConfigError as exc:
        raise ConfigError(f"{_where(recipe)}: data.splits: {exc}") from None


def _window_spec(recipe: Recipe, model: Any, cube: xr.Dataset):
    from geostp.stream import RainFilter, WindowSpec

    d = recipe.data
    where = _where(recipe)
    patch = stride = None
    if d.patches is not None:
        ph, pw = d.patches.shape()
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        if ph > ny or pw > nx:
            raise ConfigError(f"{where}: data.patches.size: {ph} x {pw} is larger than the grid ({ny} x {nx}"
                              f"{' after data.crop' if d.crop else ''})")
        patch = (ph, pw)
        stride = d.patches.stride
    else:
        m = int(getattr(model, "spatial_multiple", 1))
        if cube.sizes["y"] % m or cube.sizes["x"] % m:
            raise ConfigError(f"{where}: data.patches: whole-domain samples of {cube.sizes['y']} x "
                              f"{cube.sizes['x']} are not a multiple of {m}, which the model needs; set "
                              "data.patches.size or data.crop")
    rain = RainFilter(**d.rain.model_dump()) if d.rain is not None else None
    return WindowSpec(input_steps=model.input_steps, output_steps=model.output_steps, stride=d.windows.stride,
                      patch_size=patch, patch_stride=stride,
                      random_patches=d.patches.random if d.patches is not None else 0, rain=rain)


#: Where a recipe sets what each training-pipeline stage complains about (``ConfigError.stage``).
#: Training-section keys that are the loader's, not the trainer's.
_LOADER_KEYS = {"batch_size", "workers", "resume", "batches_per_epoch", "window_stride"}
_STAGE_KEYS = {"transforms": "data.transforms", "train_windows": "data.splits.train",
               "validation_windows": "data.splits.validation"}


def open_entry(recipe: Recipe, entry: SourceEntry, path: str) -> xr.Dataset:
    """One catalog source of ``data.catalog`` (a corpus member or the evaluation event): time range, variables."""
    from geostp.cube import validate_cube
    from geostp.data.catalog import open_catalog

    where = _where(recipe)
    try:
        source = open_catalog(recipe.data.catalog).source(entry.source)  # type: ignore[arg-type]
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {path}: {exc}") from None
    try:
        cube = open_source(Source(source.adapter, {**source.args, **entry.args}, f"{recipe.data.catalog}:"
                                                                                f"{entry.source}"))
    except (UnknownAdapterError, AdapterArgumentsError) as exc:
        raise ConfigError(f"{where}: {path}: {exc}") from None
    if entry.time is not None:
        cube = cube.sel(time=slice(entry.time.start, entry.time.end))
        if cube.sizes["time"] == 0:
            raise ConfigError(f"{where}: {path}.time: {entry.time.start} .. {entry.time.end} selects no frame")
    if recipe.data.variables is not None:
        missing = [v for v in recipe.data.variables if v not in cube.data_vars]
        if missing:
            raise ConfigError(f"{where}: data.variables: {missing} not in {entry.source}")
        keep = set(recipe.data.variables)
        cube = cube.drop_vars([v for v in cube.data_vars if v not in keep and cube[v].ndim >= 3])
    cube.attrs["source_name"] = entry.source
    validate_cube(cube, source=f"{where}: {path}", check_values=False)
    return cube


def _training_cubes(recipe: Recipe, cube: xr.Dataset | None, variable: str) -> list[xr.Dataset]:
    """What an advection-aware recipe trains on: the corpus (harmonised), or the training split of its cube."""
    from geostp.stream.lagrangian import harmonise

    d = recipe.data
    if d.sources is not None:
        cubes = [open_entry(recipe, e, f"data.sources[{i}]") for i, e in enumerate(d.source_entries())]
    else:
        assert cube is not None
        train = _splits(recipe, cube).get("train")
        cubes = [cube.isel(time=train.time_mask(cube)) if train is not None else cube]
    h = d.harmonise
    try:
        return harmonise(cubes, variable, pixel=h.pixel if h else None, step=h.step if h else None)
    except ConfigError as exc:
        raise ConfigError(f"{_where(recipe)}: data.harmonise: {exc}") from None


def _advection_job(recipe: Recipe, args: dict[str, Any], variables: list[str], settings: Any, out: Path):
    from geostp.pipeline import TrainingJob

    m, tr, d = recipe.model, recipe.training, recipe.data
    assert tr is not None
    validation = d.splits.validation if d.splits is not None and isinstance(d.splits.validation, float) else 0.15
    return TrainingJob(
        model=m.name, model_args=args, variables=variables, settings=settings,  # type: ignore[arg-type]
        batch_size=tr.batch_size, patch_size=d.patches.shape()[0] if d.patches is not None else 64,
        validation_fraction=validation, transforms=d.transforms, advection=True,
        base="sprog" if m.advection == "sprog" else "extrapolation", loss=m.loss,
        probability_matching=m.probability_matching, lead_gate=m.lead_gate, batches_per_epoch=tr.batches_per_epoch,
        window_stride=tr.window_stride, checkpoint_dir=out / "checkpoints", resume=tr.resume,
        metadata={"recipe": stored_recipe(recipe)})


def train(recipe: Recipe, *, progress: bool = True) -> RunResult:
    """Train the recipe's model (the one training pipeline, :func:`geostp.pipeline.train_forecaster`); then
    evaluate it when the recipe has an evaluation section."""
    from geostp.pipeline import TrainingJob
    from geostp.stream.windows import cube_variables
    from geostp.train.settings import TrainSettings

    where = _where(recipe)
    check_outputs(recipe)  # a user's file under a name the run writes: refused before anything is written
    out = output_folder(recipe)
    files = [save_resolved(recipe, out)]
    if recipe.data.sources is not None:
        return _train_corpus(recipe, out, files, progress)
    cube = open_data(recipe)
    variables = list(cube_variables(cube, recipe.data.variables))
    args = resolved_model_args(recipe, channels=len(variables))
    try:
        net = _build(recipe.model.name, args)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"{where}: model.args: {exc}") from None
    tr = recipe.training
    assert tr is not None
    if recipe.model.advection is not False:
        settings = TrainSettings(**tr.model_dump(exclude=_LOADER_KEYS))
        cubes = _training_cubes(recipe, cube, variables[0])
        return _run_training(recipe, cubes, _advection_job(recipe, args, variables, settings, out), out, files,
                             cube, progress)
    splits = _splits(recipe, cube)
    job = TrainingJob(
        model=recipe.model.name, model_args=args, variables=variables,  # type: ignore[arg-type]
        settings=TrainSettings(**tr.model_dump(exclude=_LOADER_KEYS)),
        batch_size=tr.batch_size, workers=tr.workers, window=_window_spec(recipe, net, cube),
        splits={"train": splits.get("train"), "validation": splits.get("validation")},
        transforms=recipe.data.transforms, store=recipe.data.store, checkpoint_dir=out / "checkpoints",
        resume=tr.resume, metadata={"recipe": stored_recipe(recipe)})
    return _run_training(recipe, cube, job, out, files, cube, progress)


def _train_corpus(recipe: Recipe, out: Path, files: list[Path], progress: bool) -> RunResult:
    """A corpus recipe (data.sources): the model trains advection-aware on every source, verified on
    evaluation.source."""
    from geostp.train.settings import TrainSettings

    tr = recipe.training
    assert tr is not None
    first = open_entry(recipe, recipe.data.source_entries()[0], "data.sources[0]")
    variables = [str(v) for v in first.data_vars if first[v].ndim >= 3]
    if len(variables) != 1:
        raise ConfigError(f"{_where(recipe)}: data.variables: a corpus trains one rain variable; the sources have "
                          f"{variables}")
    args = resolved_model_args(recipe, channels=1)
    settings = TrainSettings(**tr.model_dump(exclude=_LOADER_KEYS))
    cubes = _training_cubes(recipe, None, variables[0])
    job = _advection_job(recipe, args, variables, settings, out)
    return _run_training(recipe, cubes, job, out, files, None, progress)


def _run_training(recipe: Recipe, cubes: Any, job: Any, out: Path, files: list[Path], cube: xr.Dataset | None,
                  progress: bool) -> RunResult:
    """The pipeline on ``cubes``; the model and its history written; the evaluation when the recipe has one."""
    from geostp.pipeline import train_forecaster

    where = _where(recipe)
    try:
        outcome = train_forecaster(cubes, job, progress=progress)
    except ConfigError as exc:
        key = _STAGE_KEYS.get(getattr(exc, "stage", "") or "", "data.windows")
        raise ConfigError(f"{where}: {key}: {exc}") from None
    if outcome.fitted is None:  # DDP: rank 0 writes the model and history and evaluates
        return RunResult("train", out, files=[], checkpoint=outcome.checkpoint)
    fitted, result = outcome.fitted, outcome.result
    model_path = fitted.save(_check_own(recipe, out / "model.pt"))
    files += [model_path, _atomic_write(out / "history.json", json.dumps(
        {"stopped": result.stopped, "iterations": result.iteration, "epochs": result.epochs,
         "steps": result.history}, default=float), recipe)]
    res = RunResult("train", out, files=files, checkpoint=model_path)
    if recipe.evaluation is not None:
        ev = evaluate(recipe, fitted=fitted, cube=cube, write_recipe=False, progress=progress)
        res.files += ev.files
        res.scores = ev.scores
    return res


# ----------------------------------------------------------------------------- evaluate


def _reference_cases(recipe: Recipe, cube: xr.Dataset, t_in: int, steps: int) -> np.ndarray:
    from geostp.stream import WindowSpec
    from geostp.stream.windows import temporal_windows

    ev = recipe.evaluation
    assert ev is not None
    split = None if ev.source is not None else _splits(recipe, cube).get(ev.split)  # a corpus: the whole event
    try:
        cases = temporal_windows(cube, WindowSpec(input_steps=t_in, output_steps=steps), split=split)
    except ConfigError as exc:
        raise ConfigError(f"{_where(recipe)}: evaluation: {exc}") from None
    cases = cases[::ev.every]
    if ev.max_cases is not None and cases.size > ev.max_cases:
        cases = cases[np.unique(np.linspace(0, cases.size - 1, ev.max_cases).round().astype(int))]
    return cases


def evaluate(recipe: Recipe, *, fitted: Any = None, cube: xr.Dataset | None = None, write_recipe: bool = True,
             progress: bool = True) -> RunResult:
    """Score the recipe's model (or ``fitted``) and its baselines on the evaluation split, per lead time."""
    from geostp.evaluate import Verification, format_table, score_cases
    from geostp.stream.windows import cube_variables

    ev = recipe.evaluation
    assert ev is not None
    if write_recipe:
        check_outputs(recipe)  # a user's file under a name the run writes: refused before anything is written
    out = output_folder(recipe)
    files = [save_resolved(recipe, out)] if write_recipe else []
    if ev.source is not None:
        cube = open_entry(recipe, ev.source, "evaluation.source")
    elif cube is None:
        cube = open_data(recipe)
    if fitted is None:
        variables = list(cube_variables(cube, recipe.data.variables))
        fitted = build_forecaster(recipe, variables)
    variables = list(fitted.variables)
    steps = ev.steps or recipe.data.windows.output_steps or int(fitted.model.output_steps)
    label = recipe.model.name or fitted.name
    contenders = {label: fitted}
    for b in ev.baseline_specs():
        contenders[b.label or b.name] = _baseline(b.name, b.args, variables, steps, b.transform)
    t_in = max(int(f.model.input_steps) for f in contenders.values())
    cases = _reference_cases(recipe, cube, t_in, steps)
    try:
        verification = Verification(metrics=tuple(ev.metrics), thresholds=tuple(ev.thresholds),
                                    scales=tuple(ev.scales), data_range=ev.data_range)
    except ConfigError as exc:
        raise ConfigError(f"{_where(recipe)}: evaluation.metrics: {exc}") from None
    try:
        scores = score_cases(cube, contenders, cases, steps=steps, verification=verification, progress=progress,
                             tile=ev.tile, overlap=ev.overlap, transfer=ev.source is not None)
    except (ConfigError, CubeError) as exc:
        raise ConfigError(f"{_where(recipe)}: evaluation: {exc}") from None
    # attrs["cases"]: the cases scored (score_cases leaves out, with a warning, those an outage left without data)
    scores.attrs.update({"split": ev.split, "recipe": json.dumps(stored_recipe(recipe))})
    secrets = expanded_references(recipe)  # paths in the attributes (a checkpoint's) may hold an expanded secret
    for name in [None, *scores.variables]:
        target = scores if name is None else scores[name]
        target.attrs = redacted(dict(target.attrs), secrets)
    table = format_table(scores)
    if progress:
        print(table)
    nc = _check_own(recipe, out / "scores.nc")
    with atomic_path(nc) as tmp:
        scores.to_netcdf(tmp)
    leads = scores["lead_time"].values
    lead_labels = ([f"{int(v / np.timedelta64(1, 'm'))}min" for v in leads]
                   if np.issubdtype(leads.dtype, np.timedelta64) else [str(v) for v in leads])
    as_json = {"cases": int(scores.attrs["cases"]), "split": ev.split, "lead_times": lead_labels,
               "skipped_reference_times": list(scores.attrs["skipped_reference_times"]),
               "scores": {str(m): {k: [None if not np.isfinite(x) else float(x)
                                       for x in scores[k].sel(model=m).values] for k in scores.data_vars}
                          for m in scores["model"].values}}
    files += [nc, _atomic_write(out / "scores.txt", table + "\n", recipe),
              _atomic_write(out / "scores.json", json.dumps(as_json, indent=1), recipe)]
    return RunResult("evaluate", out, files=files, scores=scores)


def output_folder(recipe: Recipe) -> Path:
    """The recipe's ``output.dir``, created: a :class:`~geostp.errors.WriteError` naming it where it cannot be
    (a read-only folder, a regular file)."""
    out = recipe.output_dir
    with writing(out, f"output folder (output.dir of {_where(recipe)})"):
        out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- nowcast


def nowcast_runner(recipe: Recipe, *, echo: TextIO | str | None = "stdout"):
    """A :class:`geostp.operate.NowcastRunner` for a nowcast recipe (not yet started)."""
    from geostp.operate import FeedPolicy, FileFeed, NowcastRunner

    where = _where(recipe)
    nc = recipe.nowcast
    assert nc is not None
    adapter, args, _label = _source(recipe)
    # nowcast.files, time_pattern, extension, time_step default to the adapter's own arguments in data.args,
    # as its FeedSupport names them; nowcast.file_arg, if not the default, must be the one it declares
    file_arg = nc.file_arg if nc.file_arg != type(nc).model_fields["file_arg"].default else None
    try:
        feed = FileFeed(adapter, args, files=nc.files or None, time_pattern=nc.time_pattern or None,
                        extension=nc.extension or None, file_arg=file_arg, time_step=nc.time_step or None,
                        variables=recipe.data.variables)
    except ConfigError as exc:
        raise ConfigError(f"{where}: nowcast: {exc}") from None
    if recipe.model.checkpoint is not None:
        from geostp.forecast import load_forecaster

        forecaster = load_forecaster(recipe.model.checkpoint)
    else:
        if recipe.data.variables is None:
            raise ConfigError(f"{where}: data.variables: required for a nowcast with the baseline "
                              f"{recipe.model.name!r} (the variables to forecast)")
        forecaster = build_forecaster(recipe, list(recipe.data.variables), steps=nc.steps)
    crop = recipe.data.crop
    policy = FeedPolicy(wait_for_late=nc.wait_for_late, on_missing=nc.on_missing, max_filled=nc.max_filled,
                        catch_up=nc.catch_up, max_attempts=nc.max_attempts, expected_shape=nc.expected_shape,
                        future_tolerance=nc.future_tolerance)
    out = output_folder(recipe)
    return NowcastRunner(
        feed, forecaster, steps=nc.steps, out_dir=out, formats=recipe.output.formats, maps=recipe.output.maps,
        policy=policy, crop=(lambda ny, nx: crop_slices(crop, ny, nx, where)) if crop is not None else None,
        log_path=recipe.output.log, echo=echo, attrs={"geostp_recipe": stored_recipe(recipe)},
        redact=expanded_references(recipe),
        device=nc.device, tile=nc.tile)


def nowcast(recipe: Recipe, *, watch: bool = False, poll_seconds: float | None = None,
            max_polls: int | None = None, reference_time: Any = None,
            echo: TextIO | str | None = "stdout") -> RunResult:
    """One nowcast cycle (the newest complete inputs), or ``watch`` the feed until SIGTERM/SIGINT."""
    from geostp.operate.journal import check_runner_files

    # files the run would replace or append to that geostp did not write (the user's recipe.yaml, a log that is
    # the user's notes or the recipe itself) are refused before anything is created
    check_outputs(recipe)
    log = recipe.output.log
    check_runner_files(recipe.output_dir, Path(log) if log else None)
    runner = nowcast_runner(recipe, echo=echo)
    with runner:
        files = [save_resolved(recipe, runner.out_dir)]
        if watch:
            poll = poll_seconds if poll_seconds is not None else recipe.nowcast.poll_seconds  # type: ignore[union-attr]
            runner.watch(poll, max_polls=max_polls)
            return RunResult("nowcast", runner.out_dir, files=files)
        rec = runner.run_once(reference_time or recipe.nowcast.reference_time)  # type: ignore[union-attr]
    code = 0 if rec["outcome"] in ("written", "exists") else 1
    return RunResult("nowcast", runner.out_dir, files=files + [runner.out_dir / o for o in rec.get("outputs", [])],
                     cycles=[rec], exit_code=code)


# ----------------------------------------------------------------------------- entry points


def run_recipe(recipe: Recipe, *, watch: bool = False, poll_seconds: float | None = None,
               max_polls: int | None = None, reference_time: Any = None, progress: bool = True) -> RunResult:
    """Run a loaded recipe according to its kind (its data's names are resolved first: :mod:`geostp.recipes.resolve`)."""
    from geostp.recipes.resolve import check_sources, check_watch

    if watch and recipe.kind != "nowcast":
        raise ConfigError(f"{_where(recipe)}: kind: --watch is for kind 'nowcast', not {recipe.kind!r}")
    check_watch(watch, poll_seconds, max_polls)
    check_sources(recipe)
    if recipe.kind == "train":
        return train(recipe, progress=progress)
    if recipe.kind == "evaluate":
        return evaluate(recipe, progress=progress)
    return nowcast(recipe, watch=watch, poll_seconds=poll_seconds, max_polls=max_polls,
                   reference_time=reference_time)


def run_file(path: str | os.PathLike[str], overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """``load_recipe(path, overrides)`` then :func:`run_recipe`."""
    return run_recipe(load_recipe(path, overrides), **kwargs)
