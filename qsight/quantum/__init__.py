"""qsight.quantum."""
