"""qsight.evaluation."""
