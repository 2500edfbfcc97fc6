"""The MLflow pyfunc wrapper: how a registered version is stored and loaded.

Weights (a torch state dict) and the segmenter config are artifacts of the logged model,
so any MLflow-compatible loader gets the same network; variable input shapes work because
nothing is traced or exported with fixed shapes.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

from models.segmenter import Segmenter


class SegmenterPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    segmenter: Segmenter

    def load_context(self, context: Any) -> None:
        self.segmenter = Segmenter.from_files(
            context.artifacts["weights"], context.artifacts["config"]
        )

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """model_input: {"hu": array (z, y, x), "spacing_zyx": [dz, dy, dx]} -> probability."""
        hu = np.asarray(model_input["hu"], dtype=np.float32)
        spacing = tuple(float(v) for v in model_input["spacing_zyx"])
        return self.segmenter.probability(hu, spacing)  # type: ignore[arg-type]
