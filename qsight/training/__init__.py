"""qsight.training."""
