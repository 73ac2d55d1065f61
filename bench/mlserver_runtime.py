"""An MLServer runtime for bench/grpc_load.py: the same weights and the same numpy forward pass
as this service (``training.load_model(...).network().predict``), so the comparison measures
the servers, not the math. Imported by MLServer in its own virtualenv (never by this project;
PYTHONPATH gives it the repo's ``training``)."""

from __future__ import annotations

import numpy as np
from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]

from training import load_model


class DigitsRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        self.net = load_model(self.settings.parameters.uri).network()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        x = x.reshape(len(x), -1).astype(np.float32, copy=False)
        probabilities = self.net.predict(x).astype(np.float32, copy=False)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("probabilities", probabilities),
                NumpyCodec.encode_output("label", probabilities.argmax(axis=1).astype(np.int64)),
            ],
        )
