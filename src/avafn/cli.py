"""``avafn`` command line: a thin dispatcher over :mod:`avafn.commands`.

The error policy lives here, once for every command: a user's mistake
(:class:`avafn.errors.UserError`) or a failure of the machine (disk full, permission denied,
missing file) ends with one line ``avafn CMD: error: ...`` on stderr and exit status 1; usage
errors exit with 2 (argparse); ``--debug`` or ``AVAFN_DEBUG=1`` adds the traceback. Anything
else is a bug and prints its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator

from avafn._version import __version__
from avafn.commands import COMMANDS
from avafn.errors import UserError, check_device, describe_environment_error
from avafn.logs import to_console

DEBUG_ENV = "AVAFN_DEBUG"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. With ``argv``, only the module of the command it names is imported
    (``avafn --help`` imports none: the commands are listed from :data:`COMMANDS`); without,
    every command is built in full."""
    parser = argparse.ArgumentParser(
        prog="avafn",
        description="Audio-visual emotion recognition in conversation (AVAFN): extract features, "
        "train, evaluate, reproduce the paper's tables, predict on new conversations.",
    )
    parser.add_argument("--version", action="version", version=f"avafn {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if argv is None:
        modules = dict.fromkeys(m for m, _ in COMMANDS.values())
    else:
        command = _command_word(argv)
        modules = [COMMANDS[command][0]] if command in COMMANDS else []
    for name in modules:
        importlib.import_module(name).register(sub)
    for command, (_, text) in COMMANDS.items():  # listed, built when named
        if command not in sub.choices:
            sub.add_parser(command, help=text)
    _name_commands(parser)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not a top-level option)."""
    for word in argv:
        if word == "--debug":
            continue
        return None if word.startswith("-") else word
    return None


def _name_commands(parser: argparse.ArgumentParser) -> None:
    """Every (sub)parser records its own ``prog`` ("avafn extract text"), for error lines;
    the innermost parser's default wins."""
    parser.set_defaults(_prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in dict.fromkeys(action.choices.values()):
                _name_commands(p)


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_line(exc: BaseException) -> str | None:
    """The one line for a user's mistake or a machine failure; ``None`` for a bug."""
    if isinstance(exc, UserError):
        line = str(exc) or type(exc).__name__
    else:
        line = describe_environment_error(exc)
    return None if line is None else " ".join(x.strip() for x in line.splitlines() if x.strip())


@contextlib.contextmanager
def _library_bars(show: bool) -> Iterator[None]:
    """--no-progress: no bar from the libraries either (transformers' "Loading weights" and
    "Writing model shards", Hugging Face Hub downloads) while the command runs. Nothing is
    imported for it: libraries not loaded yet read the environment variable when they are."""
    if show:
        yield
        return
    key, old = "HF_HUB_DISABLE_PROGRESS_BARS", os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    # restored afterwards: only the libraries loaded before (one loaded during the command
    # keeps the variable's setting, which it read once)
    shown = {"hub": False, "transformers": False}
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub

        shown["hub"] = not hub.are_progress_bars_disabled()
        hub.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        shown["transformers"] = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
        if shown["hub"] and "huggingface_hub" in sys.modules:
            from huggingface_hub import utils as hub

            hub.enable_progress_bars()
        if shown["transformers"] and "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = getattr(args, "_prog", "avafn")
    to_console()  # the library's log lines, as the commands have always shown them
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)  # before reading or allocating anything
        with _library_bars(not getattr(args, "no_progress", False)):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (``avafn ... | head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # the one place where errors become exit statuses
        line = error_line(e)
        if line is None:
            raise  # a bug: its traceback
        if _debug(args):
            traceback.print_exc()
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
