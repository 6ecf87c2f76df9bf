"""qsight.evaluation: metrics, confusion matrices, confidence tables, sample choice, Grad-CAM."""

from qsight.evaluation.artifact import Artifact, ArtifactKind
from qsight.evaluation.cams import CAM_METHODS, CamMethod
from qsight.evaluation.confidence import confidence_rows
from qsight.evaluation.gradcam import GradCamResult, PointingReport, explain, pointing_game, score_explanations
from qsight.evaluation.layers import MIN_MAP_SIZE, TargetLayer, TargetLayerError, resolve_target_layer
from qsight.evaluation.metrics import compute_metrics, head_metrics, referable_threshold
from qsight.evaluation.pointing import PointingScore, score_pointing
from qsight.evaluation.report import EvalReport, evaluate, write_report
from qsight.evaluation.samples import choose_samples, lesion_samples

__all__ = [
    "CAM_METHODS",
    "MIN_MAP_SIZE",
    "Artifact",
    "ArtifactKind",
    "CamMethod",
    "EvalReport",
    "GradCamResult",
    "PointingReport",
    "PointingScore",
    "TargetLayer",
    "TargetLayerError",
    "choose_samples",
    "compute_metrics",
    "confidence_rows",
    "evaluate",
    "explain",
    "head_metrics",
    "lesion_samples",
    "pointing_game",
    "referable_threshold",
    "resolve_target_layer",
    "score_explanations",
    "score_pointing",
    "write_report",
]
