"""Using a trained run: predict new images, re-evaluate it (other data, other samplers), export it
(ONNX, torch.export), and the MLflow Model a run logs.

Importing this package is cheap; the torch-heavy modules load on first use of a name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsight.lazy import lazy_getattr

if TYPE_CHECKING:
    from qsight.serving.evaluate import Evaluation, evaluate_run
    from qsight.serving.export import ExportResult, export_run
    from qsight.serving.inputs import collect_inputs
    from qsight.serving.loader import TrainedModel, load_trained
    from qsight.serving.predict import PredictedImage, predict_images, write_predictions
    from qsight.serving.real_circuit import RealCircuit

_LAZY = {
    "Evaluation": "qsight.serving.evaluate",
    "evaluate_run": "qsight.serving.evaluate",
    "ExportResult": "qsight.serving.export",
    "export_run": "qsight.serving.export",
    "collect_inputs": "qsight.serving.inputs",
    "TrainedModel": "qsight.serving.loader",
    "load_trained": "qsight.serving.loader",
    "PredictedImage": "qsight.serving.predict",
    "predict_images": "qsight.serving.predict",
    "write_predictions": "qsight.serving.predict",
    "RealCircuit": "qsight.serving.real_circuit",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "Evaluation",
    "ExportResult",
    "PredictedImage",
    "RealCircuit",
    "TrainedModel",
    "collect_inputs",
    "evaluate_run",
    "export_run",
    "load_trained",
    "predict_images",
    "write_predictions",
]
