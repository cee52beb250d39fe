"""A store is untrusted input: its manifest may name any path, and its cube any grid or units.

Store (``geostp_manifest.json``): every entry must be a relative path inside the store naming a regular file,
read no further than its recorded size; a manifest that is malformed, absurdly large, emptied or missing the
chunks of a variable is refused; a store without a manifest opens with a warning saying what cannot be checked.
Cube: spatial coordinates form a regular grid, and a known variable (rain, reflectivity) has units geostp knows.
Each refusal names the store / entry / coordinate / variable and what was expected, and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import geostp.manifest as manifest_module
from geostp.cli import main
from geostp.cube import validate_cube
from geostp.errors import CorruptStoreError, CubeError, GeostpError, StoreError
from geostp.manifest import MANIFEST_ATTR, UnverifiedStoreWarning
from geostp.store import MANIFEST_NAME, ingest, open_cube, verify_store
from geostp.testing import small_cube

VAR = "precipitation"
CHUNK = f"{VAR}/c/1/0/0"
LIMIT_S = 20  # a refusal is immediate; a hang (reading /dev/zero) would run until this alarm


@contextmanager
def _within(seconds: float = LIMIT_S):
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    def alarm(*_):
        raise TimeoutError(f"still running after {seconds} s: geostp hangs on this store")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _refused(kind: type[Exception], call, *named: str, expected: str = "expected") -> str:
    with _within(), pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, GeostpError), type(info.value)
    for name in named:
        assert name in message, (name, message)
    assert expected in message, message
    return message


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return ingest(small_cube(8, 16, 16, backend="numpy"), tmp_path_factory.mktemp("trust") / "cube.zarr",
                  time_chunk=2, progress=False)


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    copy = tmp_path / "cube.zarr"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def _edit_manifest(store: Path, edit) -> None:
    doc = json.loads((store / MANIFEST_NAME).read_text())
    edit(doc)
    (store / MANIFEST_NAME).write_text(json.dumps(doc))


def _every_way_of_opening(store: Path, kind: type[Exception], *named: str) -> None:
    for call in (lambda: verify_store(store), lambda: verify_store(store, full=False),
                 lambda: open_cube(store), lambda: open_cube(store, verify="full")):
        _refused(kind, call, str(store), *named)


# ----------------------------------------------------------------------------- valid stores still open


def test_a_valid_store_opens_and_verifies_without_a_warning(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedStoreWarning)
        assert open_cube(store, verify="full").sizes["time"] == 8
        check = verify_store(store)
    assert check.manifest and check.full and check.files > 0
    assert json.loads((store / "zarr.json").read_text())["attributes"][MANIFEST_ATTR]


def test_a_store_reached_through_a_symbolic_link_still_opens(store, tmp_path):
    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    assert verify_store(link).manifest
    assert open_cube(link, verify="full")[VAR].isel(time=3).load().notnull().any()


# ----------------------------------------------------------------------------- entries outside the store


def test_an_entry_naming_dev_zero_is_refused_at_once(store, capsys):
    _edit_manifest(store, lambda d: d["files"].__setitem__("/dev/zero", [0, "0" * 32]))
    _every_way_of_opening(store, StoreError, "'/dev/zero'", "absolute path", "expected relative paths")
    with _within():
        assert main(["info", str(store), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: ") and "/dev/zero" in err and "Traceback" not in err


def test_an_entry_climbing_out_of_the_store_is_refused_even_with_the_right_digest(store):
    secret = store.parent / "secret2.txt"
    secret.write_bytes(b"top secret")
    _edit_manifest(store, lambda d: d["files"].__setitem__("../secret2.txt", [10, _digest(b"top secret")]))
    _every_way_of_opening(store, StoreError, "'../secret2.txt'", "climbs out of the store")


@pytest.mark.parametrize("entry", ["", "precipitation//c/0/0/0", "precipitation/./zarr.json", "C:/x", "a\\b",
                                   MANIFEST_NAME, "zarr.json"])
def test_an_entry_that_is_not_a_plain_relative_path_is_refused(store, entry):
    _edit_manifest(store, lambda d: d["files"].__setitem__(entry, [0, "0" * 32]))
    _refused(StoreError, lambda: verify_store(store), str(store), repr(entry), MANIFEST_NAME)


def test_a_chunk_replaced_by_a_link_out_of_the_store_is_refused(store, tmp_path):
    chunk = store / CHUNK
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(chunk.read_bytes())  # the same size and digest: only the link gives it away
    chunk.unlink()
    chunk.symlink_to(outside)
    _every_way_of_opening(store, CorruptStoreError, CHUNK, "symbolic link", "expected a regular file")


def test_a_chunk_folder_linked_out_of_the_store_is_refused(store, tmp_path):
    folder = store / VAR / "c" / "1"
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    _every_way_of_opening(store, CorruptStoreError, CHUNK, "outside the store")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_chunk_replaced_by_a_fifo_is_refused_without_blocking(store):
    chunk = store / CHUNK
    size = chunk.stat().st_size
    chunk.unlink()
    os.mkfifo(chunk)
    _edit_manifest(store, lambda d: d["files"].__setitem__(CHUNK, [0, d["files"][CHUNK][1]]))
    _every_way_of_opening(store, CorruptStoreError, CHUNK, "FIFO")
    assert size > 0


def test_a_chunk_replaced_by_a_folder_is_refused(store):
    (store / CHUNK).unlink()
    (store / CHUNK).mkdir()
    _every_way_of_opening(store, CorruptStoreError, CHUNK, "a folder")


def test_a_file_larger_than_recorded_is_not_read_past_its_size(store):
    chunk = store / CHUNK
    with open(chunk, "ab") as f:
        f.write(b"\0" * (1 << 16))
    _refused(CorruptStoreError, lambda: verify_store(store), CHUNK, "bytes where the manifest recorded")


def test_a_manifest_that_is_a_link_to_dev_zero_is_refused_at_once(store):
    (store / MANIFEST_NAME).unlink()
    (store / MANIFEST_NAME).symlink_to("/dev/zero")
    _every_way_of_opening(store, StoreError, MANIFEST_NAME, "symbolic link")


# ----------------------------------------------------------------------------- malformed manifests


@pytest.mark.parametrize("value, what", [
    (["123", "0" * 32], "size '123'"),
    ([-1, "0" * 32], "size -1"),
    ([True, "0" * 32], "size True"),
    ([1.5, "0" * 32], "size 1.5"),
    ([10, "xyz"], "digest 'xyz'"),
    ([10, 42], "digest 42"),
    ([10], "recorded as [10]"),
    ("10", "recorded as '10'"),
    (None, "recorded as None"),
])
def test_an_entry_with_a_malformed_value_is_refused(store, value, what):
    _edit_manifest(store, lambda d: d["files"].__setitem__(CHUNK, value))
    _every_way_of_opening(store, StoreError, repr(CHUNK), what)


@pytest.mark.parametrize("doc, what", [
    ([], "a JSON list"),
    ({"format": "geostp.manifest/1", "files": []}, "format 'geostp.manifest/1'"),
    ({"format": "other/9", "files": {}}, "format 'other/9'"),
    ({"format": "geostp.manifest/1", "digest": "md5", "files": {}}, "BLAKE2b-128"),
])
def test_a_manifest_of_the_wrong_shape_is_refused(store, doc, what):
    (store / MANIFEST_NAME).write_text(json.dumps(doc))
    _every_way_of_opening(store, StoreError, MANIFEST_NAME, what)


def test_a_manifest_with_an_absurd_number_of_entries_is_refused(store, monkeypatch):
    monkeypatch.setattr(manifest_module, "MAX_ENTRIES", 5)
    _refused(StoreError, lambda: verify_store(store), str(store), MANIFEST_NAME, "expected at most 5")


def test_a_huge_manifest_is_not_read(store, monkeypatch):
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 100)
    _refused(StoreError, lambda: open_cube(store), str(store), MANIFEST_NAME, "expected at most 100")


def test_a_manifest_listing_more_chunks_than_the_array_has_is_refused(store):
    _edit_manifest(store, lambda d: d["files"].update({f"{VAR}/c/{i}/0/0": [0, "0" * 32] for i in range(9, 20)}))
    _refused(StoreError, lambda: open_cube(store), str(store), repr(VAR), "expected at most 4")


# ----------------------------------------------------------------------------- emptied or missing manifests


def test_an_emptied_manifest_and_a_deleted_chunk_are_refused(store):
    _edit_manifest(store, lambda d: d.__setitem__("files", {}))
    (store / CHUNK).unlink()
    _every_way_of_opening(store, StoreError, MANIFEST_NAME, "lists no file at all", "verify='none'")


def test_a_manifest_without_any_chunk_of_a_variable_is_refused(store):
    _edit_manifest(store, lambda d: d.__setitem__(
        "files", {k: v for k, v in d["files"].items() if not k.startswith(f"{VAR}/c/")}))
    (store / CHUNK).unlink()
    _every_way_of_opening(store, StoreError, f"lists no chunk of variable {VAR!r}", "metadata describes 4")


def test_a_manifest_without_an_array_is_refused(store):
    _edit_manifest(store, lambda d: d.__setitem__(
        "files", {k: v for k, v in d["files"].items() if not k.startswith("lat/")}))
    _refused(StoreError, lambda: open_cube(store), str(store), "array 'lat'", "lat/zarr.json")


def test_a_deleted_manifest_warns_on_open_naming_what_cannot_be_checked(store):
    (store / MANIFEST_NAME).unlink()
    (store / CHUNK).unlink()
    with pytest.warns(UnverifiedStoreWarning) as caught:
        open_cube(store)
    message = str(caught[0].message)
    assert str(store) in message and MANIFEST_NAME in message and "deleted?" in message
    assert "NaN" in message and "ingest the store again" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedStoreWarning)
        open_cube(store, verify="none")  # the explicit opt-out is quiet


def test_a_store_from_before_the_manifest_opens_with_a_warning(store, capsys):
    (store / MANIFEST_NAME).unlink()
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"][MANIFEST_ATTR]
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.warns(UnverifiedStoreWarning, match="written before geostp recorded one"):
        assert open_cube(store).sizes["time"] == 8
    assert main(["info", str(store), "--verify"]) == 0
    assert "cannot be verified" in capsys.readouterr().out


# ----------------------------------------------------------------------------- grid and units


@pytest.fixture(scope="module")
def cube():
    return small_cube(8, 16, 16, backend="numpy")


@pytest.mark.parametrize("dim", ["x", "y"])
def test_an_irregular_spatial_coordinate_is_refused(cube, dim):
    values = cube[dim].values.copy()
    values[8:] += 5 * (values[1] - values[0])  # a jump of 6 pixels (y runs north to south)
    message = _refused(CubeError, lambda: validate_cube(cube.assign_coords({dim: values}), source="s.nc"),
                       "s.nc", repr(dim), f"{dim}[7]", f"{dim}[8]", "6000", expected="expected a regular grid")
    assert "1000" in message


def test_an_irregular_grid_is_refused_by_forecast_and_ingest(cube, tmp_path):
    import geostp

    x = cube.x.values.copy()
    x[8:] += 5000.0
    bad = cube.assign_coords(x=x)
    _refused(CubeError, lambda: geostp.forecast(bad, "persistence", 2), "'x'", "regular grid")
    _refused(CubeError, lambda: ingest(bad, tmp_path / "bad.zarr", progress=False), "'x'", "regular grid")
    assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.parametrize("values", [[np.nan, 1.0, 2.0, 3.0], [0.0, 2.0, 1.0, 3.0]])
def test_nan_or_unordered_spatial_coordinates_are_still_refused(values):
    c = small_cube(4, 4, 4, backend="numpy")
    _refused(CubeError, lambda: validate_cube(c.assign_coords(x=np.asarray(values))), "'x'")


def test_regular_grids_pass_whatever_their_direction_or_precision(cube):
    validate_cube(cube.assign_coords(y=cube.y.values[::-1].copy()))
    validate_cube(cube.assign_coords(x=cube.x.values.astype(np.float32)))
    validate_cube(cube.assign_coords(x=np.linspace(5.0, 5.15, cube.sizes["x"]).astype(np.float32)))
    validate_cube(cube.isel(x=[3]))  # one column: nothing to compare


def test_unknown_units_on_rain_are_refused(cube, tmp_path):
    import geostp

    bad = cube.copy()
    bad[VAR].attrs["units"] = "bananas"
    for call in (lambda: validate_cube(bad), lambda: geostp.forecast(bad, "optical_flow", 2),
                 lambda: ingest(bad, tmp_path / "b.zarr", progress=False)):
        _refused(CubeError, call, repr(VAR), "'bananas'", "'mm h-1'", "valid_range")


def test_units_on_a_known_variable_are_compared_without_case_or_spacing(cube):
    ok = cube.copy()
    ok[VAR].attrs["units"] = "MM  H-1"
    validate_cube(ok)
    ok[VAR].attrs["units"] = "kg m-2 s-1"
    ok[VAR] = ok[VAR] / 3600.0
    validate_cube(ok)


def test_a_valid_range_lifts_the_units_check(cube):
    own = cube.copy()
    own[VAR].attrs.update(units="inches per fortnight", valid_range=[0.0, 1000.0])
    validate_cube(own)


def test_a_variable_without_known_bounds_keeps_its_own_units(cube):
    other = cube.copy()
    other[VAR].attrs = {"long_name": "counts of something", "units": "bananas"}
    validate_cube(other)


def test_reflectivity_in_rain_units_is_refused(cube):
    dbz = cube.copy()
    dbz[VAR].attrs.update(standard_name="equivalent_reflectivity_factor", units="mm h-1")
    _refused(CubeError, lambda: validate_cube(dbz), "equivalent_reflectivity_factor", "'mm h-1'", "'dbz'")
