"""qsight.evaluation: metrics, confusion matrices, confidence tables, sample choice, Grad-CAM."""

from qsight.evaluation.artifact import Artifact, ArtifactKind
from qsight.evaluation.confidence import confidence_rows
from qsight.evaluation.gradcam import GradCamResult, explain, pointing_game
from qsight.evaluation.layers import TargetLayer, TargetLayerError, resolve_target_layer
from qsight.evaluation.metrics import compute_metrics, head_metrics, referable_threshold
from qsight.evaluation.report import EvalReport, evaluate, write_report
from qsight.evaluation.samples import choose_samples

__all__ = [
    "Artifact",
    "ArtifactKind",
    "EvalReport",
    "GradCamResult",
    "TargetLayer",
    "TargetLayerError",
    "choose_samples",
    "compute_metrics",
    "confidence_rows",
    "evaluate",
    "explain",
    "head_metrics",
    "pointing_game",
    "referable_threshold",
    "resolve_target_layer",
    "write_report",
]
