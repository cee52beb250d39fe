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
from geostp.errors import CorruptStoreError, CubeError, StoreError
from geostp.manifest import MANIFEST_ATTR, UnverifiedStoreWarning
from geostp.store import MANIFEST_NAME, ingest, open_cube, verify_store
from geostp.testing import assert_refused, small_cube

VAR = "precipitation"
CHUNK = f"{VAR}/c/1/0/0"
LIMIT_S = 120  # a refusal is quick (importing torch can take tens of seconds on a busy machine); a hang (reading
# /dev/zero) would run until this alarm


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
    with _within():
        return assert_refused(kind, call, *named, expected=expected)


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


# ----------------------------------------------------------------------------- every chunk accounted for (N-B)


OUTAGE_CHUNK = f"{VAR}/c/1/0/0"  # frames 2-3 of the outage store: only NaN, so zarr did not write it


@pytest.fixture(scope="module")
def outage_pristine(tmp_path_factory) -> Path:
    ds = small_cube(8, 16, 16, backend="numpy")
    ds[VAR][2:4] = np.nan  # a radar outage in the middle of the period
    return ingest(ds, tmp_path_factory.mktemp("outage") / "cube.zarr", time_chunk=2, progress=False)


@pytest.fixture
def outage(outage_pristine, tmp_path) -> Path:
    copy = tmp_path / "outage.zarr"
    shutil.copytree(outage_pristine, copy, symlinks=True)
    return copy


def test_the_manifest_accounts_for_every_chunk_of_every_array(store):
    doc = json.loads((store / MANIFEST_NAME).read_text())
    assert doc["format"] == manifest_module.MANIFEST_FORMAT == "geostp.manifest/2"
    assert json.loads((store / "zarr.json").read_text())["attributes"][MANIFEST_ATTR] == doc["format"]
    on_disk = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()} - {"zarr.json", MANIFEST_NAME}
    assert set(doc["files"]) == on_disk
    assert not set(doc["empty"]) & on_disk
    assert {f"{VAR}/c/{i}/0/0" for i in range(4)} <= set(doc["files"])  # 8 frames in chunks of 2, all with data


def test_a_manifest_one_chunk_entry_short_with_the_chunk_deleted_is_refused(store):
    # The red-team's N-B: the entry and its chunk removed together; zarr would read frames 2-3 as NaN.
    _edit_manifest(store, lambda d: d["files"].pop(CHUNK))
    (store / CHUNK).unlink()
    _every_way_of_opening(store, StoreError, repr(VAR), CHUNK, "neither listed", MANIFEST_NAME)


def test_a_manifest_one_chunk_entry_short_is_refused_even_with_the_chunk_there(store):
    _edit_manifest(store, lambda d: d["files"].pop(f"{VAR}/c/3/0/0"))
    _refused(StoreError, lambda: open_cube(store), str(store), repr(VAR), f"{VAR}/c/3/0/0", "nor listed as empty")


def test_a_coordinate_chunk_missing_from_the_manifest_is_refused(store):
    _edit_manifest(store, lambda d: d["files"].pop("lat/c/0/0"))
    (store / "lat/c/0/0").unlink()
    _refused(StoreError, lambda: verify_store(store, full=False), str(store), "'lat'", "lat/c/0/0")


def test_a_store_with_an_all_nan_chunk_in_the_middle_opens_and_verifies_cleanly(outage, capsys):
    assert not (outage / OUTAGE_CHUNK).exists()  # zarr skipped it: all fill value
    doc = json.loads((outage / MANIFEST_NAME).read_text())
    assert OUTAGE_CHUNK in doc["empty"] and OUTAGE_CHUNK not in doc["files"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UnverifiedStoreWarning, nothing else either
        for verify in ("sizes", "full"):
            values = open_cube(outage, verify=verify)[VAR].values
            assert np.isnan(values[2:4]).all() and np.isfinite(values[[0, 1, 4, 5, 6, 7]]).any(axis=(1, 2)).all()
        check = verify_store(outage)
    assert check.manifest and check.full and check.files == len(doc["files"])
    assert main(["info", str(outage), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out


def test_an_empty_chunk_removed_from_the_manifest_is_refused(outage):
    _edit_manifest(outage, lambda d: d["empty"].remove(OUTAGE_CHUNK))
    _every_way_of_opening(outage, StoreError, repr(VAR), OUTAGE_CHUNK, "neither listed")


def test_a_chunk_recorded_as_empty_that_appears_later_is_found(outage, pristine):
    (outage / OUTAGE_CHUNK).parent.mkdir(parents=True, exist_ok=True)
    (outage / OUTAGE_CHUNK).write_bytes((pristine / CHUNK).read_bytes())  # frames from elsewhere, slipped in
    _every_way_of_opening(outage, CorruptStoreError, OUTAGE_CHUNK, "not written at ingest")


def test_a_chunk_with_data_relabelled_as_empty_is_found(store):
    # The entry moved from 'files' to 'empty' and the chunk deleted: the grid is whole again, but the
    # chunk is listed as empty, so only a chunk that still exists could contradict it; here it is gone,
    # which is what an all-NaN chunk looks like.  The relabelled chunk that is still there is refused.
    def relabel(d):
        d["files"].pop(CHUNK)
        d["empty"].append(CHUNK)

    _edit_manifest(store, relabel)
    _every_way_of_opening(store, CorruptStoreError, CHUNK, "not written at ingest")


@pytest.mark.parametrize("entry, what", [
    ("radar/c/0/0/0", "no array 'radar'"),
    (f"{VAR}/c/9/0/0", "not a chunk key"),
    (f"{VAR}/zarr.json", "listed both"),
    ("/etc/passwd", "absolute path"),
    (f"{VAR}/../x", "climbs out"),
])
def test_a_bad_entry_in_the_empty_list_is_refused(store, entry, what):
    _edit_manifest(store, lambda d: d["empty"].append(entry))
    _refused(StoreError, lambda: verify_store(store), str(store), what)


def test_a_duplicate_in_the_empty_list_is_refused(outage):
    _edit_manifest(outage, lambda d: d["empty"].append(OUTAGE_CHUNK))
    _refused(StoreError, lambda: open_cube(outage), str(outage), repr(OUTAGE_CHUNK), "listed twice")


@pytest.mark.parametrize("empty", [None, {}, "crs/c"])
def test_a_current_manifest_without_its_empty_list_is_refused(store, empty):
    _edit_manifest(store, lambda d: d.pop("empty") if empty is None else d.__setitem__("empty", empty))
    _every_way_of_opening(store, StoreError, MANIFEST_NAME, "'empty'", "geostp.manifest/2")


def _as_legacy(store: Path, *, mark: str = "geostp.manifest/1") -> None:
    """Make ``store`` look written before ingest recorded empty chunks: a geostp.manifest/1 manifest."""
    def downgrade(d):
        d.pop("empty")
        d["format"] = "geostp.manifest/1"

    _edit_manifest(store, downgrade)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"][MANIFEST_ATTR] = mark
    (store / "zarr.json").write_text(json.dumps(meta))


def test_an_old_manifest_without_the_empty_list_still_opens_and_verifies(outage, capsys):
    _as_legacy(outage)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedStoreWarning)
        assert np.isnan(open_cube(outage, verify="full")[VAR].values[2:4]).all()
        assert verify_store(outage).manifest
    assert main(["info", str(outage), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out


def test_an_old_manifest_keeps_its_old_checks(store):
    _as_legacy(store)
    (store / CHUNK).unlink()  # still listed: a deleted chunk is found as before
    _refused(CorruptStoreError, lambda: open_cube(store), str(store), CHUNK, "missing")


def test_a_current_manifest_downgraded_to_the_old_format_is_refused(store):
    _as_legacy(store, mark=manifest_module.MANIFEST_FORMAT)  # the root metadata still says ingest wrote a /2 one
    _edit_manifest(store, lambda d: d["files"].pop(CHUNK))
    (store / CHUNK).unlink()
    _every_way_of_opening(store, StoreError, MANIFEST_NAME, "geostp.manifest/1", "replaced or edited")


# ----------------------------------------------------------------------------- a deleted manifest when verification is asked for (N-C)


def test_a_deleted_manifest_is_an_error_when_verification_is_asked_for(store, capsys):
    (store / MANIFEST_NAME).unlink()
    (store / CHUNK).unlink()  # would read back as NaN frames
    named = (str(store), MANIFEST_NAME, "is missing", MANIFEST_ATTR, "restore")
    _refused(StoreError, lambda: open_cube(store, verify="full"), *named)
    _refused(StoreError, lambda: verify_store(store), *named)
    assert main(["info", str(store), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: ") and str(store) in err and "is missing" in err and "Traceback" not in err
    # Not asked for: the cheap check says what cannot be checked, as before.
    check = verify_store(store, full=False)
    assert not check.manifest and check.expected
    with pytest.warns(UnverifiedStoreWarning, match="deleted"):
        open_cube(store)
    assert main(["info", str(store)]) == 0
    assert "cannot be verified" in capsys.readouterr().out


def test_a_store_never_marked_as_having_a_manifest_only_warns_even_under_full_verification(store):
    (store / MANIFEST_NAME).unlink()
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"][MANIFEST_ATTR]
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.warns(UnverifiedStoreWarning, match="written before geostp recorded one"):
        assert open_cube(store, verify="full").sizes["time"] == 8
    check = verify_store(store)
    assert not check.manifest and not check.expected
