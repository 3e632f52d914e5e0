"""Reading segment lists: how fast a list is read, and how fast one past the limit is refused.

Writes generated lists (CSV with text, and SRT with markup, tags and a sound description in
every cue) of ``--cues`` cues and prints one JSON line: seconds to read them with the limit
raised, seconds to refuse them under the default limit (:data:`avafn.segments.
DEFAULT_MAX_SEGMENTS`), cues per second, and the machine's load average::

    python benchmarks/bench_segments.py --cues 50000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from avafn.segments import DEFAULT_MAX_SEGMENTS, SegmentError, format_time, read_segments


def _write(folder: Path, n: int) -> dict[str, Path]:
    csv = folder / "long.csv"
    csv.write_text("".join(f"{i},{i + 0.5},S{i % 3},words {i}\n" for i in range(n)))
    srt = folder / "long.srt"
    srt.write_text("".join(
        f"{k + 1}\n{format_time(k).replace('.', ',')} --> "
        f"{format_time(k + 0.5).replace('.', ',')}\n<i>SPEAKER{k % 3}: hello there [laughs]</i>"
        "\n\n" for k in range(n)))
    return {"csv": csv, "srt": srt}


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cues", type=int, default=50_000)
    args = ap.parse_args()
    out: dict = {"cues": args.cues, "limit": DEFAULT_MAX_SEGMENTS,
                 "load_average": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, path in _write(Path(tmp), args.cues).items():
            read = _seconds(lambda p=path: read_segments(p, max_segments=None))

            def refuse(p: Path = path) -> None:
                try:
                    read_segments(p)
                except SegmentError:
                    return
                raise AssertionError("the list was not refused")

            out[fmt] = {"read_s": round(read, 3), "cues_per_s": round(args.cues / read),
                        "refused_s": round(_seconds(refuse), 3)
                        if args.cues > DEFAULT_MAX_SEGMENTS else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
