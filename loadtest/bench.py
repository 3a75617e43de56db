"""`make bench`: the full ensemble (tokenization included) under a concurrency sweep, with the raw encoder
ceiling measured in the same run for comparison; or several variants of one export side by side.

  python -m loadtest.bench                                   # serves model_repository/ for the run
  python -m loadtest.bench --grpc-url HOST:8001 --http-url HOST:8000   # a server that already runs
  python -m loadtest.bench --preset overhead                 # the ensemble's own cost (make bench-overhead)
  python -m loadtest.bench --preset label-cache              # label cache off vs on (make bench-label-cache)
  python -m loadtest.bench --preset gliclass                 # GLiClass vs an NLI cross-encoder, 5/20/50 labels
  python -m loadtest.bench --model random:base --variant 'ort:' \
      --variant 'ov-int8:--runtime python-ov --precision int8'     # export variants, served side by side

Each concurrency level runs N asyncio workers, each sending its next request as soon as the previous
answer arrives (closed loop, gRPC, loadtest.driver), drawing texts and label sets from
loadtest/data/workload.json; every answer is checked against the request it answers. Requests are distinct
(a whitespace tag the tokenizers drop), and a server this command starts runs without the response cache:
every figure is compute. Then the encoder model alone is driven with pre-tokenized pairs at the highest
concurrency: the ceiling the ensemble's tokenization and post-processing are measured against. Triton's
per-model counters say where the time goes, /proc the server's CPU time by process.

Variants (--variant NAME:EXPORT-FLAGS, or a preset's): --model is exported once per variant with those
flags, every variant is served at the same time (response cache off) and driven in turn, case by case and
level by level, so that they compare with each other; the table adds each variant's ratios against the first.
Writes results.json + results.md under loadtest/results/bench-.../.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shlex
import sys
import tempfile
from pathlib import Path

from tritonclient.utils import InferenceServerException

from loadtest import results
from loadtest.bench_report import markdown, summarize
from loadtest.driver import CONCURRENCY, STALL_MS, closed_loop, encoder_ceiling, parse_levels
from loadtest.peak import cpu_int8_peak
from loadtest.server import (
    NvidiaSmiSampler,
    RssSampler,
    Target,
    cpu_per_request_ms,
    cpu_snapshot,
    query_gpus,
    serve,
)
from loadtest.server_metrics import label_cache_summary, model_deltas
from loadtest.workload import Workload, score_kind_of
from zsc_client import ZeroShotClientError
from zsc_server.arguments import non_negative, positive


@dataclasses.dataclass(frozen=True)
class Case:
    """The requests of a measurement (loadtest.workload's sampler settings)."""

    name: str = ""
    label_mode: str = "fresh"
    label_mix: str = ""
    fresh_label_share: float = 0.0


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    export_flags: str = ""  # python -m export's flags, on top of the preset's
    concurrency: str = ""  # empty: the run's
    model: str = ""  # empty: the run's --model (or the preset's)


@dataclasses.dataclass(frozen=True)
class Preset:
    about: str
    model: str  # what --model defaults to: a checkpoint, an offline alias, or random:SHAPE
    variants: tuple[Variant, ...]
    cases: tuple[Case, ...] = (Case(),)
    export_flags: str = "--gpu none --max-length 128"
    concurrency: str = ""  # empty: the run's
    ceiling: bool = True


GLICLASS_CASES = tuple(Case(f"{n} labels", "fixed", f"{n}:1") for n in (5, 20, 50))
MANY_LABELS_CASES = tuple(Case(f"{n} labels", "fixed", f"{n}:1") for n in (8, 64, 128, 256))
LABEL_CACHE_CASES = tuple(Case(f"{n} labels, {'half with a fresh label' if share else 'fixed set'}", "fixed",
                               f"{n}:1", share) for n in (5, 10) for share in (0.0, 0.5))
PRESETS = {
    "overhead": Preset(
        "the ensemble's own cost (gRPC, three Python-backend hops, tokenization, scoring, the batcher's queue "
        "delay) where the encoder costs almost nothing: a tiny random StructBERT on the CPU. floor: one request at "
        "a time with the GPU profiles' 500 µs queue delay, beside the encoder model alone fed the same pairs (its "
        "ceiling line); ceiling: the CPU defaults at saturation (requests/s, server CPU per request)",
        "random:tiny", (Variant("floor", "--queue-delay-us 500", "1"), Variant("ceiling", "", "16,32"))),
    "label-cache": Preset(
        "embedding mode's label cache off (--label-cache-mb 0) and on (the export's default budget): fixed sets "
        "of 5 and 10 labels, and the same with half the requests carrying a label never sent before",
        "offline-minilm", (Variant("off", "--label-cache-mb 0"), Variant("on")), LABEL_CACHE_CASES,
        concurrency="8", ceiling=False),
    "many-labels": Preset(
        "hundreds of labels per request on the StructBERT-large shape (FP32, python-ort), one request at a time: "
        "the server's peak RSS and latency by labels per request, the encoder in calls of at most 64 rows (the "
        "default) and in one call per batch (--rows-per-call 0)",
        "random:large", (Variant("calls-of-64"), Variant("one-call", "--rows-per-call 0")), MANY_LABELS_CASES,
        export_flags="--gpu none --max-length 128 --max-labels 256", concurrency="1", ceiling=False),
    "gliclass": Preset(
        "a GLiClass uni-encoder (every label in one sequence beside the text, 25 per encoder row) against an NLI "
        "cross-encoder (one (text, label) pair per label) of the same backbone: the BERT-base shape, random "
        "weights, FP32 python-ort, max_length 256; 5, 20 and 50 labels per request",
        "random:base", (Variant("nli"), Variant("gliclass", model="random-gliclass:base")), GLICLASS_CASES,
        export_flags="--gpu none --runtime python-ort --precision fp32 --max-length 256", concurrency="1,4",
        ceiling=False),
}


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("bench", __doc__, server="", label_help="fresh (default): random label sets; sets / "
                            "fixed: the workload's (requests stay distinct either way; a preset has its own)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported repository to serve (without --grpc-url, --variant, --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="",
                        help="; ".join(f"{name}: {preset.about}" for name, preset in PRESETS.items()))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:EXPORT-FLAGS",
                        help="export --model with these flags, serve and bench it beside the other variants "
                             "(repeat; replaces a preset's variants)")
    parser.add_argument("--model", default="", help="what the variants export: a checkpoint, an offline alias "
                        "(offline-minilm), random:SHAPE (a random StructBERT: tiny, base, large) or "
                        "random-gliclass:SHAPE (a random GLiClass, BERT backbone); default: the preset's")
    parser.add_argument("--served", action="append", default=[], metavar="NAME=REPOSITORY",
                        help="variants already exported: serve these repositories instead of exporting (repeat)")
    parser.add_argument("--concurrency", default="",
                        help=f"comma-separated in-flight request counts (default: the preset's, else {CONCURRENCY})")
    parser.add_argument("--duration-s", type=positive, default=20.0, help="per concurrency level (default: 20)")
    parser.add_argument("--warmup-s", type=non_negative, default=3.0,
                        help="before each level, not measured (default: 3)")
    parser.add_argument("--ceiling-s", type=non_negative, default=10.0, help="raw encoder run (0: skip; default: 10)")
    parser.add_argument("--timeout-s", type=positive, default=60.0, help="per request (default: 60)")
    return parser


def checkpoint_of(model: str, work: Path) -> str:
    """random:SHAPE made into a random StructBERT checkpoint under `work`, random-gliclass:SHAPE into a random
    GLiClass one (BERT backbone); anything else as given."""
    kind, _, shape = model.partition(":")
    if kind not in ("random", "random-gliclass") or not shape:
        return model
    from export.random_checkpoint import write_gliclass, write_modelscope_structbert

    directory = work / results.slug(model)
    write = write_gliclass if kind == "random-gliclass" else write_modelscope_structbert
    return str(directory if directory.is_dir() else write(directory, shape=shape))


def export_variant(model: str, repository: Path, flags: str) -> Path:
    from export.cli import build_parser as export_parser
    from export.cli import options_from
    from export.pipeline import export_model

    print(f"[bench] export {model} {flags} -> {repository}", flush=True)
    return export_model(options_from(export_parser().parse_args(["--model", model, "--repository", str(repository),
                                                                 *shlex.split(flags)])))


def measure_level(target: Target, pid: int | None, level: int, sampler, score_kind: str, args) -> dict:
    """One concurrency level: args.warmup_s unmeasured, then args.duration_s measured with Triton's counters,
    nvidia-smi and (for a local server) the server's CPU time by process around it."""
    asyncio.run(closed_loop(target.grpc_url, level, args.warmup_s, sampler, score_kind, args.timeout_s))
    before, cpu_before = target.counters(), cpu_snapshot(pid)
    with NvidiaSmiSampler() as gpu, RssSampler(pid, 0.25) as rss:
        run = asyncio.run(closed_loop(target.grpc_url, level, args.duration_s, sampler, score_kind, args.timeout_s))
    cpu = cpu_per_request_ms(cpu_before, cpu_snapshot(pid), len(run["latencies_ms"]))
    after = target.counters()
    deltas = model_deltas(before, after)
    row = summarize(level, run, deltas, gpu.summary(), cpu, label_cache_summary(deltas, after), rss.summary())
    print(f"[bench] concurrency {level}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
          f"{row['requests_per_s']:.1f} req/s, {row['pairs_per_s']:.0f} pairs/s, "
          f"{sum(row['errors'].values())} errors, {row['wrong']} wrong", flush=True)
    return row


def start_targets(args, preset: Preset | None, variants: list[Variant], stack: contextlib.ExitStack,
                  ) -> dict[str, Target]:
    """The servers to measure, by variant name ("" for a single server)."""
    if args.grpc_url and (args.served or variants):
        raise ValueError("--grpc-url measures one running server: it does not combine with --served, --variant "
                         "or a preset's variants")
    if args.served:
        return {name: stack.enter_context(serve(Path(path))) for name, path in args.served}
    if variants:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zsc-bench-")))
        model = args.model or (preset.model if preset else "model_repository")
        common = preset.export_flags if preset else ""
        repositories = {v.name: export_variant(checkpoint_of(v.model or model, work), work / v.name,
                                               f"{common} {v.export_flags}") for v in variants}
        return {name: stack.enter_context(serve(path)) for name, path in repositories.items()}
    if args.grpc_url:
        return {"": Target.from_urls(args.grpc_url, args.http_url, args.metrics_url).check_ready()}
    return {"": stack.enter_context(serve(args.repository))}


def split_specs(specs: list[str], separator: str, form: str) -> list[tuple[str, str]]:
    """--variant NAME:EXPORT-FLAGS and --served NAME=REPOSITORY as (name, rest) pairs."""
    pairs = [tuple(part.strip() for part in spec.partition(separator)[::2]) for spec in specs]
    wrong = [spec for spec, (name, _) in zip(specs, pairs) if separator not in spec or not name]
    if wrong:
        raise ValueError(f"{wrong[0]!r} is not {form}")
    return pairs


def run(args) -> tuple[Path, list[dict]]:
    preset = PRESETS[args.preset] if args.preset else None
    variants = [Variant(name, flags) for name, flags in split_specs(args.variant, ":", "NAME:EXPORT-FLAGS (e.g. "
                                                                    "'int8:--precision int8')")]
    variants = variants or list(preset.variants if preset else ())
    args.served = split_specs(args.served, "=", "NAME=REPOSITORY")
    cases = list(preset.cases) if preset else [Case(label_mode=args.label_mode)]
    default_levels = parse_levels(args.concurrency or (preset and preset.concurrency) or CONCURRENCY)
    workload = Workload.load(args.workload)
    with contextlib.ExitStack() as stack:
        targets = start_targets(args, preset, variants, stack)
        by_name = {v.name: v for v in variants}
        levels = {name: parse_levels(by_name[name].concurrency) if not args.concurrency and name in by_name
                  and by_name[name].concurrency else default_levels for name in targets}
        pids = {name: target.server_pid() for name, target in targets.items()}
        served = {name: target.export_info() for name, target in targets.items()}
        score_kind = score_kind_of(next(iter(served.values())))
        rows, mean_labels = [], {}
        for case in cases:
            for name, target in targets.items():
                print(f"[bench] {' / '.join(filter(None, (name, case.name))) or target.grpc_url}", flush=True)
                sampler = workload.sampler(case.label_mode, case.label_mix, distinct=True,
                                           fresh_label_share=case.fresh_label_share)
                mean_labels[case.name] = sampler.mean_labels()
                rows += [measure_level(target, pids[name], level, sampler, score_kind, args)
                         | {"variant": name, "case": case.name} for level in levels[name]]
        sampler = workload.sampler(cases[0].label_mode, cases[0].label_mix, distinct=True)
        ceilings = {}
        if args.ceiling_s > 0 and (preset is None or preset.ceiling):
            typical = min((sampler.next() for _ in range(200)),
                          key=lambda request: abs(len(request.labels) - mean_labels[cases[0].name]))
            for name, target in targets.items():
                try:
                    ceilings[name] = asyncio.run(encoder_ceiling(target.grpc_url, max(levels[name]), args.ceiling_s,
                                                                 typical, args.timeout_s))
                except InferenceServerException as exc:
                    if exc.status() != "StatusCode.PERMISSION_DENIED":
                        raise
                    # a launcher's public port serves the ensemble alone
                    print(f"[bench] raw encoder ceiling skipped ({exc.message()}): bench measures it on a server "
                          "it starts itself, or on tritonserver's own port", flush=True)
                    continue
                print(f"[bench] raw encoder{f' ({name})' if name else ''}: {ceilings[name]['pairs_per_s']:.0f} "
                      f"pairs/s, {ceilings[name]['stalls']} answers ≥ {STALL_MS} ms, {ceilings[name]['refused']} "
                      "refused", flush=True)
    about = dict(args.served) if args.served else {v.name: v.export_flags or "the defaults" for v in variants}
    # what is served, each target's export facts together ("a, b" where the variants differ)
    facts = {key: ", ".join(dict.fromkeys(str(info.get(key, "unknown")) for info in served.values()))
             for key in ("source", "runtime", "precision", "max_length")}
    meta = results.served_meta(facts, workload=Path(args.workload).name, label_mode=args.label_mode,
                               mean_labels=mean_labels, duration_s=args.duration_s, warmup_s=args.warmup_s,
                               note=args.note, preset=args.preset, variants=about, served=served,
                               cpu_int8_peak=None if query_gpus() else cpu_int8_peak())
    folder = results.new_folder(args.out, "bench", args.preset, meta["hardware"], meta["runtime"], meta["precision"])
    results.write(folder, {"meta": meta, "levels": rows, "encoder_ceilings": ceilings}, markdown(meta, rows, ceilings))
    return folder, rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _folder, rows = run(args)
    except (OSError, ValueError, ZeroShotClientError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    return 1 if any(row["wrong"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
