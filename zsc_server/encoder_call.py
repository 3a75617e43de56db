"""The encoder model called from inside the preprocess model (Business Logic Scripting): how the label
cache encodes the hypotheses it lacks. The request joins the encoder's dynamic batcher like the ensemble's
own encoder step, so it batches with other traffic (importable only inside Triton)."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.tokenization import ENCODER_INPUTS, EncodedBatch
from zsc_server.triton_errors import queue_refused


class EncoderCallError(RuntimeError):
    """The encoder answered a BLS request with an error; `triton_code` is the status for the caller's answer.
    The Python backend reports every BLS error as INTERNAL (measured, tritonserver 2.51), so a refusal by
    the encoder's queue is turned back into UNAVAILABLE here; a dead stub's message keeps the stub's name,
    which the launcher reads to reload it."""

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
            message = error.message()
            # the encoder's bounded queue refusing: the client should hear "busy, retry" (UNAVAILABLE / HTTP
            # 503), as it does when the ensemble's own encoder step is refused
            code = pb_utils.TritonError.UNAVAILABLE if queue_refused(message) else error.code()
            raise EncoderCallError(f"encoding labels with '{self.model_name}': {message}", code)
        return pb_utils.get_output_tensor_by_name(response, self.output_name).as_numpy()
