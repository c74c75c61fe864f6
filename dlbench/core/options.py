"""Argument types shared by dlbench's plain (argparse) commands."""

from __future__ import annotations

import argparse


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) as LightningCLI spells booleans, for argparse's ``type=``."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
