"""Helpers shared by the Python-backend ``model.py`` files (importable only inside Triton)."""

from __future__ import annotations

import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.scoring import InputError


def optional_input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise InputError(name, "is required")
    return array


def error_response(exc: Exception, logger) -> pb_utils.InferenceResponse:
    """A per-request error: bad input is INVALID_ARG; an error another model answered (a BLS call) keeps
    that model's status (`triton_code`: a full queue stays UNAVAILABLE); anything else INTERNAL (and logged)."""
    if isinstance(exc, InputError):
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
        )
    code = getattr(exc, "triton_code", None)
    if code is not None:
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))
    logger.log_error(f"unexpected error: {traceback.format_exc()}")
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"internal error: {exc}", pb_utils.TritonError.INTERNAL)
    )


def busy_response(message: str) -> pb_utils.InferenceResponse:
    """Refused for load (admission control): UNAVAILABLE, which HTTP answers as 503."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE))


def bytes_tensor(name: str, values: list[str]) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.array([v.encode("utf-8") for v in values], dtype=np.object_))
