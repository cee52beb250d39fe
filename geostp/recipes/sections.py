"""The sections of a recipe: strict, typed pydantic models (one per top-level key).

What each key means is in ``docs/recipes.md``; :mod:`geostp.recipes.schema` loads
a YAML file into :class:`Recipe` and runs the checks that need no data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    field_validator,
)

from geostp.cube import parse_time
from geostp.options import NumbersNotBools
from geostp.train.settings import TrainSettings

__all__ = [
    "Recipe",
    "DataSection",
    "ModelSection",
    "TrainingSection",
    "EvaluationSection",
    "NowcastSection",
    "OutputSection",
    "SourceEntry",
    "Harmonise",
    "TimeRange",
    "Crop",
    "Splits",
    "Windows",
    "Patches",
    "Rain",
    "Baseline",
]

Pair = int | tuple[int, int]


class _Strict(NumbersNotBools):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


# ----------------------------------------------------------------------------- data


class TimeRange(_Strict):
    """Keep frames with ``start <= time <= end`` (dates as strings; frame numbers for video)."""

    start: str | int | None = None
    end: str | int | None = None


class Crop(_Strict):
    """A sub-domain in pixel indices: ``y``/``x`` half-open ranges, or a ``size`` (centred unless ``offset``)."""

    y: tuple[int, int] | None = None
    x: tuple[int, int] | None = None
    size: Pair | None = None
    offset: tuple[int, int] | None = Field(None, description="(y0, x0) of a crop given by size; default centred")

    def shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the crop when it can be known without the data."""
        if self.size is not None:
            return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)  # type: ignore[return-value]
        if self.y is not None and self.x is not None:
            return (self.y[1] - self.y[0], self.x[1] - self.x[0])
        return None


class Splits(_Strict):
    """Train / validation / test parts: fractions, lists of ``[start, end)`` time ranges, or sequence indices."""

    train: float | list[Any] | None = None
    validation: float | list[Any] | None = None
    test: float | list[Any] | None = None
    by: Literal["time", "sequence"] | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k in ("train", "validation", "test") if (v := getattr(self, k)) is not None}


class Windows(_Strict):
    """Frames in (``input_steps``, T_in) and out (``output_steps``, T_out) of a sample; ``stride`` between windows."""

    input_steps: int | None = Field(None, ge=1)
    output_steps: int | None = Field(None, ge=1)
    stride: int = Field(1, ge=1)


class Patches(_Strict):
    """Spatial patches: ``size`` (pixels), lattice ``stride``, and ``random`` patches per window (0: the whole lattice)."""

    size: Pair
    stride: Pair | None = None
    random: int = Field(0, ge=0)

    def shape(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)  # type: ignore[return-value]


class Rain(_Strict):
    """Keep samples with rain in their input frames (:class:`geostp.stream.RainFilter`)."""

    threshold: float = 0.1
    min_fraction: float = Field(0.05, ge=0, le=1)
    keep_dry: float = Field(0.02, ge=0, le=1)
    variable: str | None = None


class SourceEntry(_Strict):
    """One catalog source of a training corpus (or the evaluation event of one): its name, time range, arguments."""

    source: str
    time: TimeRange | None = None
    args: dict[str, Any] = Field(default_factory=dict, description="adapter arguments (override the catalog's)")


class Harmonise(_Strict):
    """The common pixel size and time step of a corpus (:func:`geostp.stream.lagrangian.harmonise`)."""

    pixel: float | None = Field(None, gt=0, description="pixel size in the grid's units (metres); finer grids are "
                                                         "averaged over whole blocks")
    step: str | None = Field(None, description="time step, e.g. '5min'; finer steps keep every k-th frame")


class DataSection(_Strict):
    """Where the cube comes from (a catalog source, or an adapter with arguments) and how samples are cut."""

    catalog: str | None = Field(None, description="catalog name (catalogs/NAME.yaml) or path")
    source: str | None = Field(None, description="source name in the catalog")
    sources: list[str | SourceEntry] | None = Field(
        None, description="several catalog sources trained on together (a corpus; advection-aware models only)")
    harmonise: Harmonise | None = Field(None, description="corpus: resample to a common pixel size and step")
    adapter: str | None = Field(None, description="an adapter name, instead of a catalog source")
    args: dict[str, Any] = Field(default_factory=dict, description="adapter arguments (override the catalog's)")
    store: str | None = Field(None, description="zarr store: ingested once from the source, then read from")
    variables: list[str] | None = None
    time: TimeRange | None = None
    crop: Crop | None = None
    splits: Splits | None = None
    windows: Windows = Field(default_factory=Windows)
    patches: Patches | None = None
    rain: Rain | None = None
    transforms: Literal["auto"] | dict[str, str] = "auto"
    sequences: int | None = Field(None, ge=1, description="use only the first N sequences of a clip collection")

    def source_entries(self) -> list[SourceEntry]:
        return [e if isinstance(e, SourceEntry) else SourceEntry(source=e) for e in self.sources or []]


# ----------------------------------------------------------------------------- model


class ModelSection(_Strict):
    """A registered model (``name`` + ``args``), or a ``checkpoint`` written by geostp."""

    name: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    transform: Literal["none", "db", "log10"] | None = Field(
        None, description="baselines: the space they work in (db: motion and advection of dB, as pysteps does)")
    advection: bool | Literal["extrapolation", "sprog"] = Field(
        False, description="learned models: learn the change of rain in the frame that moves with it, from the "
                           "newest frame (true / extrapolation) or from S-PROG's forecast (sprog)")
    loss: Literal["weighted", "mse"] = Field("weighted", description="advection-aware: rain-weighted or plain")
    probability_matching: bool = Field(False, description="advection-aware: match each lead to the newest "
                                                          "observation's distribution")
    lead_gate: bool = Field(True, description="advection-aware: after training, scale each lead's learned change "
                                              "by the factor in [0, 1] the validation windows support")


class TrainingSection(TrainSettings):
    """:class:`geostp.train.settings.TrainSettings` plus how batches are served.

    ``max_iterations`` is the optimiser-iteration budget; ``max_steps``, its name before ``steps`` came to mean
    lead times only, is still read for one release (a DeprecationWarning names the recipe and the new key).
    """

    batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    batches_per_epoch: int = Field(50, ge=1, description="advection-aware: patches batches drawn per epoch")
    window_stride: int = Field(1, ge=1, description="advection-aware: every k-th window of each cube")
    resume: bool = Field(True, description="continue from output.dir/checkpoints/last.pt when it exists")

    @classmethod
    def _deprecated_max_steps_message(cls, context: dict[str, Any] | None) -> str:
        where = (context or {}).get("where", "recipe")
        return (f"{where}: training.max_steps is deprecated and will not be read after the next release; "
                "call it training.max_iterations (optimiser iterations: 'steps' are lead times)")


class Baseline(_Strict):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    transform: Literal["none", "db", "log10"] | None = None


class EvaluationSection(_Strict):
    """Verification of the model (and baselines) on a split, per lead time."""

    split: str = "test"
    steps: int | None = Field(None, ge=1, description="lead times (default: data.windows.output_steps)")
    metrics: list[str] = Field(default_factory=lambda: ["mse", "mae"])
    thresholds: list[float] = Field(default_factory=list)
    scales: list[int] = Field(default_factory=list)
    data_range: float = Field(1.0, gt=0)
    baselines: list[str | Baseline] = Field(default_factory=list)
    every: int = Field(1, ge=1, description="use every k-th valid reference time")
    source: SourceEntry | None = Field(None, description="a corpus recipe's test event (a catalog source of "
                                                         "data.catalog, all its times)")
    tile: int | None = Field(None, ge=8, description="learned models forecast in tiles of this size")
    overlap: int = Field(16, ge=0)
    max_cases: int | None = Field(50, ge=1, description="at most this many reference times (sequences)")

    def baseline_specs(self) -> list[Baseline]:
        return [b if isinstance(b, Baseline) else Baseline(name=b) for b in self.baselines]


class NowcastSection(_Strict):
    """An operational run over a folder that files arrive in (policy: ``docs/nowcast.md``)."""

    steps: int = Field(12, ge=1, description="lead times per cycle")
    files: str | None = Field(None, description="glob of arriving files (default data.args.pattern)")
    time_pattern: str | None = Field(None, description="file-name time pattern (default data.args.fn_pattern)")
    extension: str | None = Field(None, description="file extension (default data.args.fn_ext)")
    file_arg: str = Field("pattern", description="the adapter argument that receives the list of files")
    time_step: str | float | None = Field(None, description="nominal step (default data.args.timestep)")
    poll_seconds: float = Field(30.0, gt=0)
    wait_for_late: float = Field(120.0, ge=0, description="seconds a cycle waits for a late or unreadable input")
    on_missing: Literal["skip", "fill_previous"] = "skip"
    max_filled: int = Field(1, ge=0, description="fill_previous: at most this many filled inputs per cycle")
    catch_up: int = Field(12, ge=0, description="reference times up to this many steps before the newest are run")
    max_attempts: int = Field(3, ge=1, description="tries of a cycle that fails unexpectedly")
    expected_shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        None, description="(ny, nx) every frame must have: two pixel counts >= 1")
    future_tolerance: float | None = Field(3600.0, ge=0, description="seconds a file's time may be ahead of the "
                                           "wall clock (UTC); files further ahead are ignored (null: no limit)")
    device: str = "cpu"
    tile: int | None = Field(None, ge=8)
    reference_time: str | None = Field(None, description="one-shot runs: this reference time, not the newest")

    @field_validator("reference_time")
    @classmethod
    def _a_time(cls, value: str | None) -> str | None:
        """A reference time that is not a time is refused when the recipe is read, not when the run starts."""
        if value is not None:
            parse_time(value, argument="nowcast.reference_time")
        return value


class OutputSection(_Strict):
    """Where a run writes (relative paths are relative to the working directory)."""

    dir: str | None = Field(None, description="default runs/<name>")
    formats: list[Literal["netcdf", "zarr"]] = Field(default_factory=lambda: ["netcdf"])
    maps: list[StrictStr | StrictInt] = Field(default_factory=list, description="lead times to draw (nowcast; minutes "
                                              "or intervals such as '30min'; needs geostp.plot)")

    @field_validator("maps", mode="before")
    @classmethod
    def _lead_times(cls, value: Any) -> Any:
        """Each map is a positive lead time (minutes, or an interval such as '30min'): refused when the recipe is
        read, not found missing after the run (a map of no lead time would silently not be drawn)."""
        from geostp.conventions import to_timedelta

        for i, lead in enumerate(value if isinstance(value, list) else []):
            try:
                delta = to_timedelta(lead) if isinstance(lead, (str, int)) and not isinstance(lead, bool) else None
            except (TypeError, ValueError, OverflowError):
                delta = None
            if delta is None or delta != delta or delta.total_seconds() <= 0:  # delta != delta: NaT
                raise ValueError(f"[{i}] {lead!r} is not a lead time; expected a positive number of minutes (e.g. "
                                 "30) or an interval string (e.g. '30min', '1h')")
        return value
    log: str | None = Field(None, description="nowcast JSON-lines log (default <dir>/nowcast.log.jsonl)")


class Recipe(_Strict):
    """A whole recipe (module docstring)."""

    kind: Literal["train", "evaluate", "nowcast"]
    name: str | None = None
    description: str = ""
    data: DataSection
    model: ModelSection
    training: TrainingSection | None = None
    evaluation: EvaluationSection | None = None
    nowcast: NowcastSection | None = None
    output: OutputSection = Field(default_factory=OutputSection)
    _where: str = PrivateAttr("recipe")
    #: The recipe as written (overrides applied, ``${VAR}`` references not expanded): what is stored.
    _written: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def where(self) -> str:
        """The recipe's file name, for messages."""
        return self._where

    @property
    def output_dir(self) -> Path:
        """``output.dir``, else ``runs/<name>`` (a name that is not one plain file-name component is refused)."""
        if self.output.dir:
            return Path(self.output.dir)
        from geostp.names import plain_name

        return Path("runs") / plain_name(self.name or "run", "name", where=self._where)
