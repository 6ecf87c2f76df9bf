"""qsight.sinks."""
