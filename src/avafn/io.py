"""Reading and writing files: atomic writes, JSON, hashing; the one time parser.

**Atomic writes.** :func:`atomic_open` (a binary file object), :func:`atomic_write_bytes` and
:func:`atomic_write_json` write a temp file beside the target and rename it over the target
(``os.replace``), so a reader sees the old file or the new one, never a part, and a process
killed mid-write leaves the target as it was. The result has the permissions a plain
``open(path, "wb")`` would give it: a new file gets ``0o666`` less the process's umask (and the
folder's default ACL), an existing file keeps its mode. The temp file is named after its
writer, ``.tmp-<name>~<pid>@<host>~<random>``, so a clean-up in another process
(:func:`temp_owner_alive`) removes only the temp files of writers that are gone; any number of
writers may write one path at once (the last rename wins; each temp name is their own).

**JSON.** :func:`read_json` (a damaged or missing file raises
:class:`avafn.errors.ConfigFileError` naming it) and :func:`atomic_write_json` (indented,
sorted keys, one trailing newline).

**Hashing.** :func:`sha256_file` (a file's SHA-256, read in chunks) and :func:`config_hash`
(the first 16 hex digits of the SHA-256 of a mapping's canonical JSON).

**Times.** :func:`parse_time`, the one parser of the times every input format writes (seconds
or clock time), and :func:`format_time` (``HH:MM:SS.mmm`` for messages and reports).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from avafn.errors import quote, read_json

__all__ = ["STALE_TEMP_SECONDS", "atomic_open", "atomic_write_bytes", "atomic_write_json",
           "config_hash", "format_time", "make_temp_dir", "parse_time", "read_json",
           "sha256_file", "temp_owner_alive"]

#: a temp file whose owner cannot be asked (another host) is stale after this many seconds
STALE_TEMP_SECONDS = 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TEMP = re.compile(r"^\.tmp-.+~(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)~[^~]*$")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temp file beside ``path``, named after this process, opened for writing with the
    mode a plain ``open`` of ``path`` would give (``O_EXCL``: never another writer's file)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # an existing file keeps its mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.parent / f".tmp-{path.name}~{os.getpid()}@{_HOST}~{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask (and default ACLs)
            break
        except FileExistsError:
            continue
    if mode is not None:
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    return fd, tmp


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new folder ``parent/<prefix><random>`` with the mode a plain ``mkdir`` gives
    (``0o777`` less the umask), unlike :func:`tempfile.mkdtemp`'s ``0o700``: for work folders
    that are renamed into a user's outputs once complete."""
    parent = Path(parent)
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(0o777)  # the kernel applies the umask (and default ACLs)
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """``with atomic_open(path) as f: f.write(...)``: a binary file that becomes ``path`` when
    the block ends without an exception (flushed and ``fsync``-ed first) and is removed when
    it raises. A failure of the disk (full, read-only) is re-raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one
    (:func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys (values JSON does not know: ``str()``),
    written atomically. NaN and infinity are refused (``ValueError`` naming the file), never
    written: they are not JSON, and other tools fail on them."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"{path}: not written, it would hold a non-finite number ({e})") from None
    atomic_write_bytes(path, (text + "\n").encode())


def temp_owner_alive(path: Path, stale_after: float = STALE_TEMP_SECONDS) -> bool:
    """Whether the temp file ``path`` may still belong to a live writer: its owner process
    (named in the file name) runs on this host, or, when it cannot be asked (another host),
    the file is younger than ``stale_after`` seconds. Temp files not named by an owner are
    left over from before owners were named: never alive."""
    m = _TEMP.match(path.name)
    if m is None:
        return False
    if m["host"] != _HOST:
        try:
            return time.time() - path.stat().st_mtime < stale_after
        except FileNotFoundError:
            return False
    try:
        os.kill(int(m["pid"]), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # a process of another user holds that pid
    return True


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(config: dict) -> str:
    """The first 16 hex digits of the SHA-256 of ``config``'s canonical JSON (sorted keys, no
    spaces; values JSON does not know: ``str()``)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- times
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def parse_time(s: str) -> float:
    """Seconds from a time as every input format writes it; the one time parser of avafn
    (segment lists, manifests, MELD's CSVs).

    Plain seconds ``12.5`` (CSV, JSON, RTTM; ``-1.5`` too: segment lists clip it) or with a
    decimal comma ``12,5``; clock time ``HH:MM:SS,mmm`` (SRT, MELD), ``HH:MM:SS.mmm`` /
    ``MM:SS.mmm`` (WebVTT), ``H:MM:SS.cc`` (ASS), ``HH:MM:SS`` (transcripts), any number of
    hour digits and of fraction digits (a fraction of a second: ``00:06:47,28`` is 407.28).
    Raises ``ValueError`` for anything else: empty, minutes or seconds of 60 and more, ``nan``,
    ``inf``."""
    s = s.strip()
    if not s:
        raise ValueError("empty time")
    m = _CLOCK.match(s)
    if m:
        h, mnt, sec = m.group(1), m.group(2), m.group(3).replace(",", ".")
        if int(mnt) >= 60 or float(sec) >= 60:
            raise ValueError(f"invalid clock time {quote(s)}")
        return int(h or 0) * 3600 + int(mnt) * 60 + float(sec)
    if s.count(",") == 1 and "." not in s:  # a decimal comma: "12,5" (European spreadsheets)
        s = s.replace(",", ".")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"not a time: {quote(s)} (expected seconds or HH:MM:SS.mmm)") from None
    if not math.isfinite(v):
        raise ValueError(f"not a finite time: {quote(s)}")
    return v


#: beyond this many seconds (about 31,700 years) a time is written in plain seconds
_CLOCK_LIMIT = 1e12


def format_time(t: float) -> str:
    """``HH:MM:SS.mmm`` (for reports and messages); never raises: a non-finite or absurdly
    large value is written as it is (``nan s``, ``1e+300 s``)."""
    try:
        t = float(t)
    except (TypeError, ValueError):
        return str(t)
    if not math.isfinite(t) or abs(t) >= _CLOCK_LIMIT:
        return f"{t:g} s"
    sign = "-" if t < 0 else ""
    ms = round(abs(t) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
