"""``avafn`` command line: a thin dispatcher over :mod:`avafn.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from avafn import __version__

#: each module defines ``register(subparsers)`` and sets ``func`` on its parsers
COMMAND_MODULES = [
    "avafn.commands.extract",  # avafn extract text|audio|video
    "avafn.commands.train",  # avafn train / evaluate / table / demo
    "avafn.commands.predict",  # avafn predict
    "avafn.commands.reproduce",  # avafn reproduce
    "avafn.commands.finetune",  # avafn finetune text
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avafn",
        description="Audio-visual emotion recognition in conversation (AVAFN): extract features, "
        "train, evaluate, reproduce the paper's tables, predict on new conversations.",
    )
    parser.add_argument("--version", action="version", version=f"avafn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command group not written yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
