"""qsight.data."""
