"""What `make perf` hands perf_analyzer and reads back from it: `--input-data` JSON made of workload
requests, its CSV (`-f`), and the answers in its profile export (`--profile-export-file`),
checked like every other load test here checks them (loadtest.workload.answer_problem)."""

from __future__ import annotations

import csv
import dataclasses
import struct
from pathlib import Path

from loadtest.workload import ClassifyRequest, answer_problem
from zsc_client.request import CANDIDATE_LABELS, LABELS, MULTI_LABEL, SCORES, TEXT

MODEL = "zero_shot"


def input_data(requests: list[ClassifyRequest]) -> dict:
    """perf_analyzer's --input-data JSON: one stream, one step per request, sent in this order."""
    return {"data": [{
        TEXT: {"content": [request.text], "shape": [1]},
        CANDIDATE_LABELS: {"content": list(request.labels), "shape": [len(request.labels)]},
        MULTI_LABEL: {"content": [request.multi_label], "shape": [1]},
    } for request in requests]}


def read_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's -f CSV: one row per concurrency level, latencies in microseconds."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if (row.get("Concurrency") or "").strip()]
    return [{key: float(value) for key, value in row.items() if key and value not in (None, "")} for row in rows]


def _chain(raw: bytes) -> list[bytes] | None:
    """Triton's BYTES serialization, each element a 4-byte little-endian length then its bytes; None if
    `raw` is not exactly that."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            return None
        [size] = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            return None
        items.append(raw[offset:offset + size])
        offset += size
    return items


def split_bytes_tensor(value: str) -> list[str]:
    """The elements of a BYTES tensor as perf_analyzer 2.51's profile export writes it: the serialized
    tensor without the first element's length prefix (`a` + len(b) + `b` + …), as a JSON string. A
    complete serialization (with the first prefix) is accepted too. ValueError when it is neither."""
    raw = value.encode("utf-8", "surrogateescape")
    items = _chain(raw) if raw else None
    if items is None:  # without the first prefix: the shortest first element after which the rest chains
        first = next((size for size in range(1, len(raw) + 1) if _chain(raw[size:]) is not None), None)
        items = None if first is None else [raw[:first], *_chain(raw[first:])]
    try:
        if items:
            return [item.decode("utf-8") for item in items]
    except UnicodeDecodeError:
        pass
    raise ValueError(f"not a serialized BYTES tensor: {value[:80]!r}")


@dataclasses.dataclass
class AnswerCheck:
    checked: int = 0  # requests of perf_analyzer's measurement windows, each with its answer
    wrong: int = 0  # answers that cannot be the answer to their request
    unanswered: int = 0  # requests without a response in the export
    repeated: int = 0  # requests sent more than once (perf_analyzer ran out of input data)
    labels: int = 0  # labels over all checked requests (pairs the server scored)
    problems: list[str] = dataclasses.field(default_factory=list)  # the first few, for the report

    def note(self, problem: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(problem)


def check_answers(export: dict, score_kind: str = "probabilities") -> AnswerCheck:
    """Every request in a profile export answered, with an answer that fits it."""
    result, sent = AnswerCheck(), set()
    for experiment in export.get("experiments", []):
        for record in experiment.get("requests", []):
            inputs = record.get("request_inputs", {})
            key = (inputs.get(TEXT), inputs.get(CANDIDATE_LABELS), inputs.get(MULTI_LABEL))
            result.repeated += key in sent
            sent.add(key)
            outputs = record.get("response_outputs") or []
            if not outputs:
                result.unanswered += 1
                result.note(f"no response to {inputs.get('TEXT')!r}")
                continue
            result.checked += 1
            try:
                request = ClassifyRequest(inputs[TEXT], tuple(split_bytes_tensor(inputs[CANDIDATE_LABELS])),
                                          bool(inputs.get(MULTI_LABEL, False)))
                labels = split_bytes_tensor(outputs[0][LABELS])
                scores = [float(score) for score in outputs[0][SCORES]]
            except (KeyError, TypeError, ValueError) as exc:
                result.wrong += 1
                result.note(f"unreadable request or answer: {exc}")
                continue
            result.labels += len(request.labels)
            problem = answer_problem(request, labels, scores, score_kind)
            if problem:
                result.wrong += 1
                result.note(f"{request.text!r}: {problem}")
    return result
