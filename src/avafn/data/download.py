"""Download MELD's official annotation CSVs into a user cache, verified against pinned SHA-256.

The files come from the ``data/MELD/`` folder of the MELD repository (GPL-3.0); they are never
shipped with avafn. The base URL can be changed (``base_url=`` or ``$AVAFN_MELD_URL``), e.g. to a
mirror, a ``file://`` folder or a local HTTP server; the checksums are always checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from avafn.errors import UserError
from avafn.io import atomic_open, sha256_file
from avafn.logs import to_console

#: named, not ``__name__``: under ``python -m avafn.data.download`` that would be ``__main__``
log = logging.getLogger("avafn.data.download")

#: file name of each split's CSV in MELD's ``data/MELD/`` folder
MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}

#: SHA-256 of the official CSVs (declare-lab/MELD, data/MELD/, commit 2d2011b4)
MELD_SHA256 = {
    "train_sent_emo.csv": "d2fa2d6529cf03cac2989efec05c9b27d8fd2f4c8fc5974c7ae88aa537fa02db",
    "dev_sent_emo.csv": "2e89c6f8aa182d6f62f8c6331aece905ac7273ca4999660bfb5213e1d0370c1c",
    "test_sent_emo.csv": "8d37103938f7067600839fe29d5a114a6cd1bcdafb75bec101e06464c5006888",
}

#: raw files of the official repository (declare-lab/MELD); the pinned sums are of commit 2d2011b4
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/declare-lab/MELD/master/data/MELD/"


class DownloadError(UserError, RuntimeError):
    """A file that could not be fetched or whose checksum does not match the pinned one."""


def cache_root() -> Path:
    """avafn's user cache: ``$AVAFN_CACHE``, else ``$XDG_CACHE_HOME/avafn``, else
    ``~/.cache/avafn``."""
    env = os.environ.get("AVAFN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "avafn"


def meld_cache_dir() -> Path:
    """Where :func:`download_meld` puts the CSVs by default (``<cache_root>/meld``)."""
    return cache_root() / "meld"


def is_complete(dest: str | os.PathLike) -> bool:
    """True when ``dest`` holds the three official CSVs with the pinned checksums."""
    dest = Path(dest)
    return all((dest / f).is_file() and sha256_file(dest / f) == MELD_SHA256[f]
               for f in MELD_FILES.values())


def _fetch(url: str, target: Path, expected: str, timeout: float) -> None:
    """Stream ``url`` into a temp file beside ``target``, check its SHA-256, then rename."""
    h = hashlib.sha256()
    with atomic_open(target) as out:  # removed unless complete and checked
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(
                f"could not download {url}: {reason}. Without network access, copy the MELD "
                "CSVs into a folder and pass --meld-dir DIR (or set $AVAFN_MELD_DIR)."
            ) from e
        got = h.hexdigest()
        if got != expected:
            raise DownloadError(
                f"checksum mismatch for {url}: got sha256 {got}, expected {expected}; "
                f"the file was not saved to {target}"
            )


def download_meld(dest: str | os.PathLike | None = None, base_url: str | None = None,
                  force: bool = False, timeout: float = 60.0, quiet: bool = False) -> Path:
    """Fetch ``{train,dev,test}_sent_emo.csv`` into ``dest`` (default :func:`meld_cache_dir`)
    and return that folder. Files already there with the right checksum are kept (unless
    ``force``); each file is written atomically, only after its SHA-256 matched the pinned sum.
    Each file fetched is logged (``downloading URL -> FILE``) unless ``quiet``. Raises
    :class:`DownloadError` on a network failure or a checksum mismatch."""
    dest = Path(dest).expanduser() if dest is not None else meld_cache_dir()
    base = base_url or os.environ.get("AVAFN_MELD_URL") or DEFAULT_BASE_URL
    if not base.endswith("/"):
        base += "/"
    for name in MELD_FILES.values():
        target = dest / name
        if not force and target.is_file() and sha256_file(target) == MELD_SHA256[name]:
            continue
        if not quiet:
            log.info(f"downloading {base}{name} -> {target}")
        _fetch(base + name, target, MELD_SHA256[name], timeout)
    return dest


def resolve_meld_dir(meld_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder to read MELD from: ``meld_dir``, else ``$AVAFN_MELD_DIR``, else the download
    cache (fetched there first when it is not complete and ``download``)."""
    if meld_dir:
        return Path(meld_dir).expanduser()
    env = os.environ.get("AVAFN_MELD_DIR")
    if env:
        return Path(env).expanduser()
    cache = meld_cache_dir()
    if not is_complete(cache) and download:
        download_meld(cache)
    return cache


def main(argv: list[str] | None = None) -> int:
    """``python -m avafn.data.download [--dest DIR] [--base-url URL] [--force]``"""
    import argparse  # only this command line needs it: ``import avafn.data`` stays light

    p = argparse.ArgumentParser(prog="python -m avafn.data.download",
                                description="Download MELD's annotation CSVs (checksum-verified).")
    p.add_argument("--dest", default=None, help=f"folder (default: {meld_cache_dir()})")
    p.add_argument("--base-url", default=None, help=f"default: {DEFAULT_BASE_URL}")
    p.add_argument("--force", action="store_true", help="download again even if verified")
    args = p.parse_args(argv)
    to_console()
    try:
        dest = download_meld(args.dest, base_url=args.base_url, force=args.force)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"MELD annotations verified in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
