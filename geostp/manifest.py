"""A cube store's manifest (``geostp_manifest.json``): written by ingest, checked on open, read as untrusted input.

:func:`geostp.store.ingest` lists every file of a store's arrays (metadata and chunks) with its size and BLAKE2b
digest, and marks the store's root attributes (:data:`MANIFEST_ATTR`) as having one.  A store may come from
anyone, so its manifest is checked before any file it names is touched:

- the manifest is a regular file of at most :data:`MAX_MANIFEST_BYTES`, the JSON ingest writes, listing at most
  :data:`MAX_ENTRIES` files;
- every entry is a relative path inside the store (no absolute path, no ``..``, nothing that a symbolic link
  leads out of the store), recorded with a size (a whole number of bytes) and a 32-digit hex digest;
- every file it names is a regular file (``lstat``: not a link, a device, a FIFO or a folder), opened without
  following links and read no further than its recorded size plus one byte;
- every array of the store has its metadata listed, no array has more chunks listed than its metadata allows,
  and every data variable (floating point, with time, y and x) has at least one chunk listed: ingest refuses a
  variable with no data, so a manifest without any of its chunks is not the one ingest wrote.

A bad manifest is a :class:`~geostp.errors.StoreError` naming the store, the entry and what was expected; a file
that differs from its entry is a :class:`~geostp.errors.CorruptStoreError`.  A store with no manifest opens with
an :class:`UnverifiedStoreWarning` (a deleted chunk would read back as NaN, a changed one cannot be found).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geostp.checks import as_path
from geostp.errors import CorruptStoreError, StoreError

__all__ = ["MANIFEST_NAME", "MANIFEST_FORMAT", "MANIFEST_ATTR", "MAX_ENTRIES", "MAX_MANIFEST_BYTES",
           "StoreVerification", "UnverifiedStoreWarning", "verify_store", "write_manifest", "manifest_entries",
           "file_problem", "unverified_note"]

#: The file at a store's root that lists every file of its arrays with its size and digest.
MANIFEST_NAME = "geostp_manifest.json"
MANIFEST_FORMAT = "geostp.manifest/1"
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
    doc = {"format": MANIFEST_FORMAT, "digest": "blake2b-128", "files": files}
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
    try:
        os.lstat(root / MANIFEST_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        pass  # _read_json says why
    doc = _read_json(root, MANIFEST_NAME, MAX_MANIFEST_BYTES, "manifest")
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) \
            or doc.get("digest", "blake2b-128") != "blake2b-128":
        got = f"format {doc.get('format')!r}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} is {got}; expected the JSON "
                         f"({MANIFEST_FORMAT}, BLAKE2b-128 digests, a 'files' mapping) that geostp.ingest writes; "
                         "ingest the store again")
    if len(files) > MAX_ENTRIES:
        raise StoreError(f"store {root}: its manifest {MANIFEST_NAME} lists {len(files)} files; expected at most "
                         f"{MAX_ENTRIES} (one per chunk of the store); ingest the store again")
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
    return out


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


def _chunk_count(meta: dict[str, Any]) -> int | None:
    try:
        shape = [int(n) for n in meta["shape"]]
        chunk = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        return math.prod(-(-n // c) for n, c in zip(shape, chunk, strict=True))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _check_layout(root: Path, entries: dict[str, tuple[int, str]]) -> None:
    """Refuse a manifest that cannot be the one ingest wrote for the store's arrays (module docstring)."""
    listed: dict[str, int] = {}
    for rel in entries:
        head, _, tail = rel.partition("/")
        if tail != "zarr.json":
            listed[head] = listed.get(head, 0) + 1
    arrays = _arrays(root)
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


def _expects_manifest(root: Path) -> bool:
    try:
        doc = _read_json(root, "zarr.json", MAX_METADATA_BYTES, "root metadata")
    except StoreError:
        return False
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return isinstance(attrs, dict) and attrs.get(MANIFEST_ATTR) == MANIFEST_FORMAT


def verify_store(path: str | os.PathLike[str], *, full: bool = True) -> StoreVerification:
    """Check a store against the manifest ingest wrote: every recorded file present with its size, and (``full``)
    its BLAKE2b digest (every chunk is read).  The manifest is checked first (module docstring).

    Raises
    ------
    CorruptStoreError
        Naming the store and the first file (chunk) that is missing, has another size or another digest, or is
        not a regular file, with how many are damaged.
    StoreError
        If the manifest itself cannot be read, names a file outside the store, or cannot be the one ingest wrote.
    """
    p = as_path(path, "verify_store: path", expected="a zarr store written by geostp.ingest")
    entries = manifest_entries(p)
    if entries is None:
        return StoreVerification(p, manifest=False, expected=_expects_manifest(p))
    _check_layout(p, entries)
    problems: list[str] = []
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
