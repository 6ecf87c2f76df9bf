"""qsight.models."""
