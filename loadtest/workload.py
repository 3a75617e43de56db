"""The request mix every load test and benchmark sends: texts and label sets from data/workload.json,
drawn with weights for text length and label count.

Label modes:
  fixed  one label set for every request (what a router with fixed categories sends; caching helps): the
         workload's first set, or with a label mix of one count N (e.g. "5:1") the pool's first N labels
         (past the pool, its labels again, numbered: "256:1" for hundreds of labels)
  sets   the realistic label sets of the workload file, weighted by label count
  fresh  labels drawn from the pool for every request (rarely two alike)

Distinct requests (`distinct=True`): every request's text ends in a tag of whitespace characters that
differs from request to request, so that no two requests are byte-identical and Triton's response
cache cannot answer any of them, whatever the label mode. BERT tokenizers (ours, ModelScope's,
Hugging Face's) drop whitespace, so the tokens, and with them the compute, are exactly the workload's:
every server does the same work as without the tag. This is the only way requests are made distinct here.

Fresh labels (`fresh_label_share`): in that share of the requests (every second one at 0.5) the last label is
replaced by one never sent before (a pool label with a running suffix): what a label cache cannot answer.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from zsc_client.request import CANDIDATE_LABELS, LABELS, MULTI_LABEL, SCORES, TEXT

DEFAULT_WORKLOAD = Path(__file__).resolve().parent / "data" / "workload.json"
LABEL_MODES = ("fixed", "sets", "fresh")
TRITON_INFER = "/v2/models/zero_shot/infer"
# Text-length classes by character count.
TEXT_CLASSES = {"short": (0, 20), "medium": (21, 40), "long": (41, 10**9)}
# The digits of a distinct-request tag: whitespace every BERT tokenizer drops (base 4, 32 digits = a
# random 64-bit number, so that two requests of a run share a tag with probability ~n²/2^65).
TAG_DIGITS = (" ", "\t", "\n", "\r")
TAG_BITS = 64


def whitespace_tag(number: int, bits: int = TAG_BITS) -> str:
    """`number` (< 2**bits) written in TAG_DIGITS, two bits per character, fixed width."""
    return "".join(TAG_DIGITS[(number >> shift) & 3] for shift in range(0, bits, 2))


@dataclasses.dataclass(frozen=True)
class ClassifyRequest:
    text: str
    labels: tuple[str, ...]
    multi_label: bool = False


def parse_mix(spec: str | None, *, keys_are_ints: bool) -> dict:
    """'3:4,5:2,10:1' -> {3: 4.0, 5: 2.0, 10: 1.0}; '' or None -> {} (uniform)."""
    mix: dict = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, weight = part.partition(":")
        if not sep:
            raise ValueError(f"mix entry {part!r} is not KEY:WEIGHT")
        mix[int(key) if keys_are_ints else key.strip()] = float(weight)
    if any(weight < 0 for weight in mix.values()) or (mix and not any(mix.values())):
        raise ValueError(f"mix {spec!r} needs non-negative weights, not all zero")
    return mix


class Workload:
    def __init__(self, texts: list[str], label_sets: list[list[str]], label_pool: list[str]):
        if not texts or not label_sets or not label_pool:
            raise ValueError("a workload needs texts, label_sets and label_pool")
        self.texts, self.label_sets, self.label_pool = texts, label_sets, label_pool

    @classmethod
    def load(cls, path: Path = DEFAULT_WORKLOAD) -> Workload:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["texts"], data["label_sets"], data["label_pool"])

    def sampler(self, label_mode: str = "sets", label_mix: str | None = None, text_mix: str | None = None,
                multi_label_share: float = 0.0, seed: int | None = None, distinct: bool = False,
                fresh_label_share: float = 0.0) -> RequestSampler:
        return RequestSampler(self, label_mode, parse_mix(label_mix, keys_are_ints=True),
                              parse_mix(text_mix, keys_are_ints=False), multi_label_share, random.Random(seed),
                              distinct, fresh_label_share)


class RequestSampler:
    def __init__(self, workload: Workload, label_mode: str, label_mix: dict[int, float],
                 text_mix: dict[str, float], multi_label_share: float, rng: random.Random,
                 distinct: bool = False, fresh_label_share: float = 0.0):
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label mode {label_mode!r} is not one of {', '.join(LABEL_MODES)}")
        unknown = set(text_mix) - set(TEXT_CLASSES)
        if unknown:
            raise ValueError(f"text mix classes {sorted(unknown)} are not among {', '.join(TEXT_CLASSES)}")
        self.workload, self.label_mode, self.rng = workload, label_mode, rng
        self.multi_label_share = multi_label_share
        # Tags come from the OS's entropy, not from `rng`: seeded samplers of different Locust processes
        # (one per user count) replay the same texts and labels, and their tags must still differ.
        self.tags = random.SystemRandom() if distinct else None
        self.label_counts = label_mix or {3: 1.0, 5: 1.0, 10: 1.0}
        if label_mode == "fresh" and max(self.label_counts) > len(workload.label_pool):
            raise ValueError(f"label count {max(self.label_counts)} exceeds the pool of {len(workload.label_pool)}")
        if label_mode == "fixed" and len(label_mix) > 1:
            raise ValueError(f"label mode 'fixed' takes one label count, not the mix {label_mix}")
        self.fixed = fixed_labels(workload, next(iter(label_mix))) if label_mix else tuple(workload.label_sets[0])
        if not 0 <= fresh_label_share <= 1:
            raise ValueError(f"fresh label share {fresh_label_share} is not between 0 and 1")
        self.fresh_label_share, self.drawn = fresh_label_share, 0
        self.run_id = f"{random.SystemRandom().getrandbits(24):06x}"  # fresh labels differ from other runs' too

        weighted = [(text, text_mix.get(text_class(text), 0.0) if text_mix else 1.0) for text in workload.texts]
        self.texts, self.text_weights = [text for text, w in weighted if w], [w for _, w in weighted if w]
        if not self.texts:
            raise ValueError(f"no workload text falls in the text mix {text_mix}")

        self.label_sets = workload.label_sets
        self.set_weights = [label_mix.get(len(s), 0.0) if label_mix else 1.0 for s in self.label_sets]
        if label_mode == "sets" and not any(self.set_weights):
            raise ValueError(f"no label set of the workload has a label count in {sorted(label_mix)}")

    def labels(self) -> tuple[str, ...]:
        if self.label_mode == "fixed":
            return self.fixed
        if self.label_mode == "sets":
            return tuple(self.rng.choices(self.label_sets, self.set_weights)[0])
        [count] = self.rng.choices(list(self.label_counts), list(self.label_counts.values()))
        return tuple(self.rng.sample(self.workload.label_pool, count))

    def next(self) -> ClassifyRequest:
        [text] = self.rng.choices(self.texts, self.text_weights)
        multi_label = self.rng.random() < self.multi_label_share
        labels = self.labels()
        self.drawn += 1
        # exactly `share` of the requests: the n-th gets one where floor(n × share) steps up
        if int(self.drawn * self.fresh_label_share) > int((self.drawn - 1) * self.fresh_label_share):
            labels = (*labels[:-1], f"{labels[-1]}{self.run_id}-{self.drawn}")
        if self.tags is not None:
            text += whitespace_tag(self.tags.getrandbits(TAG_BITS))
        return ClassifyRequest(text, labels, multi_label)

    def mean_labels(self, draws: int = 5000) -> float:
        """Average labels per request, estimated on a copy of the sampler (reports turn requests/s
        into pairs/s with it)."""
        copy = RequestSampler.__new__(RequestSampler)
        copy.__dict__.update(self.__dict__, rng=random.Random(0))
        return sum(len(copy.labels()) for _ in range(draws)) / draws


def fixed_labels(workload: Workload, count: int) -> tuple[str, ...]:
    """The pool's first `count` labels; past the pool, its labels again with a number (hundreds of labels)."""
    pool = workload.label_pool
    return tuple(pool[i % len(pool)] + (f" {i // len(pool)}" if i >= len(pool) else "") for i in range(count))


def text_class(text: str) -> str:
    return next(name for name, (low, high) in TEXT_CLASSES.items() if low <= len(text) <= high)


SCORE_KINDS = ("probabilities", "cosine")  # NLI models / embedding models


def export_facts(config: dict) -> dict[str, str]:
    """The export facts a served ensemble's config (Triton's JSON) carries: its export_* parameters."""
    return {key.removeprefix("export_"): value["string_value"]
            for key, value in config.get("parameters", {}).items() if key.startswith("export_")}


def score_kind_of(served: dict[str, str]) -> str:
    """What the scores of a served export (export_facts) are: cosine similarities in embedding mode, else
    probabilities (answer_problem checks them as such)."""
    return "cosine" if served.get("mode") == "embedding" else "probabilities"


def answer_problem(request: ClassifyRequest, labels: list[str], scores: list[float],
                   score_kind: str = "probabilities") -> str | None:
    """Why an answer cannot be the answer to `request` (None when it can): every label ranked once,
    scores sorted high to low within their range, and for NLI single-label summing to 1 (softmax
    across labels). Under load this catches answers that went to the wrong request or were cut short."""
    if sorted(labels) != sorted(request.labels):
        return f"labels {labels} are not the request's {list(request.labels)}"
    if len(scores) != len(labels):
        return f"{len(scores)} scores for {len(labels)} labels"
    low = 0.0 if score_kind == "probabilities" else -1.0 - 1e-4
    if any(not low <= s <= 1.0 + 1e-4 for s in scores) or any(a < b for a, b in zip(scores, scores[1:])):
        return f"scores {scores} are not {score_kind} sorted high to low"
    if score_kind == "probabilities" and not request.multi_label and len(labels) > 1 and abs(sum(scores) - 1) > 1e-3:
        return f"single-label scores sum to {sum(scores):.4f}, not 1"
    return None


def kserve_body(request: ClassifyRequest) -> dict:
    """The request as KServe v2 JSON for Triton's HTTP endpoint (TRITON_INFER)."""
    return {
        "inputs": [
            {"name": TEXT, "shape": [1], "datatype": "BYTES", "data": [request.text]},
            {"name": CANDIDATE_LABELS, "shape": [len(request.labels)], "datatype": "BYTES",
             "data": list(request.labels)},
            {"name": MULTI_LABEL, "shape": [1], "datatype": "BOOL", "data": [request.multi_label]},
        ],
        "outputs": [{"name": LABELS}, {"name": SCORES}],
    }


def flask_body(request: ClassifyRequest) -> dict:
    """The request as the reference-deployment baselines take it (loadtest/baselines/flask_app.py)."""
    return {"text": request.text, "labels": list(request.labels), "multi_label": request.multi_label}
