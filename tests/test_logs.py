"""The library logs, never prints; the command line shows the log lines as they are written."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from avafn.logs import ConsoleHandler, to_console

SRC = Path(__file__).resolve().parents[1] / "src" / "avafn"
#: code that talks to a terminal itself: the command line, and the ``main()`` of the
#: ``python -m`` entry points (a worker process, a converter, the MELD download)
CONSOLE_CODE = ("cli.py", "commands/")


def _prints(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    mains = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "main"]
    inside_main = {id(c) for m in mains for c in ast.walk(m)}
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
            and id(n) not in inside_main]


def test_library_code_does_not_print():
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(CONSOLE_CODE):
            continue
        if lines := _prints(path):
            found[rel] = lines
    assert not found, f"print() in library code (log through logging instead): {found}"


def test_console_shows_info_on_stdout_and_warnings_on_stderr_as_written(capsys):
    logger = logging.getLogger("avafn")
    before = list(logger.handlers), logger.level
    try:
        to_console()
        to_console()  # twice: still one handler
        assert sum(isinstance(h, ConsoleHandler) for h in logger.handlers) == 1
        logging.getLogger("avafn.reporting.table").info("[table] audio: seeds [0]")
        logging.getLogger("avafn.registry").warning("avafn: warning: %s", "plug-in left out")
        logging.getLogger("avafn.demo").debug("not shown")
        logging.getLogger("elsewhere").info("not ours")
        cap = capsys.readouterr()
        assert cap.out == "[table] audio: seeds [0]\n"
        assert cap.err == "avafn: warning: plug-in left out\n"
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])


def test_prediction_progress_goes_to_stderr_indented_in_a_folder(capsys):
    from avafn.logs import indented

    logger = logging.getLogger("avafn")
    before = list(logger.handlers), logger.level
    try:
        to_console()
        logging.getLogger("avafn.inference.predictor").info("segments: 3 utterances")
        logging.getLogger("avafn.inference.batch").info("[1/2] a.mp4")
        with indented():
            logging.getLogger("avafn.diarize.segment").info("diarization: 2 speakers")
            logging.getLogger("avafn.inference.batch").info("[2/2] b.mp4")
        logging.getLogger("avafn.inference.inputs").info("note: after the folder")
        cap = capsys.readouterr()
        assert cap.err == ("segments: 3 utterances\n  diarization: 2 speakers\n"
                           "note: after the folder\n")
        assert cap.out == "[1/2] a.mp4\n[2/2] b.mp4\n"  # a folder's own lines, as before
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
