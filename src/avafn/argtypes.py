"""argparse value types shared by the CLI and the extractors' own options."""

from __future__ import annotations

import argparse


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
