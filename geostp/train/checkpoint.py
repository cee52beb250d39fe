"""Checkpoints: everything needed to forecast or resume, written atomically and loaded safely.

A checkpoint is a dict of tensors and plain containers only (numbers, strings,
lists, dicts), saved with :func:`torch.save` and loaded with
``torch.load(weights_only=True)``: a crafted file holding a pickled callable
is refused instead of run.  Anything richer (the model config, normalisation,
the cube schema, the settings) is stored as JSON text inside it.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from geostp.errors import CheckpointError
from geostp.writers import atomic_path, check_own_file

__all__ = ["save_checkpoint", "load_checkpoint", "is_checkpoint", "check_replaceable", "check_finite_weights",
           "FORMAT"]

FORMAT = "geostp-checkpoint-1"
_JSON_KEYS = ("model_config", "metadata", "train_state")


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint geostp wrote: a torch zip file whose record says ``format: FORMAT``.

    Only the record is read (weights-only, the tensors memory-mapped, not loaded); a file that is not a zip
    archive is not unpickled at all.  Anything unreadable is not a checkpoint.
    """
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file() or not zipfile.is_zipfile(path):
            return False
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def check_replaceable(path: str | os.PathLike[str], *, what: str = "checkpoint",
                      hint: str = "move it away, choose another path, or pass overwrite=True to replace it "
                                  "anyway") -> Path:
    """Refuse (a :class:`~geostp.errors.WriteError` naming it) to replace ``path`` unless it is missing, empty or
    a geostp checkpoint (:func:`is_checkpoint`); ``hint`` says what to do instead."""
    return check_own_file(path, is_checkpoint, what=what, expected=f"a geostp checkpoint (format {FORMAT!r})",
                          hint=hint)


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``payload`` atomically (:func:`geostp.writers.atomic_path`): a complete file or the previous one.

    The keys ``model_config``, ``metadata`` and ``train_state`` are serialised
    as JSON text; everything else must be tensors or plain containers.

    An existing file at ``path`` is replaced only if it is a geostp checkpoint (the trainer's ``last.pt`` written
    again, a model saved again); any other file (a user's, a symbolic link) is refused with a
    :class:`~geostp.errors.WriteError` naming it and left as it is, unless ``overwrite`` is true.
    """
    path = Path(path)  # atomic_path makes its folder (a WriteError naming it where it cannot)
    if not overwrite:
        check_replaceable(path)
    data = {"format": FORMAT}
    for key, value in payload.items():
        data[key] = json.dumps(value, default=_json_default) if key in _JSON_KEYS else value
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(data, f)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; JSON parts come back as Python objects.

    Raises
    ------
    CheckpointError
        If the file is missing, not a geostp checkpoint, or holds anything but
        tensors and plain containers (it could run code when unpickled).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; expected a checkpoint file (.pt) written by geostp")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            f"containers, which could run code when loaded ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} could not be read ({type(exc).__name__}: {str(exc)[:200]}); "
                              "expected a file written by geostp") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a geostp checkpoint (format {found!r}; expected {FORMAT!r})")
    for key in _JSON_KEYS:
        if key in data:
            try:
                data[key] = json.loads(data[key])
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"checkpoint {path}: its {key!r} is not JSON text ({exc}); expected the JSON "
                                      "object geostp writes (a damaged or hand-made file?)") from None
            if not isinstance(data[key], dict):
                raise CheckpointError(f"checkpoint {path}: its {key!r} is a JSON {type(data[key]).__name__}; "
                                      "expected a JSON object (a mapping of names to values)")
    return data


def check_finite_weights(state_dict: Any, path: str | os.PathLike[str]) -> None:
    """Refuse a model's weights (``state_dict``, name -> tensor) that hold NaN or infinity: a model with them
    forecasts NaN everywhere.  The :class:`CheckpointError` names the checkpoint ``path`` and the first such
    tensor.  Anything that is not a mapping of tensors is left to the model's own ``load_state_dict``."""
    if not isinstance(state_dict, dict):
        return
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()):
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(f"checkpoint {path}: weight tensor {name!r} holds {bad} non-finite value(s) (NaN "
                                  f"or inf) of {value.numel()}; expected finite weights (a training run that "
                                  "diverged, or a damaged file?): use an earlier checkpoint or train again")
