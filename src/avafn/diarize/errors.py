"""The diarization package's error type."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from avafn.errors import UserError


class DiarizeError(UserError):
    """Audio that cannot be segmented, a missing optional package, a bad option."""


def package_file(package: str, relpath: str, dist: str, purpose: str) -> str:
    """Path of a data file shipped inside ``package``, found without importing it (importing
    ``silero_vad`` sets torch's thread count; ``resemblyzer`` imports webrtcvad)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DiarizeError(f"{purpose} needs the {dist!r} package (pip install {dist})")
    for root in spec.submodule_search_locations:
        p = Path(root) / relpath
        if p.is_file():
            return str(p)
    raise DiarizeError(f"the {dist!r} package is installed without its {relpath} "
                       f"(needed by {purpose}); reinstall it")
