"""``zsc``: classify texts and check health from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from zsc_client.client import ZeroShotClient
from zsc_client.errors import ZeroShotClientError
from zsc_client.request import DEFAULT_MODEL, DEFAULT_PORTS, ClassificationResult, split_url

BAR_WIDTH = 30


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _port(text: str) -> int:
    if not (text.isdigit() and 0 < int(text) < 65536):
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsc", description="Zero-shot text classification on a Triton server (zero_shot ensemble).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def connection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=None,
                       help="server HOST:PORT (default: localhost:8001 for grpc, localhost:8000 for http)")
        p.add_argument("--protocol", choices=["grpc", "http"], default="grpc", help="default: grpc")
        p.add_argument("--model", default=DEFAULT_MODEL, help="ensemble name (default: %(default)s)")
        p.add_argument("--timeout-s", type=_positive, default=60.0,
                       help="timeout of each call to the server (default: 60)")

    classify = sub.add_parser(
        "classify", help="rank candidate labels for one or more texts",
        description="Rank candidate labels for each TEXT ('-' reads one text per line from stdin). Scores depend "
                    "on the served model's mode: an NLI cross-encoder (StructBERT, Hugging Face NLI models) gives "
                    "entailment probabilities; an embedding model (sentence-transformers, the offline MiniLM demo) "
                    "gives cosine similarities, from -1 to 1.",
        epilog="examples: zsc classify --labels 'delivery,billing,praise' 'My parcel is three days late'  "
               "(the offline MiniLM demo: English)\n"
               "          zsc classify --labels '咨询,投诉,建议' '我的快递三天了还没到'  (StructBERT: Chinese)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection(classify)
    classify.add_argument("--labels", required=True,
                          help="candidate labels separated by ',' or '，' (e.g. 'delivery,billing,praise')")
    classify.add_argument("--template", default=None,
                          help="hypothesis template containing {}, the label's place (default: the served "
                               "model's, as exported: '{}' for StructBERT and sentence-transformers models, "
                               "'This example is {}.' for Hugging Face NLI models)")
    classify.add_argument("--multi-label", action="store_true",
                          help="score each label on its own instead of against each other: NLI models score "
                               "entailment against contradiction per label; embedding models give cosines "
                               "either way")
    classify.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    classify.add_argument("texts", nargs="+", metavar="TEXT")

    health = sub.add_parser("health", help="is the server live and the ensemble ready? (exit 0 if so)")
    connection(health)
    health.add_argument("--json", action="store_true", help="print JSON")

    webui = sub.add_parser(
        "webui", help="serve a web page (and its JSON API) for classifying texts in a browser",
        description="A web page and JSON API (POST /api/classify, GET /api/health; Hugging Face's inference "
                    "API's zero-shot task at POST /api/hf/zero-shot-classification) in front of Triton. "
                    "Needs the webui extra: pip install 'zsc-client[webui]'.",
        epilog="example: zsc webui --triton 127.0.0.1:8001   (then open http://127.0.0.1:7860/)",
    )
    webui.add_argument("--triton", default=None, metavar="HOST:PORT",
                       help="Triton's address (default: localhost:8001 for grpc, localhost:8000 for http)")
    webui.add_argument("--protocol", choices=["grpc", "http"], default="grpc", help="default: grpc")
    webui.add_argument("--model", default=DEFAULT_MODEL, help="ensemble name (default: %(default)s)")
    webui.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s; 0.0.0.0 exposes it to the network)")
    webui.add_argument("--port", type=_port, default=7860, help="port to listen on (default: %(default)s)")
    webui.add_argument("--timeout-s", type=_positive, default=30.0,
                       help="timeout of each request to Triton (default: 30)")
    return parser


def latency_line(result: ClassificationResult) -> str:
    """The client's round trip, and the time inside Triton: never a cached answer's old time as this one's."""
    if result.from_cache:
        return f"round trip {result.latency_ms:.1f} ms (answered from Triton's response cache)"
    inside = "" if result.server_latency_ms is None else f", inside Triton {result.server_latency_ms:.1f} ms"
    return f"round trip {result.latency_ms:.1f} ms{inside}"


def format_result(result: ClassificationResult) -> str:
    width = max(len(label) for label in result.labels) if result.labels else 0
    lines = [f"text: {result.text}"]
    for label, score in zip(result.labels, result.scores):
        bar = "█" * max(0, round(score * BAR_WIDTH))
        lines.append(f"  {label:<{width}}  {score:8.4f}  {bar}")
    lines.append(f"  {latency_line(result)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "webui":
        return _webui(args)
    url = args.url or f"localhost:{DEFAULT_PORTS[args.protocol]}"
    problem = _url_problem(url, args.protocol, "--url")
    texts = getattr(args, "texts", [])
    if texts == ["-"] and not problem:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        problem = "" if texts else "no text on standard input (one text per line)"
    if problem:
        print(f"zsc: error: {problem}", file=sys.stderr)
        return 2
    try:
        with ZeroShotClient(url, args.protocol, args.model, timeout_s=args.timeout_s) as client:
            if args.command == "health":
                return _health(client, args.json)
            results = (
                [client.classify(texts[0], args.labels, args.template, args.multi_label)]
                if len(texts) == 1
                else client.classify_batch(texts, args.labels, args.template, args.multi_label)
            )
    except ZeroShotClientError as exc:
        print(f"zsc: error: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else format_result(result))
    return 0


def _url_problem(url: str, protocol: str, flag: str) -> str:
    """Why the client cannot use `url` ('' if it can): checked before connecting, so it reads as the flag's."""
    try:
        split_url(url, protocol)
    except ValueError as exc:
        return f"{flag} {exc}"
    return ""


def _health(client: ZeroShotClient, as_json: bool) -> int:
    report = client.health()
    healthy = report.get("live") and report.get("ready") and report.get("model_ready")
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        state = "healthy" if healthy else "NOT healthy"
        print(f"{report['url']} ({report['protocol']}): {state} — live={report['live']} "
              f"ready={report['ready']} {report['model']}={report['model_ready']}")
        if "error" in report:
            print(f"  {report['error']}")
    return 0 if healthy else 1


def _webui(args: argparse.Namespace) -> int:
    try:
        from zsc_client.webui.app import serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "aiohttp":
            raise
        print("zsc: error: the WebUI needs aiohttp: pip install 'zsc-client[webui]' (or: pip install aiohttp)",
              file=sys.stderr)
        return 1
    triton = args.triton or f"localhost:{DEFAULT_PORTS[args.protocol]}"
    problem = _url_problem(triton, args.protocol, "--triton")
    if problem:
        print(f"zsc: error: {problem}", file=sys.stderr)
        return 2
    try:
        serve(triton, args.protocol, args.model, args.host, args.port, args.timeout_s)
    except OSError as exc:
        print(f"zsc: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
