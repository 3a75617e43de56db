"""Drive the served ensemble with the `open-inference-grpc` package (its stubs are generated from the Open
Inference Protocol's own proto) and print what the server answered, as JSON, for
tests/integration/test_third_party_clients.py to check.

A separate process: the package registers the protocol's messages (inference.ModelInferRequest, ...) in
protobuf's default pool under their own file name, as tritonclient does, and protobuf refuses the second
registration ("duplicate symbol"), so the two cannot be imported in one process. This module imports
neither tritonclient nor anything of this project.

    python -m tests.open_inference_grpc_calls HOST:PORT CASES_JSON
CASES_JSON: {"answers": {name: {input name: [values]}}, "errors": {name: {input name: [values]}}};
a BOOL input is sent as bool_contents, a BYTES one as bytes_contents (UTF-8); "MULTI_LABEL_INT32" is an
INT32 tensor named MULTI_LABEL, "MULTI_LABEL_INT_CONTENTS" a BOOL one whose values are in int_contents.
"""

from __future__ import annotations

import json
import struct
import sys

import grpc
from open_inference.grpc.protocol import (
    InferTensorContents,
    ModelInferRequest,
    ModelMetadataRequest,
    ModelReadyRequest,
    ServerLiveRequest,
    ServerMetadataRequest,
    ServerReadyRequest,
)
from open_inference.grpc.service import GRPCInferenceServiceStub

MODEL = "zero_shot"


def tensor(name: str, values: list) -> ModelInferRequest.InferInputTensor:
    if name == "MULTI_LABEL":
        datatype, contents = "BOOL", InferTensorContents(bool_contents=values)
    elif name == "MULTI_LABEL_INT32":
        name, datatype, contents = "MULTI_LABEL", "INT32", InferTensorContents(int_contents=values)
    elif name == "MULTI_LABEL_INT_CONTENTS":
        name, datatype, contents = "MULTI_LABEL", "BOOL", InferTensorContents(int_contents=values)
    else:
        datatype, contents = "BYTES", InferTensorContents(bytes_contents=[value.encode() for value in values])
    return ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=[len(values)], contents=contents)


def decode(output, raw: bytes | None) -> list:
    """An output tensor's values: from raw_output_contents (what Triton sends) or from its typed contents."""
    if raw is None:
        contents = output.contents
        return list(contents.bytes_contents and [b.decode() for b in contents.bytes_contents] or
                    contents.fp32_contents)
    if output.datatype == "FP32":
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    values, offset = [], 0  # BYTES: each element is a 4-byte little-endian length, then the bytes
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        values.append(raw[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    return values


def infer(stub: GRPCInferenceServiceStub, inputs: dict) -> dict:
    response = stub.ModelInfer(ModelInferRequest(
        model_name=MODEL, inputs=[tensor(name, values) for name, values in inputs.items()]), timeout=60)
    raws = list(response.raw_output_contents) or [None] * len(response.outputs)
    return {output.name: decode(output, raw) for output, raw in zip(response.outputs, raws)}


def metadata_tensors(tensors) -> list:
    return [[t.name, t.datatype, list(t.shape)] for t in tensors]


def run(url: str, cases: dict) -> dict:
    with grpc.insecure_channel(url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        server = stub.ServerMetadata(ServerMetadataRequest(), timeout=30)
        model = stub.ModelMetadata(ModelMetadataRequest(name=MODEL), timeout=30)
        seen = {
            "live": stub.ServerLive(ServerLiveRequest(), timeout=30).live,
            "ready": stub.ServerReady(ServerReadyRequest(), timeout=30).ready,
            "model_ready": stub.ModelReady(ModelReadyRequest(name=MODEL), timeout=30).ready,
            "server_metadata": {"name": server.name, "version": server.version, "extensions": list(server.extensions)},
            "model_metadata": {"name": model.name, "platform": model.platform, "versions": list(model.versions),
                               "inputs": metadata_tensors(model.inputs), "outputs": metadata_tensors(model.outputs)},
            "answers": {name: infer(stub, inputs) for name, inputs in cases["answers"].items()},
            "errors": {},
        }
        for name, inputs in cases["errors"].items():
            try:
                infer(stub, inputs)
                seen["errors"][name] = None
            except grpc.RpcError as error:
                seen["errors"][name] = {"code": error.code().name, "details": error.details()}
        try:
            stub.ModelMetadata(ModelMetadataRequest(name="no_such_model"), timeout=30)
        except grpc.RpcError as error:
            seen["errors"]["unknown model"] = {"code": error.code().name, "details": error.details()}
    return seen


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], json.loads(sys.argv[2])), ensure_ascii=False))
