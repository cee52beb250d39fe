"""Streaming samples out of cubes: windows, patches, splits, normalisation and a torch dataset.

See ``docs/streaming.md`` for the rules (windows never span a gap or a split
boundary, the rain rule, the transforms) and the measured throughput.
"""

from __future__ import annotations

from geostp.stream.dataset import CubeDataset, CubeLoader, make_loader, worker_init
from geostp.stream.normalize import Normalizer, Transform, compute_statistics, default_transform
from geostp.stream.options import LoaderOptions
from geostp.stream.windows import (
    SAMPLE_DTYPE,
    RainFilter,
    RainTable,
    SampleSource,
    Split,
    WindowSpec,
    patch_offsets,
    rain_table,
    sample_source,
    split_cube,
    temporal_windows,
    window_index,
)

__all__ = [
    "WindowSpec",
    "RainFilter",
    "Split",
    "split_cube",
    "SAMPLE_DTYPE",
    "window_index",
    "temporal_windows",
    "patch_offsets",
    "sample_source",
    "SampleSource",
    "rain_table",
    "RainTable",
    "Transform",
    "Normalizer",
    "compute_statistics",
    "default_transform",
    "CubeDataset",
    "CubeLoader",
    "LoaderOptions",
    "make_loader",
    "worker_init",
]
