"""The nowcast runner's own files: the safe open of its lock and log, and its JSON-lines log, appended and read back.

A restarted runner reads back what the runners before it logged about the cycles still in its catch-up window
(:func:`recall`), so that a cycle given up (``skipped``, ``refused``), a bad file and a file stamped in the future
are each logged once, not once per restart.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from geostp.errors import UnsafePathError, WriteError, writing
from geostp.writers import check_own_file, head_bytes, is_json_object_with

__all__ = ["open_own_file", "RunnerLog", "Logged", "recall", "is_runner_log", "check_log", "check_runner_files",
           "is_own_map", "LOCK_NAME", "GRID_NAME"]

LOCK_NAME = ".geostp-nowcast.lock"
GRID_NAME = ".geostp-nowcast-grid.json"

#: What the runner's own files hold, so that it replaces or appends to nothing else (a user's file of that name is
#: refused with a WriteError naming it): the lock says which process holds it, the grid record is a JSON object
#: with the grid's shape, a map is a PNG whose Software field names geostp.
LOCK_EXPECTED = "an empty file or the text 'pid N on HOST since TIME' a nowcast runner writes"
GRID_EXPECTED = "the JSON object a nowcast runner writes (with the grid's 'shape')"
MAP_SOFTWARE = "geostp nowcast runner"
MAP_EXPECTED = f"a PNG map a nowcast runner drew (its Software field {MAP_SOFTWARE!r})"

#: How every nowcast log begins: the first runner's ``start`` record (what a runner writes first).
LOG_START = b'{"event":"start",'
#: What the log is expected to be, for the message that refuses another file.
LOG_EXPECTED = ('a JSON-lines log that a geostp nowcast runner wrote (its first line a {"event":"start",...} record '
                "with time, pid and out_dir)")


def _is_log_start(first: bytes) -> bool:
    """Whether ``first``, a log's first line, is a runner's ``start`` record (or the start of one cut short)."""
    if not first.startswith(LOG_START):
        return False
    try:
        record = json.loads(first)
    except ValueError:  # cut short by a runner killed while writing it (or longer than was read)
        return True
    return isinstance(record, dict) and record.get("event") == "start" and \
        all(k in record for k in ("time", "pid", "out_dir"))


def is_runner_log(path: Path) -> bool:
    """Whether ``path`` is a nowcast runner's log: its first line a runner's ``start`` record."""
    return _is_log_start(head_bytes(path, 1 << 16).split(b"\n", 1)[0])


def check_log(path: Path) -> None:
    """Refuse (a :class:`~geostp.errors.WriteError` naming it) to append to a regular file at ``path`` that is not
    a runner's log; missing or empty is fine.  Links, folders and other odd files are left to
    :func:`open_own_file`, which refuses them (:class:`~geostp.errors.UnsafePathError`) when the log is opened."""
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        check_own_file(path, is_runner_log, what="nowcast log", expected=LOG_EXPECTED, action="append to",
                       hint="move it away, or set output.log (or output.dir) to another file")

#: Why a file cannot be created in its folder (a :class:`~geostp.errors.WriteError`, not an unsafe file).
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT,
                 errno.ENAMETOOLONG}


def open_own_file(path: Path, flags: int, what: str) -> int:
    """Open a file the runner keeps for itself (its lock, its log) without following a link: a descriptor.

    ``O_NOFOLLOW`` makes the kernel refuse a symbolic link in the last component (a dangling one included, so
    nothing is created at its target); a hard link (a second name of some other file), a folder, a FIFO or a
    device is refused after the open, before anything is written.  Either way an :class:`UnsafePathError` names
    the file and what was expected, and the file (and whatever it points at) is left as it was.  A folder that
    refuses the new file (read-only, full, a file on the path) is a :class:`~geostp.errors.WriteError` naming it.
    """
    expected = f"expected a regular file that only the nowcast runner writes (or none: it is created); remove {path}"
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise UnsafePathError(f"{what} {path} is a symbolic link; refusing to follow it ({expected})") from None
        if exc.errno in _CANNOT_WRITE:  # the folder refuses (read-only, full, not a folder): not the file's fault
            with writing(path, what):
                raise
        raise UnsafePathError(f"{what} {path} cannot be opened as a file ({exc.strerror}); refusing it "
                              f"({expected})") from None
    st = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode)
               else f"has {st.st_nlink} names (a hard link to another file)" if st.st_nlink != 1 else None)
    if problem is not None:
        os.close(fd)
        raise UnsafePathError(f"{what} {path} {problem}; refusing to write it ({expected})")
    os.set_blocking(fd, True)
    return fd


@dataclass
class RunnerLog:
    """The runner's JSON-lines log: one record a line, appended; the texts in ``redact`` written as their stand-ins."""

    path: Path | None
    echo: TextIO | str | None  # "stdout": whatever sys.stdout is when a line is written
    redact: Mapping[str, str] = field(default_factory=dict)  # text -> what is written instead
    #: Append only to a runner's own log (its first line a ``start`` record; :func:`is_runner_log`): the runner's
    #: log is opened so, and another file is refused (a WriteError) before a byte is written to it.
    own_only: bool = False
    _fh: Any = field(default=None, repr=False)

    def open(self) -> None:
        """Open (create) the log file for appending, refusing a link (:func:`open_own_file`).

        A last line cut short (a runner killed while writing it) is ended, so that the next record starts a
        line of its own; the cut line stays and is skipped when the log is read back.
        """
        if self.path is not None and self._fh is None:
            with writing(self.path, "nowcast log"):  # its folder: a read-only one, a file on the path
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_own_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, "nowcast log")
            size = os.fstat(fd).st_size
            first = os.pread(fd, min(size, 1 << 16), 0).split(b"\n", 1)[0] if self.own_only and size else b""
            if self.own_only and size and not _is_log_start(first):
                os.close(fd)  # a file geostp did not write (a user's notes, the recipe): appended to by no one
                check_log(self.path)  # the message that says what the file is
                raise WriteError(f"refusing to append to {self.path}: it is not a nowcast log geostp wrote; "
                                 f"expected {LOG_EXPECTED} or no file at all")  # it changed meanwhile: refused
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
            self._fh = os.fdopen(fd, "a", buffering=1)  # kept open for the runner's life

    def line(self, record: Mapping[str, Any]) -> str:
        """``record`` as the log writes it: one JSON line with the redacted texts replaced."""
        line = json.dumps(record, default=str, separators=(",", ":"))
        for text in sorted(self.redact, key=len, reverse=True):  # as JSON spells them, the longest first
            line = line.replace(json.dumps(text)[1:-1], json.dumps(self.redact[text])[1:-1])
        return line

    def as_logged(self, value: Any) -> Any:
        """``value`` as it reads back from the log (JSON types, redacted): what a recalled record is compared with."""
        return json.loads(self.line({"v": value}))["v"]

    def write(self, record: dict[str, Any]) -> None:
        line = self.line(record)
        if self.path is not None:
            self.open()
            with writing(self.path, "nowcast log"):  # a full disk: a WriteError naming the log
                self._fh.write(line + "\n")
                self._fh.flush()
        stream = sys.stdout if self.echo == "stdout" else self.echo
        if stream is not None:
            stream.write(line + "\n")  # type: ignore[union-attr]
            stream.flush()  # type: ignore[union-attr]

    def read_back(self, block: int = 1 << 16) -> Iterator[dict[str, Any]]:
        """The records of the open log file, newest first (through the descriptor the runner opened; a line
        that is not one JSON object, such as one cut short, is skipped)."""
        if self._fh is None:
            return
        fd = self._fh.fileno()
        pos = os.fstat(fd).st_size
        carry = b""
        while pos > 0:
            start = max(0, pos - block)
            data = os.pread(fd, pos - start, start) + carry
            pos = start
            lines = data.split(b"\n")
            carry = lines.pop(0) if pos > 0 else b""  # it may begin in the block before
            for raw in reversed(lines):
                record = _parse(raw)
                if record is not None:
                    yield record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _parse(raw: bytes) -> dict[str, Any] | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _time(text: Any) -> np.datetime64 | None:
    try:
        t = pd.Timestamp(text)
    except (TypeError, ValueError):
        return None
    if t is pd.NaT or t.tzinfo is not None:
        return None
    return np.datetime64(t.to_datetime64(), "ns")


@dataclass
class Logged:
    """What earlier runners logged that a runner must not log again (each as the log holds it).

    ``given_up``: reference time -> the state of the inputs (``input_state``) when its cycle was last given up
    (``skipped`` or ``refused``), for the cycles of the window whose last record gave them up; ``bad_files``:
    (path, size, modification time) of each ``bad_file`` record; ``future_files``: (path, file time) of each
    ``future_file`` record; ``notes``: the ``feed_note`` texts.
    """

    given_up: dict[np.datetime64, Any] = field(default_factory=dict)
    bad_files: set[tuple[Any, ...]] = field(default_factory=set)
    future_files: set[tuple[Any, ...]] = field(default_factory=set)
    notes: set[str] = field(default_factory=set)


def recall(log: RunnerLog, horizon: np.datetime64, window: np.timedelta64) -> Logged:
    """Read the log back (newest first) for what was logged about reference times from ``horizon`` on.

    A cycle is looked at only while its reference time is within ``window`` (the catch-up span) of the newest
    file's time then, and the newest file's time does not go back: once a cycle record older than
    ``horizon - window`` is read, every record before it concerns reference times before ``horizon``, and the
    reading stops.  The newest record of a reference time decides whether its cycle was given up.
    """
    out = Logged()
    decided: set[np.datetime64] = set()
    stop_before = horizon - window
    for rec in log.read_back():
        event = rec.get("event")
        if event == "cycle":
            t = _time(rec.get("reference_time"))
            if t is None:
                continue
            if t < stop_before:
                break
            if t < horizon or t in decided:
                continue
            decided.add(t)
            if rec.get("outcome") in ("skipped", "refused") and isinstance(rec.get("input_state"), list):
                out.given_up[t] = rec["input_state"]
        elif event == "bad_file":
            out.bad_files.add((rec.get("path"), rec.get("size"), rec.get("mtime_ns")))
        elif event == "future_file":
            out.future_files.add((rec.get("path"), rec.get("file_time")))
        elif event == "feed_note" and isinstance(rec.get("note"), str):
            out.notes.add(rec["note"])
    return out


# ----------------------------------------------------------------------------- the runner's own files


def is_lock(text: bytes) -> bool:
    """Whether ``text``, the start of a lock file, is what a runner writes there (or nothing)."""
    return not text or text.startswith(b"pid ")


def is_lock_file(path: Path) -> bool:
    return is_lock(head_bytes(path, 64))


def is_own_map(path: Path) -> bool:
    """Whether ``path`` is a PNG map the runner drew (:data:`MAP_SOFTWARE` in its header chunks)."""
    head = head_bytes(path, 1 << 16)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and MAP_SOFTWARE.encode() in head


def check_runner_files(out_dir: Path, log_path: Path | None) -> None:
    """Refuse (:class:`~geostp.errors.WriteError`, naming the file and what was expected) to start a runner whose
    log, lock or grid record is a regular file it did not write (a user's ``nowcast.log.jsonl``, an
    ``output.log`` naming the user's notes or the recipe itself); creates and changes nothing.  Links, hard links
    and other odd files are refused when they are opened (:class:`~geostp.errors.UnsafePathError`)."""
    check_log(log_path if log_path is not None else out_dir / "nowcast.log.jsonl")
    lock = out_dir / LOCK_NAME
    try:
        st = lock.lstat()
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        check_own_file(lock, is_lock_file, what="nowcast lock file", expected=LOCK_EXPECTED,
                       hint="move it away or choose another output.dir")
    check_own_file(out_dir / GRID_NAME, lambda p: is_json_object_with(p, ("shape",)), what="grid record",
                   expected=GRID_EXPECTED, hint="move it away or choose another output.dir")
