"""A cube store's manifest (``geostp_manifest.json``): written by ingest, checked on open, read as untrusted input.

:func:`geostp.store.ingest` lists every file of a store's arrays (metadata and chunks) with its size and BLAKE2b
digest, and marks the store's root attributes (:data:`MANIFEST_ATTR`, set to the manifest's format) as having one.
Its format (:data:`MANIFEST_FORMAT`, ``geostp.manifest/2``) is one JSON object::

    {"format": "geostp.manifest/2", "digest": "blake2b-128",
     "files": {"precipitation/zarr.json": [812, "<32 hex digits>"], "precipitation/c/0/0/0": [5120, "..."], ...},
     "empty": ["precipitation/c/1/0/0", ...]}

``files`` maps each file (relative to the store's root; the root ``zarr.json`` and the manifest itself are not
listed) to ``[size in bytes, BLAKE2b-128 hex digest]``.  ``empty`` lists the chunk keys of the store's arrays
that ingest did not write because they held only the fill value (zarr writes no all-NaN chunk: a partial
outage), so every chunk of every array's grid is either in ``files`` or in ``empty``: a chunk that is neither
(a manifest entry removed along with its chunk) is refused, naming the variable and the chunk, and a chunk
listed as empty that exists now was written after ingest (a :class:`~geostp.errors.CorruptStoreError`).  A
``geostp.manifest/1`` manifest (written before ``empty`` was recorded) is still read, with the checks below
only, unless the root attributes say ingest wrote a ``geostp.manifest/2`` one (a manifest downgraded by hand).

A store may come from anyone, so its manifest is checked before any file it names is touched:

- the manifest is a regular file of at most :data:`MAX_MANIFEST_BYTES`, the JSON ingest writes, listing at most
  :data:`MAX_ENTRIES` files;
- every entry is a relative path inside the store (no absolute path, no ``..``, nothing that a symbolic link
  leads out of the store), recorded with a size (a whole number of bytes) and a 32-digit hex digest;
- every file it names is a regular file (``lstat``: not a link, a device, a FIFO or a folder), opened without
  following links and read no further than its recorded size plus one byte;
- every array of the store has its metadata listed, no array has more chunks listed than its metadata allows,
  and every data variable (floating point, with time, y and x) has at least one chunk listed: ingest refuses a
  variable with no data, so a manifest without any of its chunks is not the one ingest wrote;
- (``geostp.manifest/2``) every chunk key of every array's grid is listed exactly once, in ``files`` or in
  ``empty``, and nothing else is.

A bad manifest is a :class:`~geostp.errors.StoreError` naming the store, the entry and what was expected; a file
that differs from its entry is a :class:`~geostp.errors.CorruptStoreError`.  A store with no manifest opens with
an :class:`UnverifiedStoreWarning` (a deleted chunk would read back as NaN, a changed one cannot be found), unless
verification is asked for (:func:`verify_store` with ``full``, ``open_cube(path, verify="full")``, ``geostp info
--verify``) and its root attributes say ingest wrote one: the manifest was deleted, a :class:`StoreError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geostp.checks import as_path
from geostp.errors import CorruptStoreError, StoreError

__all__ = ["MANIFEST_NAME", "MANIFEST_FORMAT", "LEGACY_FORMATS", "MANIFEST_ATTR", "MAX_ENTRIES", "MAX_MANIFEST_BYTES",
           "StoreVerification", "UnverifiedStoreWarning", "verify_store", "write_manifest", "manifest_entries",
           "file_problem", "unverified_note"]

#: The file at a store's root that lists every file of its arrays with its size and digest.
MANIFEST_NAME = "geostp_manifest.json"
MANIFEST_FORMAT = "geostp.manifest/2"
#: The format before ingest recorded the chunks it did not write (``empty``): still read, with fewer checks.
LEGACY_FORMATS = ("geostp.manifest/1",)
#: Root attribute ingest sets beside the completion marker: this store was written with a manifest.
MANIFEST_ATTR = "geostp_manifest"
#: The most entries a manifest may list (a store of a few TB in 5 MB chunks has about a million).
MAX_ENTRIES = 10_000_000
#: The largest manifest read (an entry takes about 70 bytes).
MAX_MANIFEST_BYTES = 1 << 30
#: The largest array metadata file (``zarr.json``) read to check a manifest against.
MAX_METADATA_BYTES = 16 << 20
#: The largest size an entry may record (a chunk is a few MB).
MAX_FILE_BYTES = 1 << 48
_DIGEST = re.compile(r"[0-9a-f]{32}")
_ROOT_FILES = ("zarr.json", MANIFEST_NAME)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class UnverifiedStoreWarning(UserWarning):
    """A store has no manifest: a deleted chunk reads back as NaN frames and a changed one cannot be found."""


# ----------------------------------------------------------------------------- reading files named by a store


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _regular(root: Path, rel: str) -> tuple[os.stat_result | None, str | None]:
    """``lstat`` of the store file ``rel``: (its stat, None), or (None, what is wrong) where it is missing, lies
    outside the store (a folder on its way is a link out of it) or is not a regular file."""
    path = root / rel
    try:
        inside = path.parent.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a loop of links
        inside = False
    if not inside:
        return None, (f"lies outside the store (a folder on its way leads to {path.parent.resolve(strict=False)}); "
                      "expected a file inside the store")
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, "is missing (deleted?)"
    except OSError as exc:
        return None, f"cannot be looked at ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return None, f"is a symbolic link (to {os.readlink(path)}); expected a regular file written by ingest"
    if not stat.S_ISREG(st.st_mode):
        return None, f"is {_kind(st.st_mode)}; expected a regular file written by ingest"
    return st, None


def _read_bounded(path: Path, st: os.stat_result, limit: int, sink: Any = None) -> bytes | int:
    """Read the regular file ``path`` (``st``: its ``lstat``) without following a link, no further than ``limit``
    + 1 bytes: its bytes, or (``sink``: a hash to update) how many were read.  ``OSError`` if it is no longer the
    file that was looked at."""
    fd = os.open(path, _READ_FLAGS)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise OSError(f"{path} was replaced while it was opened")
        left, got, parts = limit + 1, 0, []
        while left > 0:
            block = os.read(fd, min(1 << 20, left))
            if not block:
                break
            got, left = got + len(block), left - len(block)
            sink.update(block) if sink is not None else parts.append(block)
        return got if sink is not None else b"".join(parts)
    finally:
        os.close(fd)


def _read_json(root: Path, rel: str, limit: int, what: str) -> Any:
    """A JSON file of the store, read as untrusted: a StoreError where it is not a regular file within ``limit``
    bytes, or not JSON."""
    st, why = _regular(root, rel)
    if st is None:
        raise StoreError(f"store {root}: the {what} {rel} {why}")
    if st.st_size > limit:
        raise StoreError(f"store {root}: the {what} {rel} holds {st.st_size} bytes; expected at most {limit} "
                         f"(the {what} geostp.ingest writes is far smaller)")
    try:
        data = _read_bounded(root / rel, st, limit)
        assert isinstance(data, bytes)
        if len(data) > limit:
            raise ValueError(f"it holds more than {limit} bytes")
        return json.loads(data.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"store {root}: the {what} {rel} cannot be read ({type(exc).__name__}: {exc}); expected "
                         f"the JSON that geostp.ingest writes; ingest the store again") from None


def _digest_of(root: Path, rel: str, st: os.stat_result, size: int) -> tuple[str, int]:
    h = hashlib.blake2b(digest_size=16)
    got = _read_bounded(root / rel, st, size, sink=h)
    assert isinstance(got, int)
    return h.hexdigest(), got


# ----------------------------------------------------------------------------- writing


def _store_files(root: Path) -> list[str]:
    """Every file of the store's arrays (metadata and chunks), relative to ``root``, sorted."""
    out = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in _ROOT_FILES:  # the root metadata changes as the marker is set
                out.append(rel)
    return sorted(out)


def write_manifest(root: Path) -> None:
    """Record every file of the store ``root`` (which ingest has just written) in its manifest."""
    files = {}
    for rel in _store_files(root):
        h = hashlib.blake2b(digest_size=16)
        with open(root / rel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        files[rel] = [(root / rel).stat().st_size, h.hexdigest()]
    empty = []  # the chunks zarr did not write: they held only the fill value
    for name, meta in sorted(_arrays(root).items()):
        grid = _grid(name, meta)
        if grid is None:
            raise StoreError(f"store {root}: the metadata of array {name!r} describes no chunk grid geostp can list "
                             "(shape, chunk_grid, chunk_key_encoding); expected the zarr v3 metadata xarray writes")
        empty.extend(key for key in grid[1] if key not in files)
    doc = {"format": MANIFEST_FORMAT, "digest": "blake2b-128", "files": files, "empty": empty}
    (root / MANIFEST_NAME).write_text(json.dumps(doc, separators=(",", ":")))


# ----------------------------------------------------------------------------- reading the manifest


def _entry_problem(rel: Any) -> str | None:
    """Why the manifest key ``rel`` cannot name a file of the store (None: it can)."""
    if not isinstance(rel, str) or not rel:
        return "is not a file name"
    if "\x00" in rel or "\\" in rel:
        return "holds a NUL or a backslash"
    if rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        return "is an absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "climbs out of the store ('..')"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    if rel in _ROOT_FILES:
        return "is a root file, which ingest does not record"
    return None


def _refuse(root: Path, rel: Any, problem: str, expected: str) -> StoreError:
    return StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists {rel!r}, which {problem}; expected "
                      f"{expected}; the manifest is not the one geostp.ingest wrote (edited or damaged): ingest "
                      "the store again or restore it from a copy (open_cube(path, verify='none') opens it unchecked)")


def manifest_entries(root: Path) -> dict[str, tuple[int, str]] | None:
    """The store's manifest, checked (module docstring): relative path -> (size, digest); None where the store
    has none.  A :class:`StoreError` names the store, the entry and what was expected."""
    read = _read_manifest(root)
    return None if read is None else read[0]


def _read_manifest(root: Path) -> tuple[dict[str, tuple[int, str]], frozenset[str] | None] | None:
    """The store's manifest, checked entry by entry: (files, the chunks listed as empty: None for a
    ``geostp.manifest/1`` one); None where the store has none."""
    try:
        os.lstat(root / MANIFEST_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        pass  # _read_json says why
    doc = _read_json(root, MANIFEST_NAME, MAX_MANIFEST_BYTES, "manifest")
    files = doc.get("files") if isinstance(doc, dict) else None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    empty_doc = doc.get("empty") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or fmt not in (MANIFEST_FORMAT, *LEGACY_FORMATS) or not isinstance(files, dict) \
            or doc.get("digest", "blake2b-128") != "blake2b-128" \
            or (fmt == MANIFEST_FORMAT and not isinstance(empty_doc, list)):
        got = f"format {fmt!r}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        if fmt == MANIFEST_FORMAT and isinstance(files, dict) and not isinstance(empty_doc, list):
            got += f" with 'empty' {'missing' if empty_doc is None else type(empty_doc).__name__}"
        raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} is {got}; expected the JSON "
                         f"({MANIFEST_FORMAT}, BLAKE2b-128 digests, a 'files' mapping, an 'empty' list) that "
                         "geostp.ingest writes; ingest the store again")
    n_empty = len(empty_doc) if fmt == MANIFEST_FORMAT and isinstance(empty_doc, list) else 0
    if len(files) + n_empty > MAX_ENTRIES:
        raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists {len(files) + n_empty} files and empty "
                         f"chunks; expected at most {MAX_ENTRIES} (one per chunk of the store); ingest the store again")
    out: dict[str, tuple[int, str]] = {}
    for rel, entry in files.items():
        problem = _entry_problem(rel)
        if problem:
            raise _refuse(root, rel, problem, "relative paths of the store's own files, such as 'precipitation/c/0/0/0'")
        if not isinstance(entry, list) or len(entry) != 2:
            raise _refuse(root, rel, f"is recorded as {entry!r}", "[size in bytes, 32-digit hex digest]")
        size, digest = entry
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise _refuse(root, rel, f"is recorded with size {size!r}",
                          f"a whole number of bytes from 0 to {MAX_FILE_BYTES}")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise _refuse(root, rel, f"is recorded with digest {digest!r}", "a BLAKE2b-128 digest, 32 hex digits")
        out[rel] = (size, digest)
    if fmt != MANIFEST_FORMAT:
        return out, None
    empty: set[str] = set()
    for rel in empty_doc:
        problem = _entry_problem(rel) or (
            "is listed twice in 'empty'" if rel in empty else
            "is listed both in 'files' and in 'empty'" if rel in out else
            "is array metadata, not a chunk" if rel.endswith("/zarr.json") else None)
        if problem:
            raise _refuse(root, rel, problem + " (in 'empty')",
                          "keys of chunks ingest did not write, such as 'precipitation/c/1/0/0', each once")
        empty.add(rel)
    return out, frozenset(empty)


def _arrays(root: Path) -> dict[str, dict[str, Any]]:
    """The store's arrays (folders at its root holding array metadata), by name: their zarr metadata."""
    out = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                os.lstat(Path(entry.path) / "zarr.json")
            except OSError:
                continue
            meta = _read_json(root, f"{entry.name}/zarr.json", MAX_METADATA_BYTES, "array metadata")
            if isinstance(meta, dict) and meta.get("node_type") == "array":
                out[entry.name] = meta
    return out


def _grid(name: str, meta: dict[str, Any]) -> tuple[int, Iterator[str]] | None:
    """The chunk grid of array ``name`` (its metadata ``meta``): how many chunks, and their keys (relative to the
    store's root, as zarr names their files), lazily; None where the metadata cannot say."""
    try:
        shape = [int(n) for n in meta["shape"]]
        chunk = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        encoding = meta.get("chunk_key_encoding") or {"name": "default"}
        kind = encoding.get("name")
        sep = (encoding.get("configuration") or {}).get("separator", "/" if kind == "default" else ".")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if len(shape) != len(chunk) or min(chunk, default=1) < 1 or min(shape, default=0) < 0 \
            or kind not in ("default", "v2") or sep not in ("/", "."):
        return None
    counts = [-(-n // c) for n, c in zip(shape, chunk, strict=True)]

    def keys() -> Iterator[str]:
        for idx in itertools.product(*map(range, counts)):
            body = sep.join(map(str, idx))
            if kind == "default":
                yield f"{name}/c{sep}{body}" if idx else f"{name}/c"
            else:
                yield f"{name}/{body or '0'}"

    return math.prod(counts), keys()


def _chunk_count(meta: dict[str, Any]) -> int | None:
    grid = _grid("", meta)
    return None if grid is None else grid[0]


def _check_layout(root: Path, entries: dict[str, tuple[int, str]], empty: frozenset[str] | None = None) -> None:
    """Refuse a manifest that cannot be the one ingest wrote for the store's arrays (module docstring); ``empty``:
    the chunks it lists as not written (None: a ``geostp.manifest/1`` one, which does not list them)."""
    listed: dict[str, int] = {}
    for rel in entries:
        head, _, tail = rel.partition("/")
        if tail != "zarr.json":
            listed[head] = listed.get(head, 0) + 1
    arrays = _arrays(root)
    unwritten: dict[str, int] = {}
    for rel in sorted(empty or ()):
        head = rel.partition("/")[0]
        if head not in arrays:
            raise _refuse(root, rel, f"is listed in 'empty' although the store holds no array {head!r}",
                          "keys of chunks of the store's own arrays that ingest did not write")
        unwritten[head] = unwritten.get(head, 0) + 1
    expected = "every file of every array ingest wrote: its zarr.json and its chunks"
    for name, meta in sorted(arrays.items()):
        if f"{name}/zarr.json" not in entries:
            lists = "no file at all" if not entries else f"nothing of array {name!r} (not its {name}/zarr.json)"
            raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists {lists}, yet the store holds array "
                             f"{name!r}; expected {expected}; the manifest was emptied or edited: ingest the store "
                             "again or restore it from a copy (open_cube(path, verify='none') opens it unchecked)")
        n = _chunk_count(meta)
        got = listed.get(name, 0)
        if n is not None and got > n:
            raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists {got} chunks of array {name!r}, "
                             f"whose metadata describes {n}; expected at most {n}; ingest the store again")
        dims = meta.get("dimension_names") or []
        data = str(meta.get("data_type", "")).startswith("float") and {"time", "y", "x"} <= set(map(str, dims))
        if data and n and got == 0:
            raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists no chunk of variable {name!r}, "
                             f"whose metadata describes {n}; expected the chunks ingest wrote (it writes at least "
                             "one: it refuses a variable without data), so chunks may have been deleted unnoticed "
                             "(zarr would read them as NaN); ingest the store again or restore it from a copy")
        if empty is not None:
            _check_grid(root, name, meta, entries, empty, got + unwritten.get(name, 0))


def _check_grid(root: Path, name: str, meta: dict[str, Any], entries: dict[str, tuple[int, str]],
                empty: frozenset[str], listed: int) -> None:
    """Refuse a manifest in which a chunk of array ``name`` is neither a file nor an empty chunk, or which lists
    (``listed`` in all) a chunk key outside the array's grid."""
    grid = _grid(name, meta)
    todo = ("ingest the store again or restore it from a copy (open_cube(path, verify='none') opens it "
            "unchecked)")
    if grid is None:
        raise StoreError(f"store {root}: the metadata of array {name!r} describes no chunk grid geostp can list; "
                         f"expected the zarr v3 metadata ingest writes (its manifest lists every chunk); {todo}")
    n, keys = grid
    if n > MAX_ENTRIES or n > len(entries) + len(empty):
        raise StoreError(f"store {root}: the metadata of array {name!r} describes {n} chunks, but its manifest "
                         f"{MANIFEST_NAME} lists only {listed} of them (written or empty); expected every chunk of "
                         f"the array listed, in 'files' or in 'empty'; {todo}")
    found, first, missing = 0, None, 0
    for key in keys:
        if key in entries or key in empty:
            found += 1
        else:
            missing += 1
            first = first or key
    if first is not None:
        more = f" (and {missing - 1} more chunk(s) of it)" if missing > 1 else ""
        raise StoreError(f"store {root}: variable {name!r}, chunk {first}{more} is neither listed in its manifest "
                         f"{MANIFEST_NAME} (with a size and digest) nor listed as empty (not written at ingest: "
                         "only the fill value); expected every chunk of the grid in one or the other: the manifest "
                         f"was edited or damaged, and the chunk may have been deleted (zarr would read it as NaN "
                         f"frames); {todo}")
    if found != listed:
        prefix = f"{name}/"
        again = _grid(name, meta)  # n <= MAX_ENTRIES: a bounded set
        grid_keys = set(again[1]) if again is not None else set()
        stray = sorted(k for k in itertools.chain(entries, empty)
                       if k.startswith(prefix) and k != f"{name}/zarr.json" and k not in grid_keys)
        raise _refuse(root, stray[0] if stray else name, f"is not a chunk key of array {name!r} (its grid has {n})",
                      "the keys of the array's own chunks, as zarr names their files")


def file_problem(root: Path, rel: str, entry: tuple[int, str] | None, *, full: bool) -> str | None:
    """What is wrong with the store file ``rel`` against its manifest ``entry`` (None: not recorded), or None."""
    if entry is None:  # a chunk that held only the fill value was not written, nor recorded
        try:
            there = stat.S_ISREG(os.lstat(root / rel).st_mode)
        except OSError:
            there = False
        return "is not in the manifest: it was written after ingest" if there else None
    size, digest = entry
    st, why = _regular(root, rel)
    if st is None:
        return why
    if st.st_size != size:
        return f"has {st.st_size} bytes where the manifest recorded {size} (overwritten or truncated?)"
    if full:
        try:
            got_digest, got = _digest_of(root, rel, st, size)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if got != size:
            return f"holds {'more' if got > size else 'fewer'} bytes than the {size} the manifest recorded"
        if got_digest != digest:
            return "has changed: its digest differs from the one recorded at ingest (corrupt?)"
    return None


# ----------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class StoreVerification:
    """What :func:`verify_store` found: ``files`` checked (``bytes`` in all), by size only or by digest
    (``full``); ``manifest`` False for a store without one (nothing could be checked): ``expected`` where its
    metadata says ingest wrote one (deleted since), else written before geostp kept one."""

    path: Path
    manifest: bool
    files: int = 0
    bytes: int = 0
    full: bool = False
    expected: bool = False

    def __str__(self) -> str:
        if not self.manifest:
            return unverified_note(self.path, self.expected)
        how = "sizes and digests" if self.full else "sizes (digests not read: geostp info --verify reads them)"
        return f"{self.path}: {self.files} files ({self.bytes / 1e6:.1f} MB) match the manifest: {how}"


def unverified_note(path: Path, expected: bool) -> str:
    """What cannot be checked in the store ``path`` that has no manifest (``expected``: ingest wrote one)."""
    if expected:
        why = (f"its {MANIFEST_NAME} is missing although its zarr metadata ({MANIFEST_ATTR}) says geostp.ingest "
               "wrote one (deleted?)")
    else:
        why = f"it has no {MANIFEST_NAME} (written before geostp recorded one, or by another tool)"
    return (f"{path} cannot be verified: {why}, so a deleted chunk reads back as NaN frames and a chunk changed in "
            "place cannot be found; expected the manifest ingest writes: ingest the store again (or restore it "
            "from a copy) to add one")


def _marked_format(root: Path) -> str | None:
    """The manifest format the store's root attributes say ingest wrote (:data:`MANIFEST_ATTR`), or None."""
    try:
        doc = _read_json(root, "zarr.json", MAX_METADATA_BYTES, "root metadata")
    except StoreError:
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    mark = attrs.get(MANIFEST_ATTR) if isinstance(attrs, dict) else None
    return mark if mark in (MANIFEST_FORMAT, *LEGACY_FORMATS) else None


def _expects_manifest(root: Path) -> bool:
    return _marked_format(root) is not None


def verify_store(path: str | os.PathLike[str], *, full: bool = True,
                 require_manifest: bool | None = None) -> StoreVerification:
    """Check a store against the manifest ingest wrote: every recorded file present with its size, and (``full``)
    its BLAKE2b digest (every chunk is read); every chunk of every array's grid listed, as a file or as empty (not
    written: only the fill value), and none listed as empty present.  The manifest is checked first (module
    docstring).

    A store without a manifest gives ``StoreVerification(manifest=False)``, unless ``require_manifest`` (by default
    ``full``: verification was asked for) and its root attributes say ingest wrote one: a :class:`StoreError`.

    Raises
    ------
    CorruptStoreError
        Naming the store and the first file (chunk) that is missing, has another size or another digest, or is
        not a regular file, with how many are damaged.
    StoreError
        If the manifest itself cannot be read, names a file outside the store, or cannot be the one ingest wrote;
        if it is missing although the store's root attributes say ingest wrote one and verification is required.
    """
    p = as_path(path, "verify_store: path", expected="a zarr store written by geostp.ingest")
    read = _read_manifest(p)
    if read is None:
        expected = _expects_manifest(p)
        if expected and (full if require_manifest is None else require_manifest):
            raise StoreError(f"store {p} cannot be verified: its manifest {MANIFEST_NAME} is missing although its "
                             f"root metadata ({MANIFEST_ATTR}) says geostp.ingest wrote one (deleted?), so a deleted "
                             "chunk would read back as NaN frames and a changed one cannot be found; expected the "
                             "manifest ingest wrote: restore the store (or its manifest) from a copy, or ingest it "
                             "again (open_cube(path) opens it unverified, with a warning)")
        return StoreVerification(p, manifest=False, expected=expected)
    entries, empty = read
    if empty is None and _marked_format(p) == MANIFEST_FORMAT:
        raise StoreError(f"store {p}: its manifest {MANIFEST_NAME} is {LEGACY_FORMATS[-1]} (without the 'empty' "
                         f"list of chunks ingest did not write), but its root metadata ({MANIFEST_ATTR}) says "
                         f"ingest wrote a {MANIFEST_FORMAT} one; expected the manifest ingest wrote: the manifest "
                         "was replaced or edited; restore it from a copy or ingest the store again")
    _check_layout(p, entries, empty)
    problems: list[str] = []
    for rel in sorted(empty or ()):
        try:
            os.lstat(p / rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            problems.append(f"chunk {rel} cannot be looked at ({exc.strerror or exc})")
            continue
        problems.append(f"chunk {rel} exists, where the manifest records it as not written at ingest (it held "
                        "only the fill value): written or replaced after ingest")
    total = 0
    for rel, entry in entries.items():
        why = file_problem(p, rel, entry, full=full)
        if why:
            problems.append(f"{'chunk' if '/c/' in f'/{rel}' else 'file'} {rel} {why}")
        else:
            total += entry[0]
    if problems:
        more = f" (and {len(problems) - 1} more damaged file(s))" if len(problems) > 1 else ""
        raise CorruptStoreError(f"store {p} is damaged: {problems[0]}{more}; expected every file its manifest "
                                f"{MANIFEST_NAME} lists, unchanged since ingest; ingest it again or restore it from "
                                "a copy")
    return StoreVerification(p, manifest=True, files=len(entries), bytes=total, full=full)
