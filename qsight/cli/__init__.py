"""The ``qsight`` command line: `app` (typer) and the console-script entry point `main`."""

from __future__ import annotations

from qsight.cli.app import app, main

__all__ = ["app", "main"]
