"""Per-variable transforms and standardisation, computed lazily over the training split and undone exactly.

A variable ``v`` is encoded as ``z = (T(v) - mean) / std`` where ``T`` is its
transform and ``mean``/``std`` are statistics of ``T(v)`` over the finite
values of the training split's frames, computed with dask chunk by chunk.

Transforms
----------
``none``
    ``T(v) = v``.
``log10`` (the default for rain rate, ``standard_name = lwe_precipitation_rate``)
    ``T(R) = log10(max(R, 0) + offset)`` with ``offset = 0.01`` mm/h: 0 mm/h
    maps to -2, 0.1 to -0.96, 1 to 0.004, 10 to 1.0.  Exactly invertible:
    ``R = max(10**T - offset, 0)``.
``db`` (pysteps-like)
    ``T(R) = 10 log10(R)`` dB for ``R >= threshold`` (default 0.1 mm/h), and
    ``zerovalue = 10 log10(threshold) - 5`` dB below it.  The inverse gives
    ``10**(T/10)`` at or above ``10 log10(threshold)`` and 0 below, so rain
    under the threshold decodes to 0.

NaN (missing data) stays NaN through ``encode`` and ``decode``; the dataset
replaces it by ``fill_value`` (in encoded units, default 0, the training
mean) and hands a mask along.  Everything a checkpoint needs to undo the
encoding is in :meth:`Normalizer.to_dict`, a plain JSON-able dict.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from geostp.cube import check_value_range
from geostp.errors import ConfigError, UnknownNameError
from geostp.stream.windows import Split, cube_variables

__all__ = ["Transform", "Normalizer", "compute_statistics", "default_transform"]

_KINDS = ("none", "log10", "db")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass(frozen=True)
class Transform:
    """A pointwise, invertible (above a threshold) transform of a variable.

    Parameters
    ----------
    kind
        ``"none"``, ``"log10"`` or ``"db"`` (module docstring).
    offset
        ``log10``: added before the logarithm, in the variable's units.
    threshold
        ``db``: smallest value transformed; lower values become ``zerovalue``.
    zerovalue
        ``db``: the value given below the threshold; default ``10 log10(threshold) - 5``.
    """

    kind: str = "none"
    offset: float = 0.01
    threshold: float = 0.1
    zerovalue: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise UnknownNameError(f"unknown transform {self.kind!r}; choose one of {list(_KINDS)}")
        if self.kind == "log10" and not self.offset > 0:
            raise ConfigError(f"log10 transform offset={self.offset}; expected a positive offset (e.g. 0.01 mm/h)")
        if self.kind == "db" and not self.threshold > 0:
            raise ConfigError(f"db transform threshold={self.threshold}; expected a positive threshold (e.g. 0.1 mm/h)")

    @property
    def db_zero(self) -> float:
        return self.zerovalue if self.zerovalue is not None else 10.0 * math.log10(self.threshold) - 5.0

    def forward(self, x: Any) -> Any:
        """``T(x)`` for a numpy array or torch tensor (a new array)."""
        if self.kind == "none":
            return x * 1.0
        if _is_torch(x):
            import torch

            if self.kind == "log10":
                return torch.log10(torch.clamp(x, min=0.0) + self.offset)
            db = 10.0 * torch.log10(torch.clamp(x, min=self.threshold))
            return torch.where(x >= self.threshold, db, torch.full_like(db, self.db_zero)).where(~torch.isnan(x), x)
        x = np.asarray(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.kind == "log10":
                return np.log10(np.maximum(x, 0.0) + np.asarray(self.offset, x.dtype))
            db = 10.0 * np.log10(np.maximum(x, self.threshold))
            out = np.where(x >= self.threshold, db, self.db_zero)
            return np.where(np.isnan(x), x, out).astype(np.result_type(x.dtype, np.float32))

    def inverse(self, y: Any) -> Any:
        """``T^-1(y)`` for a numpy array or torch tensor (a new array)."""
        if self.kind == "none":
            return y * 1.0
        if _is_torch(y):
            import torch

            if self.kind == "log10":
                return torch.clamp(torch.pow(10.0, y) - self.offset, min=0.0)
            lo = 10.0 * math.log10(self.threshold) - 1e-4
            return torch.where(y >= lo, torch.pow(10.0, y / 10.0), torch.zeros_like(y)).where(~torch.isnan(y), y)
        y = np.asarray(y)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "log10":
                return np.maximum(np.power(10.0, y) - self.offset, 0.0).astype(y.dtype)
            lo = 10.0 * math.log10(self.threshold) - 1e-4
            out = np.where(y >= lo, np.power(10.0, y / 10.0), 0.0)
            return np.where(np.isnan(y), y, out).astype(y.dtype)

    def forward_inplace(self, a: np.ndarray) -> None:
        """``a[...] = T(a)`` for a float numpy array, without temporaries (the loader's hot path)."""
        if self.kind == "log10":
            with np.errstate(invalid="ignore", divide="ignore"):
                np.maximum(a, 0.0, out=a)
                a += a.dtype.type(self.offset)
                np.log10(a, out=a)
        elif self.kind == "db":
            a[...] = self.forward(a)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "log10":
            d["offset"] = float(self.offset)
        elif self.kind == "db":
            d["threshold"] = float(self.threshold)
            d["zerovalue"] = float(self.db_zero)
        return d

    @classmethod
    def from_any(cls, value: Transform | str | Mapping[str, Any] | None) -> Transform:
        if value is None:
            return cls("none")
        if isinstance(value, Transform):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            return cls(**value)
        raise ConfigError(f"transform {value!r}; expected a name ({list(_KINDS)}), a dict or a Transform")


def default_transform(da: xr.DataArray) -> Transform:
    """The transform ``transforms="auto"`` picks: ``log10`` for rain rate (by CF standard name), else none."""
    if da.attrs.get("standard_name") == "lwe_precipitation_rate":
        return Transform("log10", offset=0.01)
    return Transform("none")


class Normalizer:
    """Encode variables to standardised model units and decode predictions back.

    Parameters
    ----------
    variables
        Channel order.
    transforms
        Per variable :class:`Transform`.
    mean, std
        Per variable statistics of the transformed field (``std`` > 0).
    fill_value
        What missing (NaN) pixels become in encoded units (used by the dataset).
    extra
        Further per-variable facts kept for the record (count, min, max).
    """

    def __init__(
        self,
        variables: Sequence[str],
        transforms: Mapping[str, Transform],
        mean: Mapping[str, float],
        std: Mapping[str, float],
        *,
        fill_value: float = 0.0,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.variables = tuple(variables)
        missing = [v for v in self.variables if v not in mean or v not in std or v not in transforms]
        if missing:
            raise ConfigError(f"Normalizer lacks statistics or a transform for {missing}")
        for v in self.variables:
            if not (math.isfinite(std[v]) and std[v] > 0 and math.isfinite(mean[v])):
                raise ConfigError(f"Normalizer: variable {v!r} has mean {mean[v]} and std {std[v]}; "
                                  "expected a finite mean and a positive std")
        self.transforms = {v: transforms[v] for v in self.variables}
        self.mean = {v: float(mean[v]) for v in self.variables}
        self.std = {v: float(std[v]) for v in self.variables}
        self.fill_value = float(fill_value)
        self.extra = {v: dict(extra.get(v, {})) for v in self.variables} if extra else {v: {} for v in self.variables}

    def renamed(self, names: Mapping[str, str]) -> Normalizer:
        """The same statistics under other variable names (``{old: new}``)."""
        n = {v: names.get(v, v) for v in self.variables}
        return Normalizer([n[v] for v in self.variables], {n[v]: t for v, t in self.transforms.items()},
                          {n[v]: m for v, m in self.mean.items()}, {n[v]: s for v, s in self.std.items()},
                          fill_value=self.fill_value, extra={n[v]: e for v, e in self.extra.items()})

    def __repr__(self) -> str:
        parts = ", ".join(f"{v}: {self.transforms[v].kind} mean={self.mean[v]:.4g} std={self.std[v]:.4g}"
                          for v in self.variables)
        return f"Normalizer({parts}; fill_value={self.fill_value})"

    def _channels(self, variables: Sequence[str] | None) -> tuple[str, ...]:
        if variables is None:
            return self.variables
        for v in variables:
            if v not in self.variables:
                raise UnknownNameError(f"the Normalizer has no statistics for variable {v!r}; it has {list(self.variables)}")
        return tuple(variables)

    def _apply(self, x: Any, variables: Sequence[str] | None, channel_axis: int, inverse: bool) -> Any:
        names = self._channels(variables)
        if not _is_torch(x):
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float32)
        if x.ndim == 0 or x.shape[channel_axis] != len(names):
            raise ConfigError(f"array of shape {tuple(x.shape)} has {x.shape[channel_axis] if x.ndim else 0} channels "
                              f"on axis {channel_axis} but the Normalizer encodes {len(names)} ({list(names)})")
        parts = []
        for c, v in enumerate(names):
            xc = x.select(channel_axis, c) if _is_torch(x) else np.take(x, c, axis=channel_axis)
            parts.append(self.encode_variable(v, xc) if not inverse else self.decode_variable(v, xc))
        if _is_torch(x):
            import torch

            return torch.stack(parts, dim=channel_axis)
        return np.stack(parts, axis=channel_axis)

    def encode(self, x: Any, *, variables: Sequence[str] | None = None, channel_axis: int = -3) -> Any:
        """Transform and standardise ``x`` (numpy or torch, channels on ``channel_axis``; NaN stays NaN)."""
        return self._apply(x, variables, channel_axis, inverse=False)

    def decode(self, z: Any, *, variables: Sequence[str] | None = None, channel_axis: int = -3) -> Any:
        """Undo :meth:`encode`: from model units back to the variables' own units."""
        return self._apply(z, variables, channel_axis, inverse=True)

    def encode_variable(self, variable: str, x: Any) -> Any:
        """Encode one variable's values (any shape)."""
        self._channels([variable])
        return (self.transforms[variable].forward(x) - self.mean[variable]) / self.std[variable]

    def decode_variable(self, variable: str, z: Any) -> Any:
        """Decode one variable's values (any shape)."""
        self._channels([variable])
        return self.transforms[variable].inverse(z * self.std[variable] + self.mean[variable])

    def encode_inplace(self, variable: str, a: np.ndarray) -> None:
        """Encode a float32 numpy array in place (the loader's hot path)."""
        self.transforms[variable].forward_inplace(a)
        a -= a.dtype.type(self.mean[variable])
        a *= a.dtype.type(1.0 / self.std[variable])

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict; :meth:`from_dict` rebuilds the same Normalizer."""
        return {
            "format": "geostp.normalizer/1",
            "variables": list(self.variables),
            "fill_value": self.fill_value,
            "stats": {v: {"transform": self.transforms[v].to_dict(), "mean": self.mean[v], "std": self.std[v],
                          **{k: _jsonable(val) for k, val in self.extra[v].items()}}
                      for v in self.variables},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        try:
            variables = list(d["variables"])
            stats = d["stats"]
            return cls(
                variables,
                {v: Transform.from_any(stats[v]["transform"]) for v in variables},
                {v: float(stats[v]["mean"]) for v in variables},
                {v: float(stats[v]["std"]) for v in variables},
                fill_value=float(d.get("fill_value", 0.0)),
                extra={v: {k: val for k, val in stats[v].items() if k not in ("transform", "mean", "std")}
                       for v in variables},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"not a Normalizer dict ({what}); expected what Normalizer.to_dict() writes") from None


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


# Over 80 lines: a third is its parameter docstring.
def compute_statistics(
    cube: xr.Dataset,
    variables: Sequence[str] | str | None = None,
    *,
    split: Split | None = None,
    transforms: str | Mapping[str, Transform | str | Mapping[str, Any]] = "auto",
    fill_value: float = 0.0,
    client: Any = None,
) -> Normalizer:
    """Mean and std of each (transformed) variable over a split, computed chunk by chunk with dask.

    Parameters
    ----------
    cube
        A cube, ideally dask-backed (:func:`geostp.store.open_cube`); it is never loaded whole.
    variables
        Channel order; default every data variable.
    split
        Statistics over this split's frames (and sequences) only: pass the training split.
    transforms
        ``"auto"`` (:func:`default_transform` per variable), or a dict from variable to a
        transform name, dict or :class:`Transform` (variables left out get ``"auto"``).
    fill_value
        Stored in the Normalizer: the encoded value that missing pixels take.
    client
        Compute on a ``dask.distributed`` client: a ``Client``, a scheduler
        address or ``"local:N"`` (:func:`geostp.cluster.dask_client`).  By
        default a client that is already active (the default client) is used,
        and dask's local threads otherwise.

    Returns
    -------
    Normalizer

    Raises
    ------
    ConfigError
        If a variable holds no finite value in the split.
    """
    import dask

    variables = cube_variables(cube, variables)
    chosen: dict[str, Transform] = {}
    for v in variables:
        if isinstance(transforms, str):
            if transforms != "auto":
                chosen[v] = Transform.from_any(transforms)
            else:
                chosen[v] = default_transform(cube[v])
        else:
            chosen[v] = Transform.from_any(transforms[v]) if v in transforms else default_transform(cube[v])
    sub = cube
    if split is not None:
        mask = split.time_mask(cube)
        if not mask.any():
            raise ConfigError(f"split {split.name!r} selects no frames of the cube; cannot compute statistics over it")
        idx = np.flatnonzero(mask)
        if idx[-1] - idx[0] + 1 == idx.size:  # one contiguous range: a slice keeps chunks whole
            sub = sub.isel(time=slice(int(idx[0]), int(idx[-1]) + 1))
        else:
            sub = sub.isel(time=idx)
        if "sequence" in cube.dims:
            sub = sub.isel(sequence=split.sequence_indices(cube))
    source = cube.encoding.get("source")
    lazy = {v: _moments_lazy(sub[v], chosen[v], source) for v in variables}
    from geostp.cluster import active_client, dask_client

    # On a distributed client (the active one, or ``client``) the per-chunk moments are computed on
    # its workers and only five numbers per chunk come back; otherwise on local threads.
    with dask_client(client) as c:
        with contextlib.nullcontext() if c is not None or active_client() is not None \
                else dask.config.set(scheduler="threads"):
            (computed,) = dask.compute(lazy)
    mean, std, extra = {}, {}, {}
    for v in variables:
        n, m, m2, lo, hi = _combine(computed[v])
        if n == 0:
            where = f" split {split.name!r}" if split is not None else " the cube"
            raise ConfigError(f"variable {v!r} has no finite value in{where}; cannot standardise it")
        s = math.sqrt(m2 / n)
        mean[v] = m
        std[v] = s if s > 0 else 1.0  # a constant field: keep it unscaled rather than divide by 0
        extra[v] = {"count": int(n), "min": lo, "max": hi}
    return Normalizer(variables, chosen, mean, std, fill_value=fill_value, extra=extra)


def _block_moments(block: np.ndarray, transform: Transform, label: xr.DataArray | None = None,
                   source: str | None = None) -> np.ndarray:
    """Count, mean, sum of squared deviations, min and max of the finite transformed values of one block.

    The block's values are checked first (:func:`geostp.cube.check_value_range`, against ``label``'s name and
    attrs): a fill value or an infinity in the training data is refused, not learnt."""
    if label is not None:
        check_value_range(block, label, source=source, where=" (read for the training statistics)")
    values = transform.forward(np.asarray(block, dtype=np.float64))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.array([0.0, 0.0, 0.0, np.inf, -np.inf])
    m = values.mean()
    return np.array([values.size, m, np.square(values - m).sum(), values.min(), values.max()])


def _combine(parts: Sequence[np.ndarray]) -> tuple[int, float, float, float, float]:
    """Merge per-block moments (Chan et al.'s pairwise update: stable for any number of blocks)."""
    n, mean, m2, lo, hi = 0.0, 0.0, 0.0, np.inf, -np.inf
    for nb, mb, m2b, lob, hib in parts:
        if nb == 0:
            continue
        delta = mb - mean
        total = n + nb
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
        lo, hi = min(lo, lob), max(hi, hib)
    return int(n), float(mean), float(m2), float(lo), float(hi)


def _moments_lazy(da_: xr.DataArray, transform: Transform, source: str | None = None) -> list[Any]:
    """One small task per chunk (or per 20 frames of a numpy-backed variable): memory stays at a chunk per thread."""
    import dask

    data = da_.data
    label = xr.DataArray(0, name=da_.name, attrs=dict(da_.attrs))  # what the value check needs: name, attrs
    if hasattr(data, "to_delayed"):
        return [dask.delayed(_block_moments)(blk, transform, label, source) for blk in data.to_delayed().ravel()]
    axis = da_.dims.index("time")
    step = 20
    return [_block_moments(np.take(data, np.arange(i, min(i + step, data.shape[axis])), axis=axis), transform,
                           label, source)
            for i in range(0, data.shape[axis], step)]
