"""qsight: config-driven hybrid classical + quantum image classifiers for DR grading."""

__version__ = "0.1.0"
