"""GPU memory and speed of the plain-torch encoder per (batch, sequence bucket): what the GPU profiles'
batch limits rest on (export/gpu_profiles.py projects activation memory from the model shape; this
measures it).

  python -m export.gpu_memory --model model_repository/encoder/1/model.pt --out memory

For each precision (--precisions, FP16 by default), layout (--layouts: padded rows, or the same rows as packed
tokens) and shape, on the GPU: the peak memory a forward pass allocates above the weights
(torch.cuda.max_memory_allocated), next to the projection, and the time of one forward pass replayed from a
CUDA graph (the served path; median of --repeats, CUDA events), as pairs/s and tokens/s. Every row is a whole
sequence, so both layouts compute the same tokens: the figures compare their kernels, not padding (the full
ensemble's bench, on real lengths, shows what packing saves). A shape that does not fit is recorded as out of
memory and the sweep goes on; a precision the card cannot run (fp8 without FP8 tensor cores) is skipped,
saying so. On a CPU (--device cpu, the rehearsal) the same loop runs eagerly in FP32 (fp8: FP8 values, FP32
products) and memory is not measured. Writes memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export.gpu_profiles import ModelShape
from zsc_server.batching_policy import DEFAULT_TORCH_LAYOUT, TORCH_LAYOUTS
from zsc_server.cuda_graphs import CapturedForward
from zsc_server.packing import Rows, pack
from zsc_server.torch_encoder import PRECISIONS, load_for_serving
from zsc_server.torch_packed import check_packed_precision

MIB = 2**20


def model_shape(path: Path) -> ModelShape:
    shape = torch.load(path, map_location="cpu", weights_only=True)["shape"]
    return ModelShape(hidden=shape["hidden_size"], layers=shape["num_hidden_layers"],
                      heads=shape["num_attention_heads"], intermediate=shape["intermediate_size"],
                      vocab=shape["vocab_size"])


def random_inputs(batch: int, sequence: int, vocab: int, layout: str) -> list[np.ndarray]:
    """`batch` rows of `sequence` tokens each: padded [batch, sequence] arrays, or the same rows packed."""
    rng = np.random.default_rng(batch * 1000 + sequence)
    ids = rng.integers(5, vocab, (batch, sequence))
    mask = np.ones_like(ids)
    types = np.zeros_like(ids)
    types[:, sequence // 2:] = 1
    return [ids, mask, types] if layout == "padded" else pack(Rows.of([(ids, mask, types)])).arrays()


def timed_ms(run, repeats: int, on_gpu: bool) -> float:
    """Median milliseconds of `run()` over `repeats` calls (CUDA events on the GPU)."""
    times = []
    for _ in range(repeats):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def measure(model, shape: ModelShape, batch: int, sequence: int, device: torch.device, repeats: int,
            layout: str = DEFAULT_TORCH_LAYOUT, precision: str = "fp16") -> dict:
    on_gpu = device.type == "cuda"
    row = {"precision": precision, "layout": layout, "batch": batch, "sequence": sequence,
           "projected_activation_mib": shape.activation_bytes(batch, sequence, 2 if on_gpu else 4) / MIB}
    arrays = random_inputs(batch, sequence, shape.vocab, layout)
    forward = model if layout == "padded" else lambda *packed: model.forward_packed(*packed, sequence)
    inputs = [torch.from_numpy(array).to(device) for array in arrays]
    try:
        with torch.inference_mode():
            if on_gpu:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                forward(*inputs)
                torch.cuda.synchronize(device)
                row["activation_mib"] = (torch.cuda.max_memory_allocated(device) - base) / MIB
                captured = CapturedForward(forward, arrays, device, None)
                captured.graph.replay()
                row["forward_ms"] = timed_ms(captured.graph.replay, repeats, on_gpu)
                del captured
            else:
                forward(*inputs)
                row["forward_ms"] = timed_ms(lambda: forward(*inputs), repeats, on_gpu)
    except torch.OutOfMemoryError:
        row["out_of_memory"] = True
    if on_gpu:
        torch.cuda.empty_cache()  # the next shape starts from the weights alone
    if "forward_ms" in row:
        row["pairs_per_s"] = batch / row["forward_ms"] * 1e3
        row["tokens_per_s"] = batch * sequence / row["forward_ms"] * 1e3
    return row


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Encoder memory and speed per shape ({meta['device_name']})", "",
             f"{meta['model']}: {meta['parameters_m']:.0f} M parameters; weights on the device: "
             + ", ".join(f"{mib:.0f} MiB in {precision}" for precision, mib in meta["weights_mib"].items())
             + f"; {meta['how']}", *(f"Not measured: {line}" for line in meta["not_measured"]), "",
             "| precision | layout | batch | sequence | activation MiB | projected MiB | measured / projected | "
             "forward ms | pairs/s | tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        shape = f"| {row['precision']} | {row['layout']} | {row['batch']} | {row['sequence']} |"
        if row.get("out_of_memory"):
            lines.append(f"{shape} out of memory | {row['projected_activation_mib']:.0f} | | | | |")
            continue
        measured = row.get("activation_mib")
        ratio = f"{measured / row['projected_activation_mib']:.2f}" if measured else "n/a"
        lines.append(f"{shape} {f'{measured:.0f}' if measured else 'n/a'} | "
                     f"{row['projected_activation_mib']:.0f} | {ratio} | {row['forward_ms']:.2f} | "
                     f"{row['pairs_per_s']:.0f} | {row['tokens_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("gpu_memory: CUDA is not available here (use --device cpu for a dry run)")
    shape = model_shape(args.model)
    meta = {
        "model": args.model.name, "parameters_m": shape.parameter_count() / 1e6, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_gpu else "CPU (no memory figures)",
        "weights_mib": {}, "not_measured": [], "torch": torch.__version__,
        "how": ("peak allocation of one eager forward pass above the weights; forward time: CUDA graph replay, "
                f"median of {args.repeats}" if on_gpu else
                f"eager on the CPU (FP32; fp8: FP8 values, FP32 products), median of {args.repeats}"),
    }
    rows = []
    # what runs: the CPU computes FP32, FP8's products emulated in it (so fp16 and fp32 are one run there)
    runs = {(asked if on_gpu else "fp8-emulated" if asked == "fp8" else "fp32"): asked if on_gpu or asked == "fp8"
            else "fp32" for asked in args.precisions}
    for precision, served in runs.items():
        try:
            model = load_for_serving(str(args.model), device, served)
        except ValueError as exc:  # e.g. fp8 on a card without FP8 tensor cores: the other precisions go on
            meta["not_measured"].append(f"{precision}: {exc}")
            print(f"gpu_memory: {precision} not measured: {exc}", flush=True)
            continue
        meta["weights_mib"][precision] = (torch.cuda.memory_allocated(device) / MIB if on_gpu else
                                          sum(t.numel() * t.element_size() for t in [*model.parameters(),
                                                                                     *model.buffers()]) / MIB)
        for layout in args.layouts:
            try:
                if layout == "packed":
                    check_packed_precision(served, on_gpu)
            except ValueError as exc:
                meta["not_measured"].append(f"{precision} {layout}: {exc}")
                continue
            for sequence in args.sequences:
                for batch in args.batches:
                    row = measure(model, shape, batch, sequence, device, args.repeats, layout, precision)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        del model
        if on_gpu:
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "shapes": rows}
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "memory.md").write_text(markdown(meta, rows), encoding="utf-8")
    print(markdown(meta, rows))
    return result


def choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = text.split(",")
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {', '.join(unknown)}: choose from {', '.join(allowed)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.gpu_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a python-torch export's model.pt")
    parser.add_argument("--out", type=Path, required=True, help="folder for memory.json / memory.md")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--precisions", type=lambda text: choices(text, PRECISIONS, "precision"), default=["fp16"],
                        help=f"comma-separated, of {', '.join(PRECISIONS)}, on the GPU (default: fp16; fp8 needs FP8 "
                             "tensor cores, and is skipped, saying so, where the card has none); the CPU runs fp32, "
                             "and fp8 emulated")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128, 256, 512])
    parser.add_argument("--sequences", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128])
    parser.add_argument("--layouts", type=lambda text: choices(text, TORCH_LAYOUTS, "layout"),
                        default=list(TORCH_LAYOUTS),
                        help=f"comma-separated, of {', '.join(TORCH_LAYOUTS)} (default: both)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
