"""The encoder model called from inside the preprocess model (Business Logic Scripting): how the label
cache encodes the hypotheses it lacks. The request joins the encoder's dynamic batcher like the ensemble's
own encoder step, so it batches with other traffic (importable only inside Triton)."""

from __future__ import annotations

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.tokenization import ENCODER_INPUTS, EncodedBatch


class EncoderCallError(RuntimeError):
    """The encoder answered a BLS request with an error; `triton_code` is its status, kept for the caller's
    answer (a full encoder queue stays UNAVAILABLE, a dead stub's message keeps the stub's name)."""

    def __init__(self, message: str, triton_code: int) -> None:
        super().__init__(message)
        self.triton_code = triton_code


class EncoderCall:
    def __init__(self, model_name: str, output_name: str, input_names: tuple[str, ...] = ENCODER_INPUTS) -> None:
        self.model_name, self.output_name, self.input_names = model_name, output_name, input_names

    def __call__(self, encoded: EncodedBatch) -> np.ndarray:
        """The encoder's output rows for `encoded`; raises EncoderCallError."""
        arrays = encoded.as_dict()
        request = pb_utils.InferenceRequest(
            model_name=self.model_name, requested_output_names=[self.output_name],
            inputs=[pb_utils.Tensor(name, arrays[name]) for name in self.input_names])
        response = request.exec()
        if response.has_error():
            error = response.error()
            raise EncoderCallError(f"encoding labels with '{self.model_name}': {error.message()}", error.code())
        return pb_utils.get_output_tensor_by_name(response, self.output_name).as_numpy()

    def wait_until_ready(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Whether the encoder is ready within `timeout_s`: models load side by side, and the preprocess's
        warm-up may run before the encoder has finished loading."""
        deadline = time.monotonic() + timeout_s
        while not pb_utils.is_model_ready(model_name=self.model_name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True
