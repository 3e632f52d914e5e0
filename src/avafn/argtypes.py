"""argparse value types shared by the CLI and the extractors' own options.

Each one refuses what would otherwise reach the library as a value that cannot be meant: a
NaN or infinite number, a negative learning rate, an empty path (which would write into the
current folder), a file where a folder is expected. argparse then prints one usage line
naming the option and the value (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def at_least(minimum: int):
    """argparse type: an integer >= minimum (argparse then names the option and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite(minimum: float | None = None, *, above: float | None = None,
           below: float | None = None):
    """argparse type: a finite number (never NaN or inf), ``>= minimum``, ``> above`` and
    ``< below`` where given."""
    bounds = [f">= {minimum:g}" if minimum is not None else "",
              f"> {above:g}" if above is not None else "",
              f"< {below:g}" if below is not None else ""]
    want = "a finite number" + "".join(f" {b}" for b in bounds if b)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum) or \
                (above is not None and value <= above) or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text}")
        return value

    parse.__name__ = want
    return parse


def folder(text: str) -> str:
    """argparse type: a folder to read or write (need not exist yet); refuses an empty path
    (it would mean the current folder) and an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path (give '.' to "
                                         "mean the current folder)")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a folder")
    return text


def json_object(text: str) -> dict:
    """argparse type: a JSON object given as text or as the path of a JSON file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a JSON object or a JSON file, got an empty "
                                         "string")
    p = Path(text)
    source = text
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a JSON object or a "
                                         "JSON file")
    if p.is_file():
        try:
            source = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: cannot be read ({e})") from None
    try:
        d = json.loads(source)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text[:200]}: not a JSON object nor a JSON file "
                                         f"({e})") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"{text[:200]}: expected a JSON object")
    return d
