"""Sessions: tests, typecheck (mypy --strict), lint (ruff), smoke (a tiny end-to-end run)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

PYTHON = "3.11"


# pytest-xdist on both cores, a whole test file to a worker (its module fixtures made once)
PARALLEL = ["-n", "2", "--dist", "loadfile"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on two workers (extra pytest arguments after --; `-n 0` runs in one process)."""
    session.install("-e", ".[test]")
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) for a in session.posargs)
    session.run("pytest", "-q", "-ra", *([] if chosen else PARALLEL), *session.posargs)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on qsight/ and registry/ (pydantic plugin)."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "qsight", "registry")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff on the whole tree."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """A tiny end-to-end run of experiments/smoke.toml."""
    session.install("-e", ".")
    session.run("qsight", "run", "experiments/smoke.toml", "--set", 'output.root="reports/smoke"')
