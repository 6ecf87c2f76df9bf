"""``python -m qsight`` (and ``torchrun -m qsight``) runs the CLI."""

from qsight.cli import main

main()
