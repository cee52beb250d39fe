"""The recipe schema: a strict, typed description of a train, evaluate or nowcast run.

A recipe is a YAML file with these top-level keys (see ``docs/recipes.md``)::

    kind: train | evaluate | nowcast
    name: mch-tau                  # names the run (default: the file's stem)
    description: ...
    data:       where the cube comes from and how samples are cut
    model:      a registered model name and its typed arguments, or a checkpoint
    training:   geostp.train.settings.TrainSettings plus batch_size / workers (kind: train)
    evaluation: metrics, thresholds, scales, baselines (kind: train or evaluate)
    nowcast:    feed policy of an operational run (kind: nowcast)
    output:     where results go

Every section forbids unknown keys.  Loading a recipe checks, besides types,
what can be known before any data is read: model arguments against the
registered class's own constructor (names, types, and by building it on the
``meta`` device, its own range checks), input/output steps and channels
against the data section, the patch against the crop and the model's spatial
multiple, and which sections make sense for the kind.  Every failure is a
:class:`~geostp.errors.ConfigError` whose message starts with the recipe's
file and the key path, e.g. ``recipe.yaml: model.args.hidden_channel:
unknown argument; model 'tau' accepts ...``.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from geostp.errors import ConfigError, UnknownNameError
from geostp.names import plain_name
from geostp.recipes.sections import (  # noqa: F401 (re-exported: the sections are part of the schema)
    Baseline,
    Crop,
    DataSection,
    EvaluationSection,
    Harmonise,
    ModelSection,
    NowcastSection,
    OutputSection,
    Pair,
    Patches,
    Rain,
    Recipe,
    SourceEntry,
    Splits,
    TimeRange,
    TrainingSection,
    Windows,
    _Strict,
)

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
    "load_recipe",
    "parse_recipe",
    "apply_overrides",
    "model_class",
    "resolved_model_args",
    "recipe_to_yaml",
    "stored_recipe",
    "expanded_references",
]

# ----------------------------------------------------------------------------- loading


def _fail(where: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {path}: {msg}" if path else f"{where}: {msg}")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic names union members (e.g. 'float', 'list[any]', 'function-after[...]'): not keys
            if isinstance(part, str) and ("[" in part or part in ("float", "int", "str", "bool", "list", "tuple")):
                continue
            out += ("." if out else "") + str(part)
    return out


def _validation_message(where: str, exc: ValidationError) -> ConfigError:
    seen: dict[str, str] = {}
    for err in exc.errors():
        path = _loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            msg = f"unknown key{' in ' + parent if parent else ''}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:  # a validator's own message (a ValueError) needs no 'Value error, ' before it; "[i] ..." names an item
            text = str(err["msg"]).removeprefix("Value error, ")
            item = re.match(r"\[(\d+)\] ", text) if err["type"] == "value_error" else None
            if item is not None:
                path, msg = f"{path}[{item.group(1)}]", text[item.end():]
            else:
                msg = f"{text} (got {err.get('input')!r})"
        seen.setdefault(path, msg)
    lines = [f"{where}: {p}: {m}" if p else f"{where}: {m}" for p, m in seen.items()]
    return ConfigError("; ".join(lines))


def _set_path(raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: --set {dotted}=...: empty key in the path")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]  # noqa: B018 - bounds check
            except (ValueError, IndexError):
                raise ConfigError(f"{where}: --set {dotted}: {'.'.join(parts[:i]) or 'recipe'} is a list of "
                                  f"{len(node)}; expected an index 0..{len(node) - 1}") from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: --set {dotted}: {'.'.join(parts[:i])} is a {type(node).__name__}, "
                              "not a mapping")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any] | None,
                    where: str = "recipe") -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values read as YAML) to a raw recipe dict (a copy is returned)."""
    out = copy.deepcopy(raw)
    if not overrides:
        return out
    items = list(overrides.items()) if isinstance(overrides, dict) else [_split_override(o, where) for o in overrides]
    _check_once([k for k, _ in items], [str(o) for o in overrides] if isinstance(overrides, list) else
                [f"{k}={v}" for k, v in items], where)
    for key, value in items:
        _forget_other_name(out, key)
        _set_path(out, key, value, where)
    return out


def _check_once(keys: list[str], texts: list[str], where: str) -> None:
    """Each setting once: a key path given twice (or under its old name too), or inside another one given, is a
    ConfigError naming both (as a YAML mapping that gives a key twice), not the last one winning silently."""
    seen: dict[tuple[str, ...], str] = {}
    for key, text in zip(keys, texts, strict=True):
        parts = tuple(str(key).split("."))
        renamed = _RENAMED_KEYS.get(parts) if len(parts) == 2 else None  # type: ignore[call-overload]
        path = (parts[0], renamed) if renamed else parts
        for other, before in seen.items():
            if path[:len(other)] == other or other[:len(path)] == path:
                same = "is given twice" if other == path else f"overlaps --set {before.partition('=')[0]}"
                raise ConfigError(f"{where}: --set {key} {same} (--set {before!r}, then --set {text!r}); "
                                  "expected each setting once")
        seen[path] = text


#: Recipe keys renamed, (section, old name) -> new name: the old name is still read for one release (with a
#: DeprecationWarning); what a run writes has the new one.
_RENAMED_KEYS = {("training", "max_steps"): "max_iterations"}


def _forget_other_name(raw: dict[str, Any], dotted: str) -> None:
    """An override of a renamed key replaces the value under either name (an old recipe, the new key on --set)."""
    parts = dotted.split(".")
    for (section, old), new in _RENAMED_KEYS.items():
        if len(parts) == 2 and parts[0] == section and parts[1] in (old, new) and isinstance(raw.get(section), dict):
            raw[section].pop(new if parts[1] == old else old, None)


def _split_override(text: str, where: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where}: --set {text!r} is not KEY.PATH=VALUE; expected e.g. "
                          "--set training.max_iterations=10 or --set 'model.args={spatial_blocks: 2}'")
    from geostp.data.safe_yaml import YamlAliasError, YamlDuplicateKeyError, load_yaml

    try:
        parsed = load_yaml(value, where=f"{where}: --set {key.strip()}") if value.strip() else None
    except (YamlAliasError, YamlDuplicateKeyError):  # refused as such, not taken for plain text
        raise
    except ConfigError:
        parsed = value  # not YAML: the text as it is
    return key.strip(), parsed


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Read, override, expand and check a recipe file.

    Parameters
    ----------
    path
        A YAML recipe.
    overrides
        ``["training.max_iterations=5", ...]`` (values parsed as YAML) or a dict from
        key path to value.

    Raises
    ------
    ConfigError
        Naming the file and the key path of the first problems found.
    """
    from geostp.checks import as_path

    p = as_path(path, "load_recipe: path", expected="a recipe YAML file")
    where = p.name
    if not p.exists():
        raise ConfigError(f"recipe {p} does not exist")
    from geostp.data.safe_yaml import load_yaml, read_yaml_text

    raw = load_yaml(read_yaml_text(p, what="recipe"), where=where)  # refuses anchors and aliases (alias bombs)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with keys kind, data, model, ...; got {type(raw).__name__}")
    raw.setdefault("name", p.stem)
    return parse_recipe(raw, overrides=overrides, where=where)


def parse_recipe(raw: dict[str, Any], *, overrides: list[str] | dict[str, Any] | None = None,
                 where: str = "recipe") -> Recipe:
    """Validate a recipe given as a dict (see :func:`load_recipe`)."""
    from geostp.data.catalog import expand_env

    written = apply_overrides(raw, overrides, where)
    raw = expand_env(written, where=where)
    try:
        recipe = Recipe.model_validate(raw, context={"where": where})
    except ValidationError as exc:
        raise _validation_message(where, exc) from None
    recipe._where = where
    recipe._written = written
    check_recipe(recipe, where)
    return recipe


#: A ``${VAR}`` or ``${VAR:-default}`` reference (the syntax :func:`geostp.data.catalog.expand_env` expands).
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def _put_back_references(resolved: Any, written: Any) -> Any:
    """``resolved`` with every string of ``written`` that holds a ``${VAR}`` reference put back at its place."""
    if isinstance(written, str):
        return written if _REFERENCE.search(written) else resolved
    if isinstance(written, dict) and isinstance(resolved, dict):
        out = dict(resolved)
        renamed = {old: new for (_, old), new in _RENAMED_KEYS.items()}
        for key, value in written.items():
            name = key if key in out else renamed.get(key, key)
            if name in out:
                out[name] = _put_back_references(out[name], value)
        return out
    if isinstance(written, list) and isinstance(resolved, list) and len(written) == len(resolved):
        return [_put_back_references(r, w) for r, w in zip(resolved, written, strict=True)]
    return resolved


def stored_recipe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as geostp stores it (``recipe.yaml``, checkpoints' ``metadata["recipe"]``, forecast files'
    ``geostp_recipe``, scores): every default filled in, and every value written with a ``${VAR}`` reference kept as
    written, so that what an environment variable holds (a password, a token) is never written to a file; the run
    itself uses the expanded values, and loading the stored recipe expands them again."""
    return _put_back_references(recipe.model_dump(mode="json"), recipe._written)


def expanded_references(recipe: Recipe) -> dict[str, str]:
    """``{value: "${VAR}"}`` for each environment variable the recipe as written refers to and that is set (not
    empty): what a log replaces to keep those values out of its lines."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            names.update(_REFERENCE.findall(node))
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(recipe._written)
    return {os.environ[n]: f"${{{n}}}" for n in sorted(names) if os.environ.get(n)}


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (every default filled in; ``${VAR}`` references as written:
    :func:`stored_recipe`)."""
    return yaml.safe_dump(stored_recipe(recipe), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------- semantic checks


def model_class(name: str) -> type:
    """The registered model class called ``name`` (UnknownNameError lists the registered ones)."""
    import geostp.models as models

    return models.model_class(name)


def _accepted(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _default_of(cls: type, arg: str) -> Any:
    p = _accepted(cls).get(arg)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _check_arg_type(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (None if it fits); YAML strings are never coerced to numbers."""
    try:
        adapter = TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot build a schema for: construction will judge
        return None
    try:
        result = adapter.validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    if isinstance(value, str) and not isinstance(result, str):
        return f"a string where {getattr(annotation, '__name__', annotation)} is expected"
    if isinstance(value, bool) and not isinstance(result, bool):
        return "a boolean where a number is expected"
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and isinstance(result, int) \
            and not isinstance(value, int):
        return f"{value!r} is not an integer"
    return None


def check_model_args(name: str, args: dict[str, Any], where: str, path: str = "model") -> type:
    """Check ``args`` against the constructor of the registered model ``name``; return its class."""
    try:
        cls = model_class(name)
    except UnknownNameError as exc:
        raise _fail(where, f"{path}.name", str(exc)) from None
    accepted = _accepted(cls)
    shown = ", ".join(accepted)
    for key in args:
        if key not in accepted:
            raise _fail(where, f"{path}.args.{key}", f"unknown argument; model {name!r} accepts {shown}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: construction below still checks
        hints = {}
    for key, value in args.items():
        if key in hints:
            problem = _check_arg_type(value, hints[key])
            if problem:
                ann = hints[key]
                shown_type = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
                raise _fail(where, f"{path}.args.{key}", f"{problem}; expected {shown_type}")
    _construct(cls, name, args, where, path)
    return cls


def _construct(cls: type, name: str, args: dict[str, Any], where: str, path: str) -> Any:
    """Build the model on the meta device (no memory for weights): its own range checks run."""
    import torch

    try:
        with torch.device("meta"):
            return cls(**args)
    except ConfigError as exc:
        msg = str(exc)
        names = sorted(args, key=len, reverse=True)
        key = next((k for k in names if msg.startswith(k)), None) or \
            next((k for k in names if re.search(rf"\b{re.escape(k)}\b", msg)), None)
        raise _fail(where, f"{path}.args.{key}" if key else f"{path}.args", msg) from None
    except TypeError as exc:
        raise _fail(where, f"{path}.args", f"model {name!r} rejected its arguments: {exc}") from None
    except (NotImplementedError, RuntimeError):
        return None  # an operation the meta device lacks: the real build at run time will tell


def resolved_model_args(recipe: Recipe, channels: int | None = None) -> dict[str, Any]:
    """``model.args`` with ``input_steps``/``output_steps``/``channels`` filled from the data section."""
    args = dict(recipe.model.args)
    w = recipe.data.windows
    if w.input_steps is not None:
        args.setdefault("input_steps", w.input_steps)
    if w.output_steps is not None:
        args.setdefault("output_steps", w.output_steps)
    n = channels if channels is not None else (len(recipe.data.variables) if recipe.data.variables else None)
    if n is not None:
        args.setdefault("channels", n)
    return args


# Over 80 lines: one data-dependent check per recipe section, each naming its key.
def check_recipe(recipe: Recipe, where: str = "recipe") -> None:
    """The checks that need no data (module docstring); raises ConfigError with the key path."""
    d, m, kind = recipe.data, recipe.model, recipe.kind

    # names that become file names: the run folder runs/<name>; variable names (a store's array folders)
    if recipe.name is not None:
        plain_name(recipe.name, "name", where=where,
                   why="it names the run's folder runs/<name> when output.dir is not given; by default it is the "
                       "recipe file's name without .yaml")
    for i, v in enumerate(d.variables or []):
        plain_name(v, f"data.variables[{i}]", where=where, why="a variable's name becomes a folder of a store")

    # data: where from
    if d.sources is not None:
        _check_corpus(recipe, where)
    elif d.adapter is not None and (d.catalog is not None or d.source is not None):
        raise _fail(where, "data.adapter", "give either data.catalog + data.source or data.adapter, not both")
    if d.sources is None and d.adapter is None and (d.catalog is None or d.source is None):
        missing = "data.source" if d.catalog is not None else "data.catalog"
        raise _fail(where, missing, "required: name a catalog source (data.catalog and data.source) "
                                    "or an adapter (data.adapter with data.args)")
    if d.crop is not None:
        c = d.crop
        if c.size is not None and (c.y is not None or c.x is not None):
            raise _fail(where, "data.crop", "give either size (with an optional offset) or y/x ranges, not both")
        if c.size is None and (c.y is None) != (c.x is None) and c.offset is None:
            pass  # cropping one axis only is allowed
        if c.offset is not None and c.size is None:
            raise _fail(where, "data.crop.offset", "only used with data.crop.size")
        for axis in ("y", "x"):
            r = getattr(c, axis)
            if r is not None and not 0 <= r[0] < r[1]:
                raise _fail(where, f"data.crop.{axis}", f"{list(r)} is not a range [start, stop) with "
                                                        "0 <= start < stop")
        shape = c.shape()
        if shape is not None and min(shape) < 1:
            raise _fail(where, "data.crop.size", f"{shape} must be positive")
    if d.variables is not None and (not d.variables or len(set(d.variables)) != len(d.variables)):
        raise _fail(where, "data.variables", f"{d.variables}: expected one or more distinct variable names")

    if recipe.output.maps and kind != "nowcast":
        raise _fail(where, "output.maps", f"only a nowcast draws maps; kind {kind!r} would draw none (remove it)")

    # sections per kind
    unused = {"train": ("nowcast",), "evaluate": ("training", "nowcast"), "nowcast": ("training", "evaluation")}
    for section in unused[kind]:
        if getattr(recipe, section) is not None:
            raise _fail(where, section, f"not used by kind {kind!r}; remove it (or change kind)")
    if kind == "train":
        if recipe.training is None:
            recipe.training = TrainingSection()
        if d.sources is None and (d.splits is None or "train" not in d.splits.given()):
            raise _fail(where, "data.splits.train", "kind 'train' needs a training split (a fraction, time "
                                                    "ranges or sequence indices)")
        if m.checkpoint is not None:
            raise _fail(where, "model.checkpoint", "kind 'train' builds model.name from model.args; to continue "
                                                   "a run use training.resume (output.dir/checkpoints/last.pt)")
    if kind == "nowcast":
        if recipe.nowcast is None:
            recipe.nowcast = NowcastSection()
        if d.patches is not None or d.splits is not None or d.rain is not None:
            bad = next(k for k in ("patches", "splits", "rain") if getattr(d, k) is not None)
            raise _fail(where, f"data.{bad}", "not used by kind 'nowcast' (a nowcast runs on the newest frames "
                                              "of the whole, or cropped, domain)")
    if kind == "evaluate" and recipe.evaluation is None:
        recipe.evaluation = EvaluationSection()
    if recipe.evaluation is not None and recipe.evaluation.source is not None and d.sources is None:
        raise _fail(where, "evaluation.source", "only for a corpus (data.sources); a recipe of one source is "
                                                "verified on its evaluation.split")
    if recipe.evaluation is not None and kind in ("train", "evaluate") and d.sources is None:
        split = recipe.evaluation.split
        given = d.splits.given() if d.splits is not None else {}
        if given and split not in given:
            raise _fail(where, "evaluation.split", f"{split!r} is not one of data.splits ({', '.join(given)})")

    # model: name / checkpoint
    if m.checkpoint is not None:
        if m.transform is not None:
            raise _fail(where, "model.transform", "not used with model.checkpoint (it carries its normaliser)")
        if m.args:
            raise _fail(where, "model.args", "not used with model.checkpoint (the checkpoint records the "
                                             "model's arguments)")
        ck = Path(m.checkpoint)
        if not ck.is_file():
            raise _fail(where, "model.checkpoint", f"file {ck} does not exist")
        _check_checkpoint(recipe, ck, where)
        return
    if m.name is None:
        need = "model.checkpoint" if kind == "nowcast" else "model.name"
        raise _fail(where, need, "required: a registered model name (with model.args) or a checkpoint")
    args = resolved_model_args(recipe)
    cls = check_model_args(m.name, args, where)
    trainable = bool(getattr(cls, "trainable", True))
    if kind == "train" and not trainable:
        raise _fail(where, "model.name", f"model {m.name!r} has nothing to train; use kind: evaluate or "
                                         "kind: nowcast for a baseline")
    if not trainable and m.advection is not False:
        raise _fail(where, "model.advection", f"only for learned models; {m.name!r} has nothing to learn (the "
                                              "optical_flow and sprog baselines advect by themselves)")
    if trainable and m.transform is not None:
        raise _fail(where, "model.transform", f"only for baselines; the learned model {m.name!r} is trained on "
                                              "data.transforms and its checkpoint carries the normaliser")
    if kind in ("nowcast", "evaluate") and trainable:
        raise _fail(where, "model.checkpoint", f"kind {kind!r} with the learned model {m.name!r} needs a "
                                               "trained checkpoint (model.checkpoint); only baselines "
                                               "(untrained models) run from a name")
    _check_steps(recipe, cls, args, where)
    if recipe.evaluation is not None:
        for i, b in enumerate(recipe.evaluation.baseline_specs()):
            bcls = check_model_args(b.name, b.args, where, path=f"evaluation.baselines[{i}]")
            if getattr(bcls, "trainable", True):
                raise _fail(where, f"evaluation.baselines[{i}].name",
                            f"{b.name!r} is a learned model, not a baseline; compare checkpoints with "
                            "separate evaluate recipes")


def _check_corpus(recipe: Recipe, where: str) -> None:
    """A corpus (data.sources): catalog sources, trained advection-aware, verified on evaluation.source."""
    d = recipe.data
    if d.adapter is not None or d.source is not None:
        raise _fail(where, "data.sources", "give either data.source (one) or data.sources (a corpus), not both, "
                                           "and no data.adapter")
    if d.catalog is None:
        raise _fail(where, "data.catalog", "required: data.sources names sources of this catalog")
    if not d.sources:
        raise _fail(where, "data.sources", "name at least one catalog source")
    if recipe.kind != "train":
        raise _fail(where, "data.sources", f"a corpus trains a model (kind: train), not kind {recipe.kind!r}")
    if recipe.model.advection is False:
        raise _fail(where, "model.advection", "a corpus trains advection-aware: set it to true, extrapolation or "
                                              "sprog")
    for key in ("crop", "rain", "store"):
        if getattr(d, key) is not None:
            raise _fail(where, f"data.{key}", "not used with data.sources (patches are drawn by rain fraction from "
                                              "each whole source)")
    s = d.splits
    if s is not None and (s.train is not None or s.test is not None or not isinstance(s.validation, float | None)):
        raise _fail(where, "data.splits", "with data.sources only validation, a fraction of each source's times, "
                                          "is used; the test event is evaluation.source")
    if recipe.evaluation is not None and recipe.evaluation.source is None:
        raise _fail(where, "evaluation.source", "required with data.sources: the event to verify on")


def _check_steps(recipe: Recipe, cls: type, args: dict[str, Any], where: str) -> None:
    d = recipe.data
    w = d.windows
    for key in ("input_steps", "output_steps"):
        mine = getattr(w, key)
        theirs = recipe.model.args.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            raise _fail(where, f"data.windows.{key}", f"{mine} differs from model.args.{key}: {theirs}; "
                                                      "give it once (the other follows)")
    if d.variables is not None and "channels" in recipe.model.args and \
            recipe.model.args["channels"] != len(d.variables):
        raise _fail(where, "model.args.channels", f"{recipe.model.args['channels']} differs from the "
                                                  f"{len(d.variables)} data.variables {d.variables}")
    if recipe.kind == "train" and args.get("input_steps", _default_of(cls, "input_steps")) is None:
        raise _fail(where, "data.windows.input_steps", "required (or model.args.input_steps)")
    _check_patch(recipe, _spatial_multiple(cls, args), where)


def _spatial_multiple(cls: type, args: dict[str, Any]) -> int:
    import torch

    try:
        with torch.device("meta"):
            return int(getattr(cls(**args), "spatial_multiple", 1))
    except Exception:  # construction problems were reported by check_model_args
        return 1


def _check_patch(recipe: Recipe, multiple: int, where: str) -> None:
    d = recipe.data
    if d.patches is None:
        return
    ph, pw = d.patches.shape()
    if min(ph, pw) < 1:
        raise _fail(where, "data.patches.size", f"{d.patches.size} must be positive")
    if ph % multiple or pw % multiple:
        raise _fail(where, "data.patches.size", f"{ph} x {pw} is not a multiple of {multiple}, which model "
                                                f"{recipe.model.name!r} needs with these arguments")
    if d.crop is not None and (shape := d.crop.shape()) is not None and (ph > shape[0] or pw > shape[1]):
        raise _fail(where, "data.patches.size", f"{ph} x {pw} is larger than the grid "
                                                f"({shape[0]} x {shape[1]} after data.crop)")
    if d.patches.random and d.patches.stride is not None and d.patches.random < 0:
        raise _fail(where, "data.patches.random", "must be >= 0")


def _check_checkpoint(recipe: Recipe, path: Path, where: str) -> None:
    """A checkpoint's recorded model against the data section."""
    from geostp.errors import CheckpointError
    from geostp.train.checkpoint import load_checkpoint

    try:
        ck = load_checkpoint(path)
    except CheckpointError as exc:
        raise _fail(where, "model.checkpoint", str(exc)) from None
    config = ck.get("model_config") or {}
    meta = ck.get("metadata") or {}
    if recipe.model.name is not None and recipe.model.name.lower() != str(ck.get("model_name", "")).lower():
        raise _fail(where, "model.name", f"{recipe.model.name!r} but {path} holds model {ck.get('model_name')!r}")
    w = recipe.data.windows
    if w.input_steps is not None and config.get("input_steps") not in (None, w.input_steps):
        raise _fail(where, "data.windows.input_steps", f"{w.input_steps} but the checkpoint's model reads "
                                                       f"{config['input_steps']} frames (T_in)")
    variables = meta.get("variables")
    if recipe.data.variables is not None and variables is not None and list(recipe.data.variables) != variables:
        raise _fail(where, "data.variables", f"{recipe.data.variables} but the checkpoint was trained on "
                                             f"{variables}")
