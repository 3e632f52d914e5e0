"""Reading annotation tables (CSV / JSONL) with errors that name the file and the line."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from avafn.data.corpus import DataError
from avafn.io import parse_time


def _decode(path: Path) -> str:
    """The file's text: UTF-8, with or without a BOM, any newline convention."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte {data[e.start]:#04x} at offset "
            f"{e.start}); annotation files must be UTF-8 (re-save the file as UTF-8)"
        ) from None
    return text.lstrip("\ufeff")  # one or more BOMs


def _clean_key(k: str | None) -> str:
    return (k or "").strip().lstrip("\ufeff").strip()


def read_csv(path: str | os.PathLike, required: tuple[str, ...]
             ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line, row)`` pairs of a CSV file; ``line`` is where the record starts
    (1 = header). Raises :class:`DataError` naming the file when a required column is missing
    and naming the line when a row has more fields than the header."""
    path = Path(path)
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (no header row)") from None
    except csv.Error as e:
        raise DataError(f"{path}: line 1: unreadable CSV header ({e})") from None
    header = [_clean_key(h) for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found: "
            f"{', '.join(h for h in header if h) or '(none)'}"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}: line {start}: unreadable CSV ({e})") from None
        if not rec or all(not c.strip() for c in rec):
            continue  # blank line
        if len(rec) > len(header) and any(c.strip() for c in rec[len(header):]):
            raise DataError(
                f"{path}: line {start}: {len(rec)} fields but the header has {len(header)} "
                "(an unquoted comma in a text field?)"
            )
        rec = rec + [""] * (len(header) - len(rec))
        rows.append((start, dict(zip(header, rec))))
    return header, rows


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...]
               ) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` pairs of a JSON-lines file, every value as a string ("" for null)."""
    path = Path(path)
    text = _decode(path)
    rows: list[tuple[int, dict[str, str]]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i}: invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {i}: expected a JSON object, got {type(obj).__name__}")
        row = {_clean_key(k): "" if v is None else str(v) for k, v in obj.items()}
        missing = [c for c in required if c not in row]
        if missing:
            raise DataError(
                f"{path}: line {i}: missing column(s) {', '.join(missing)}; found: "
                f"{', '.join(row) or '(none)'}"
            )
        rows.append((i, row))
    return rows


def parse_int(value: str, what: str, where: str) -> int:
    v = value.strip()
    try:
        return int(v)
    except ValueError:
        try:
            f = float(v)
        except ValueError:
            f = None
        if f is not None and f.is_integer():
            return int(f)
        raise DataError(f"{where}: {what} {value!r} is not an integer") from None


def time_cell(value: str, what: str, where: str) -> float | None:
    """Seconds from a table cell (:func:`avafn.io.parse_time`: ``HH:MM:SS,mmm``,
    ``MM:SS.fff``, ``12.5``, ``12,5``); None if empty. A negative or unreadable time raises
    :class:`DataError` naming ``where`` and the column ``what``.

    The digits after the comma are a decimal fraction of a second, so MELD's three malformed
    stamps with two digits (``00:06:47,28``) read as 0.28 s, not 0.028 s.
    """
    v = value.strip()
    if not v:
        return None
    try:
        x = parse_time(v)
    except ValueError:
        x = None
    if x is not None and x >= 0:
        return x
    raise DataError(
        f"{where}: {what} {value!r} is not a time (expected HH:MM:SS,mmm or seconds)"
    )
