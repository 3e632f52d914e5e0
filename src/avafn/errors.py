"""The error policy: one base type for a user's mistakes, and the failures of the machine.

A :class:`UserError` is a mistake in what the user gave avafn (a file, an option, a store, a
machine without the asked device): the command line prints it as one line
``avafn CMD: error: MESSAGE`` and exits with status 1. Its message names the file / option /
utterance and what was expected. Every error type of avafn that reports such a mistake
(``DataError``, ``StoreError``, ``SegmentError``, ``PredictError``, ``MediaError``, ...)
derives from it.

The machine's own failures (disk full, permission denied, a file that is not there) are
reported the same way by :func:`describe_environment_error`. Anything else that escapes a
command is a bug, and only a bug prints a traceback.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

#: characters of the input quoted in a message at most
QUOTE_CHARS = 80


def quote(text: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a piece of the input for a message, cut to about ``limit`` characters."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


class UserError(ValueError):
    """A user's mistake, reported in one line without a traceback."""


class DeviceError(UserError):
    """A torch device that this machine does not have (``--device cuda`` without CUDA)."""


class ConfigFileError(UserError):
    """A JSON file (config, metadata) that is missing, truncated or not JSON."""


#: errno -> what to say; the file (when the OS names it) is put in front
_ENVIRONMENT = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system; write elsewhere",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "not a folder",
    errno.EMFILE: "too many open files (raise `ulimit -n`)",
    errno.EIO: "input/output error (a failing disk or network mount)",
    errno.EFBIG: "file too large (the file-size limit, see `ulimit -f`, or the file system's)",
    errno.EEXIST: "already exists",
}

#: what the CPU allocators say when memory runs out (torch raises a RuntimeError)
_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "Cannot allocate memory",
                  "not enough memory")


def _out_of_memory(exc: BaseException) -> BaseException | None:
    """``exc`` or the exception it was raised from / while handling, when it is memory
    running out (MemoryError, torch's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.cuda
            return e
        if isinstance(e, RuntimeError) and any(s in str(e) for s in _OUT_OF_MEMORY):
            return e
        e = e.__cause__ or e.__context__
    return None


def refuse_pickle(source: object, exc: BaseException) -> UserError:
    """The error for model weights that ``torch.load(weights_only=True)`` refused: a pickle
    that would run code to load (``source``: the folder or file given)."""
    first = next((ln.strip() for ln in str(exc).splitlines()
                  if "GLOBAL" in ln or "Unsupported" in ln), "")
    return UserError(f"{source}: its weights are a pickle that would run code to load"
                     + (f" ({first[:160]})" if first else "") + "; refused (nothing avafn "
                     "loads may execute code): give the model saved as model.safetensors")


def describe_environment_error(exc: BaseException) -> str | None:
    """One line for a failure of the machine (an :class:`OSError` with a known ``errno``,
    naming the file when the OS gives it; memory exhausted); ``None`` for anything else (a
    bug)."""
    oom = _out_of_memory(exc)
    if oom is not None:
        first = str(oom).strip().splitlines()[0] if str(oom).strip() else ""
        if "DefaultCPUAllocator" in first:  # "[enforce fail at alloc_cpu.cpp:N] err == 0. ..."
            first = first[first.index("DefaultCPUAllocator"):]
        return ("out of memory" + (f" ({first[:200]})" if first else "")
                + "; use a smaller --batch-size, or a machine with more memory")
    if type(exc).__name__ == "UnpicklingError":  # torch.load(weights_only=True) refused it
        return str(refuse_pickle("a model file", exc))
    if not isinstance(exc, OSError):
        return None
    if exc.errno is None and str(exc):  # raised by avafn with its own message
        return str(exc)
    if exc.errno not in _ENVIRONMENT:
        return None
    what = _ENVIRONMENT[exc.errno]
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    if files:
        return f"{' -> '.join(map(str, files))}: {what}"
    detail = exc.strerror or str(exc)
    return f"{what} ({detail})" if detail and detail.lower() not in what else what


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON content of ``path``; a missing, unreadable or damaged file raises
    :class:`ConfigFileError` naming it (never a bare ``JSONDecodeError``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{p}: no such {what}") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{p}: damaged {what} (not UTF-8 text: {e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        end = text.rstrip()
        state = "truncated" if e.pos >= len(end) or end[-1:] not in ("}", "]") else "damaged"
        raise ConfigFileError(f"{p}: {state} {what} (invalid JSON at line {e.lineno}, "
                              f"column {e.colno}: {e.msg})") from None


def check_device(device: str) -> str:
    """``device`` if this machine has it; :class:`DeviceError` (one line) otherwise.

    ``"cpu"`` is accepted without importing torch. Every command that takes ``--device``
    goes through this before any work starts.
    """
    if device in ("cpu", None):
        return device
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {device!r}: not a torch device (expected cpu, cuda, "
                          "cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise DeviceError(f"--device {device}: CUDA is not available on this machine "
                              f"({why}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceError(f"--device {device}: this machine has {n} CUDA device(s), "
                              f"cuda:0..cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device {device}: MPS is not available on this machine; "
                              "use --device cpu")
    elif dev.type != "cpu":
        raise DeviceError(f"--device {device}: avafn runs on cpu, cuda or mps")
    return device
