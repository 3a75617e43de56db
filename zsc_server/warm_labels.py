"""Label sets to pre-encode into the label cache when the server starts (`--warm-labels FILE`, a launcher
flag), so that the first request of the day is answered from the cache like the rest.

The file is JSON: a list of label sets, each with its labels (a list, or one string split on , and ，
as in a request) and optionally the template its requests use (default: the export's):

    [{"labels": "咨询,投诉,建议", "template": "这是一条{}"},
     {"labels": ["bug report", "billing question", "praise"]}]

The launcher checks the file's form before it starts Triton and sends it to every preprocess instance
(zsc_server.warm_up); each instance checks every set as it checks a request (limits, template) and
encodes what its cache lacks (`warm_cache`). The launcher imports this module: standard library and
numpy only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from zsc_server import tensor_names as names
from zsc_server.scoring import InputError

WARM_UP_TEXT = b"warm-up"  # the text of the requests the label sets are checked as (never encoded)

# A warm-up request is sent to the preprocess model, which any client can reach: bounded like requests are
MAX_WARM_LABELS_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class WarmLabelSet:
    labels: tuple[str, ...]
    template: str | None = None  # None: the export's default template

    def as_request(self) -> tuple[list[bytes], bytes | None]:
        """(labels, template) as the preprocess receives a request's CANDIDATE_LABELS and HYPOTHESIS_TEMPLATE."""
        return ([label.encode("utf-8") for label in self.labels],
                None if self.template is None else self.template.encode("utf-8"))


def parse_warm_labels(text: str | bytes) -> list[WarmLabelSet]:
    """The label sets of a warm-labels file's content; ValueError naming the entry and key at fault."""
    if len(text) > MAX_WARM_LABELS_BYTES:
        raise ValueError(f"warm labels: {len(text)} bytes; the limit is {MAX_WARM_LABELS_BYTES} bytes")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"warm labels: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ValueError("warm labels: must be a non-empty JSON list of label sets")
    sets = []
    for index, entry in enumerate(data):
        where = f"warm labels entry {index}"
        if not isinstance(entry, dict) or "labels" not in entry:
            raise ValueError(f"{where}: must be an object with 'labels' (and optionally 'template')")
        unknown = set(entry) - {"labels", "template"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (only 'labels' and 'template')")
        labels, template = entry["labels"], entry.get("template")
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{where}: 'labels' must be a string or a non-empty list of strings")
        if template is not None and not isinstance(template, str):
            raise ValueError(f"{where}: 'template' must be a string")
        sets.append(WarmLabelSet(tuple(labels), template))
    return sets


def read_warm_labels(path: str | Path) -> str:
    """The file's text, checked (parse_warm_labels); ValueError saying what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"warm labels: cannot read {path}: {exc}") from None
    parse_warm_labels(text)
    return text


def warm_cache(text: bytes, prepare: Callable, cache, embed: Callable[[list[str]], object]) -> dict:
    """Encode the hypotheses of the warm-labels file content `text` into `cache` (a LabelCache) through
    `embed` (what a request's hypotheses go through), each set checked by `prepare` (Preprocessor.prepare)
    as a request with its labels and template would be. A set that would be refused is reported under
    "errors" and skipped; the report says what was done. Raises InputError (field `warm_up`) for a file
    that is not a list of label sets."""
    try:
        sets = parse_warm_labels(text)
    except ValueError as exc:
        raise InputError(names.WARM_UP, str(exc)) from None
    misses, errors, hypotheses = cache.counters.misses, [], 0
    for index, warm in enumerate(sets):
        labels, template = warm.as_request()
        try:
            prepared = prepare(WARM_UP_TEXT, labels, template)
        except InputError as exc:
            errors.append(f"warm labels entry {index}: {exc}")
            continue
        embed(prepared.hypotheses)
        hypotheses += len(prepared.hypotheses)
    return {"label_sets": len(sets), "hypotheses": hypotheses, "encoded": cache.counters.misses - misses,
            "entries": len(cache), "bytes": cache.bytes_held, "errors": errors}
