"""Command-line building blocks shared by the training commands: a one-line-error parser, checked numbers."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

__all__ = ["OneLineParser", "number"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(kind: Callable[[str], float], low: float, high: float = math.inf) -> Callable[[str], float]:
    """An argparse `type` parsing `kind` (int or float) in [low, high]; NaN is refused."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low <= value <= high) or math.isnan(value):
            raise argparse.ArgumentTypeError(f"expected a value in [{low}, {high}], got {text}")
        return value

    return parse
