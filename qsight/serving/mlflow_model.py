"""A trained run as an MLflow pyfunc model.

The model's one artifact, ``run``, is a minimal run folder (``spec.toml``, ``summary.json``,
``checkpoints/last.pt``: the model the run ended with); loading it goes through `qsight.serving.loader`
like every other use of a trained run (weights-only checkpoint). Input: normalised images, a float32
array (N, 3, S, S) as `TrainedModel.load_image` makes them. Output: one row per image, ``grade`` (the ensemble's
predicted class index) and ``p_<class>`` probabilities.

MLflow logs it as a model from code: ``pyfunc.py`` (beside this module) is the code file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc.model import PythonModel

ARTIFACT = "run"


class QsightModel(PythonModel):
    """Loads the run folder artifact once; predicts the ensemble's class probabilities."""

    def load_context(self, context: Any) -> None:
        from qsight.serving.loader import load_trained

        self.trained = load_trained(Path(context.artifacts[ARTIFACT]), device="cpu")

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd
        import torch

        from qsight.metric_names import ENSEMBLE

        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        probs = self.trained.probabilities(images)[ENSEMBLE].numpy().astype(np.float64)
        frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in self.trained.class_names])
        frame.insert(0, "grade", probs.argmax(axis=1).astype(np.int64))
        return frame
