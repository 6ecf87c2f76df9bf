"""MLflow "model from code" file of a qsight run's MLflow Model (copied into every logged model).

MLflow executes it when the model is loaded; the model itself is `qsight.serving.mlflow_model.QsightModel`.
"""

import mlflow.models

from qsight.serving.mlflow_model import QsightModel

mlflow.models.set_model(QsightModel())
