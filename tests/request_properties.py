"""What a zero-shot request deserves, independently of the server's code: hypothesis strategies for hostile and
plausible request contents, and the oracle that says which inputs are at fault or what the answer's labels must
be. The unit tests hold the preprocess to it directly (tests/unit/test_request_properties.py); the fuzz tests
hold the served ensemble to it over gRPC and HTTP (tests/integration/test_fuzz.py)."""

from __future__ import annotations

import dataclasses
import unicodedata

from hypothesis import strategies as st
from tokenizers import Tokenizer

from tests.reference import parse_labels
from zsc_server.settings import ScoringSettings


def _utf8(strategy):
    return strategy.map(lambda s: s.encode("utf-8"))


ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)  # control characters and NUL included
NASTY = ["", " ", "\n\t ", "\x00", "\x00\x00a", ",", "，", " , ，", "{}", "{", "}", "a,b", "投诉", "\u200b",
         "\ufeff", "\U0001f600", "e\u0301", "\x1b[31m", "\r\n", "%s%n", "' OR 1=1 --", "<script>"]
FORMAT_TRICKS = ["{}", "{}", "{0.__class__}", "{}{}", "{x}", "{:>10000000}", "{0}", "{!r}", "{{}}", "{", "}",
                 "{__import__('os').system('true')}", "%s", "{0[0]}", "{}" * 40]

INVALID_UTF8 = st.binary(max_size=40) | st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b"])
TEMPLATE_PARTS = st.sampled_from(FORMAT_TRICKS) | ANY_TEXT


def hostile(utf8_only: bool) -> dict[str, st.SearchStrategy]:
    """Anything goes: empty, blank, huge, limits +-1, thousands of labels; invalid UTF-8 unless utf8_only."""
    raw = st.nothing() if utf8_only else INVALID_UTF8
    label_items = st.one_of(
        _utf8(ANY_TEXT), _utf8(st.sampled_from(NASTY)), raw,
        st.just(b"x" * 70_000),  # alone over max_labels_bytes
        st.just("投诉".encode() * 40),  # a hypothesis longer than max_length
    )
    return {
        "text": st.one_of(
            _utf8(ANY_TEXT), _utf8(st.sampled_from(NASTY)), raw,
            st.sampled_from([65535, 65536, 65537, 1 << 20]).map(lambda n: b"x" * n),  # around max_text_bytes
            st.just("投诉".encode() * 300),  # cut to max_length
        ),
        "labels": st.one_of(
            st.lists(label_items, max_size=8),
            st.lists(st.sampled_from(NASTY) | ANY_TEXT, max_size=12).map(lambda parts: [",".join(parts).encode()]),
            st.sampled_from([63, 64, 65, 3000]).map(lambda n: [f"类型{i}".encode() for i in range(n)]),
            st.sampled_from([65, 5000]).map(lambda n: [",".join(f"l{i}" for i in range(n)).encode()]),
        ),
        "template": st.one_of(
            st.none(), st.just(b""), _utf8(st.lists(TEMPLATE_PARTS, max_size=5).map("".join)), raw,
            st.just(b"{}" * 512),  # 1024 bytes of placeholders: each label 512 times over
            st.just(b"{}" + b"x" * 1100),  # over max_template_bytes
        ),
    }


def plausible() -> dict[str, st.SearchStrategy]:
    """Requests that deserve an answer, mostly, with odd content: control characters, NUL, emoji, combining
    marks, format-string tricks around the one '{}'."""
    some_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
    return {
        "text": _utf8(some_text.filter(str.strip) | st.sampled_from([n for n in NASTY if n.strip()])),
        "labels": st.one_of(
            st.lists(_utf8(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(str.strip)),
                     min_size=1, max_size=8),
            st.lists(some_text, min_size=1, max_size=6).map(lambda parts: ["，".join(parts).encode()]),
        ),
        "template": st.none() | _utf8(st.tuples(TEMPLATE_PARTS, TEMPLATE_PARTS).map("{}".join)),
    }


@dataclasses.dataclass
class Expected:
    faults: set[str]  # inputs at fault: an error must name one of them; empty: an answer is due
    labels: list[str] = dataclasses.field(default_factory=list)
    text: str = ""
    multi_label: bool = False


def _blank(value: str) -> bool:
    """Nothing visible: whitespace and format characters (zero-width spaces, BOM, ...) only; refused."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in value)


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expected_answer(text: bytes, raw_labels: list[bytes], template: bytes | None, multi_label: bool | None,
                    served: ScoringSettings, tokenizer: Tokenizer) -> Expected:
    """What the ensemble owes a request whose tensors are well formed: the inputs at fault, or the answer's
    labels (cleaned, in order) and whether it scores them as multi-label."""
    faults: set[str] = set()
    if len(text) > served.max_text_bytes or not _decodes(text) or _blank(text.decode("utf-8")):
        faults.add("TEXT")
    cleaned: list[str] = []
    if (len(raw_labels) > served.max_labels or sum(map(len, raw_labels)) > served.max_labels_bytes
            or not all(map(_decodes, raw_labels))):
        faults.add("CANDIDATE_LABELS")
    else:
        strings = [raw.decode("utf-8") for raw in raw_labels]
        cleaned = parse_labels(strings[0]) if len(strings) == 1 else strings
        if not cleaned or len(cleaned) > served.max_labels or any(_blank(label) for label in cleaned):
            faults.add("CANDIDATE_LABELS")
    used_template = served.default_template
    if template is not None and template != b"":
        if len(template) > served.max_template_bytes or not _decodes(template) or "{}" not in template.decode("utf-8"):
            faults.add("HYPOTHESIS_TEMPLATE")
        else:
            used_template = template.decode("utf-8")
    if "CANDIDATE_LABELS" not in faults and "HYPOTHESIS_TEMPLATE" not in faults:
        hypotheses = [used_template.replace("{}", label) for label in cleaned]
        size = sum(len(h.encode("utf-8")) for h in hypotheses)
        # [CLS] text [SEP] hypothesis [SEP]: the text is cut first, the hypothesis never
        if size > served.max_labels_bytes + len(cleaned) * served.max_template_bytes or any(
                len(tokenizer.encode(h, add_special_tokens=False).ids) + 3 > served.max_length for h in hypotheses):
            faults.add("HYPOTHESIS_TEMPLATE")
    if faults:
        return Expected(faults)
    return Expected(set(), cleaned, text.decode("utf-8"), bool(multi_label) or len(cleaned) == 1)


PLAUSIBLE, HOSTILE, HOSTILE_UTF8 = plausible(), hostile(utf8_only=False), hostile(utf8_only=True)
MULTI_LABELS = st.none() | st.booleans()


def model_infer_request(model: str = "zero_shot", outputs: dict[str, dict[str, int]] | None = None,
                        raw: bytes = b"") -> bytes:
    """A serialized gRPC ModelInferRequest, as the protobuf library writes it: a TEXT input of `raw` bytes and
    `outputs` ({name: {parameter: int}}), with the request parameters clients send."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, id="r1")
    request.parameters["priority"].uint64_param = 2
    tensor = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    tensor.parameters["binary_data_size"].int64_param = len(raw)
    request.raw_input_contents.append(raw)
    for name, parameters in (outputs or {}).items():
        output = request.outputs.add(name=name)
        for key, value in parameters.items():
            output.parameters[key].int64_param = value
    return request.SerializeToString()

