"""The launcher: ``python -m zsc_server.serve`` (``make serve``; compose, the image and Kubernetes run it too).

It runs tritonserver (zsc_server.triton_process) under zsc_server.supervisor, which reloads a model whose
stub died and restarts a tritonserver that died, and puts fronts on the public HTTP and gRPC ports
(zsc_server.http_front, zsc_server.grpc_front): tritonserver's own HTTP and gRPC APIs listen on private
loopback ports behind them, because Triton 2.51 copies (and inflates) any request it is sent, up to 2 GB,
before a model can refuse it, and crashes on some HTTP bodies. Metrics are Triton's own. Ctrl-C or SIGTERM
stops it cleanly: the fronts stop taking requests and finish those in flight, then tritonserver drains.
Where haproxy is installed, an edge proxy (zsc_server.edge) takes the public ports instead and refuses
bursts of overload in C, the fronts behind it on loopback.
However the launcher ends, a reaper process (zsc_server.reaper) ends tritonserver and its stubs and removes
their shared memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zsc_server.admin_api import RESTRICTABLE
from zsc_server.admission import FrontGate
from zsc_server.arguments import cores, positive, tcp_port
from zsc_server.edge import EDGE_MODES, Edge, EdgeError, edge_wanted, find_haproxy
from zsc_server.gpus import describe, visible_gpus
from zsc_server.grpc_front import GrpcFront, GrpcLimits
from zsc_server.http_front import FrontLimits, HttpFront
from zsc_server.supervisor import PROBE_FAILURES, Supervisor
from zsc_server.triton_process import PROJECT_ROOT, TritonServer, client_host, free_ports
from zsc_server.warm_labels import read_warm_labels

LOOPBACK = ("127.0.0.1", "localhost", "::1")
FRONTS = ("on", "http", "off")
# tritonserver and its models run this much below the launcher's CPU priority, so that the fronts, which refuse
# the excess at about 0.3 ms of CPU each, never wait behind the work they shed: on one core at 5x MiniLM's
# capacity, at the same priority refusals waited 1.2-1.6 s (p95) in the gRPC front and the latency took 44-88 s
# to settle; at 10, 4.5 ms and 0 s. The fronts' bound on the requests in flight keeps the niced server from
# being handed more than it answers in the budget (without it a sustained 2x starved it: p95 0.9 s)
# (loadtest/results/overload-trials-20261206-minilm-int8-1-core).
SERVER_NICE = 10
DRAIN_TIMEOUT_S = 10.0  # requests in flight through the front at a stop: finished within this, then cut


def cpu_encoder_warning(repository: Path) -> str | None:
    """A warning when GPUs are visible but the repository's encoder runs on the CPU: what a plain
    `make export` used to write on a GPU host, and what `--gpu none` still writes."""
    config = repository / "encoder" / "config.pbtxt"
    if not config.is_file() or not re.search(r"kind:\s*KIND_CPU", config.read_text(encoding="utf-8")):
        return None
    gpus = visible_gpus()
    if not gpus:
        return None
    try:
        runtime = json.loads((repository / "encoder" / "export.json").read_text(encoding="utf-8"))["runtime"]
    except (OSError, ValueError, KeyError):
        runtime = "unknown runtime"
    return (f"warning: {describe(gpus)} visible, but the encoder in {repository} was exported to run on the "
            f"CPU ({runtime}); `make export` picks the GPU's profile by itself (or GPU=<card>)")


def example_request(repository: Path) -> str:
    """`zsc classify` arguments that suit the exported model: Chinese for StructBERT (ModelScope layout, or a
    Chinese model), English otherwise (the offline MiniLM scores Chinese labels as ties)."""
    try:
        info = json.loads((repository / "encoder" / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if info.get("layout") == "modelscope" or "chinese" in str(info.get("source", "")).lower():
        return "--labels '咨询,投诉,建议' '我的快递还没到'"
    return "--labels 'delivery,billing,praise' 'My parcel is three days late'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsc_server.serve",
        description="Serve a model repository: tritonserver (the nvidia-pytriton wheel's, or $TRITONSERVER with "
        "$TRITON_BACKENDS, as in the container image) in the foreground, restarted when it dies, a model whose "
        "Python-backend stub died reloaded, HTTP through a front that bounds request bodies. Ctrl-C or SIGTERM "
        "stops it cleanly.",
    )
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository",
                        help="the exported model repository to serve (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=tcp_port, default=8000,
                        help="HTTP (KServe v2) port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=tcp_port, default=8001, help="gRPC port (default: %(default)s)")
    parser.add_argument("--metrics-port", type=tcp_port, default=8002,
                        help="Prometheus metrics port (default: %(default)s)")
    parser.add_argument("--ready-timeout-s", type=positive, default=300.0,
                        help="how long the first start may take to be ready (default: %(default)s)")
    parser.add_argument("--probe-interval-s", type=float, default=15.0,
                        help="run a real classification this often (default: 15; 0: never, and no watching "
                             "of the stubs either). A model whose Python-backend stub died (seen in /proc "
                             f"every second, or named by a failed probe) is reloaded, unless --no-revive; "
                             f"{PROBE_FAILURES} failed probes in a row restart tritonserver")
    parser.add_argument("--gpu-metrics", action="store_true",
                        help="let Triton report GPU utilization and memory on its metrics port (nv_gpu_*; "
                             "the container images turn this on; off by default for the CPU-only local runs)")
    parser.add_argument("--cpus", type=cores, default="",
                        help="run tritonserver and its models on these cores only, e.g. 0 or 0-3 (default: all); "
                             "keeps a load generator on the other cores out of the server's way")
    parser.add_argument("--no-revive", dest="revive", action="store_false",
                        help="run Triton with no model-control API at all (--model-control-mode=none), so a "
                             "dead stub is never reloaded: the probe's failures restart tritonserver instead. By "
                             "default the model-repository API is open only to this launcher, through a secret "
                             "made for each start (it is on tritonserver's command line, visible to local users)")
    parser.add_argument("--open-api", action="append", default=[], choices=RESTRICTABLE, metavar="API",
                        help="open one of Triton's restricted APIs to every caller (repeat for more; choices: "
                             f"{', '.join(RESTRICTABLE)}). Restricted by default: shared-memory lets a caller "
                             "read other requests through a stub's memory; open it only where every caller is "
                             "trusted. perf_analyzer reads statistics")
    parser.add_argument("--response-cache", choices=("auto", "on", "off"), default="auto",
                        help="Triton's response cache: identical requests answered from memory. Its answer time "
                             "tells a caller whether anyone sent the same input before, so auto (the default) "
                             "turns it on only when --host is loopback")
    parser.add_argument("--server-nice", type=int, default=SERVER_NICE,
                        help="with the fronts on and admission control on (CPU exports): run tritonserver and its "
                             "models this much below the launcher's "
                             "CPU priority, so that under a burst of overload the fronts, which refuse the excess at "
                             "about 0.3 ms of CPU each, never wait behind the work they shed (measured: "
                             "docs/limits-failures-security.md, Overload); 0: the same priority. Default: "
                             "%(default)s")
    parser.add_argument("--front", choices=FRONTS, default="on",
                        help="on (default): HTTP and gRPC through the launcher's fronts, which refuse requests over "
                             f"{FrontLimits.max_body_bytes} bytes (HTTP bodies; gRPC messages, once inflated: "
                             f"{GrpcLimits.max_message_bytes}), compressed HTTP bodies and JSON nested over "
                             f"{FrontLimits.max_json_depth} deep before tritonserver sees them. http: the HTTP front "
                             "only (the gRPC front costs about 0.6-0.9 ms of CPU per call: 6-18%% of the requests/s "
                             "of a small model on 2 cores; gRPC callers can then make Triton hold up to 2 GB per "
                             "request). off: tritonserver's own ports (Triton 2.51 crashes on some HTTP bodies: for "
                             "measuring Triton alone, or behind a proxy of your own that bounds both protocols)")
    parser.add_argument("--edge", choices=EDGE_MODES, default="auto",
                        help="auto (default): where haproxy is installed and the fronts refuse overload (CPU exports), "
                             "haproxy takes the public ports and refuses bursts of overload in C, for about a third "
                             "of the CPU per refusal the fronts spend; the fronts move behind it to loopback "
                             "(docs/limits-failures-security.md, An edge proxy for bursts). on: the same, or exit "
                             "saying why not. off: the fronts on the public ports")
    parser.add_argument("--warm-labels", type=Path, default=None,
                        help="embedding mode: a JSON list of label sets, e.g. [{\"labels\": \"a,b,c\", \"template\": "
                             "\"This is about {}.\"}], that every preprocess instance encodes into its label cache "
                             "before the launcher reports ready, and again after it reloads the model")
    parser.add_argument("--check-export", action="store_true",
                        help="only check that --repository holds an exported model, then exit (0: it does; 1: it "
                             "does not, naming `make export`): the compose stack runs this before the server")
    return parser


def missing_export(repository: Path) -> str | None:
    """Why `repository` cannot be served as it is, or None."""
    if not (repository / "zero_shot" / "config.pbtxt").is_file():
        return f"{repository} has no exported model: run `make export` first"
    return None


def response_cache_on(args: argparse.Namespace) -> bool:
    return args.response_cache == "on" or (args.response_cache == "auto" and args.host in LOOPBACK)


def server_for(args: argparse.Namespace, gate: FrontGate | None = None) -> TritonServer:
    """A TritonServer as the launcher's parsed command line describes it: its HTTP API (and gRPC, with
    --front on) on free loopback ports when a front stands on the public one. With the fronts' gate
    (front_gate), tritonserver runs --server-nice below them; without one nothing bounds what they hand it."""
    http_private, grpc_private = args.front != "off", args.front == "on"
    private_ports = iter(free_ports(http_private + grpc_private))
    return TritonServer(args.repository, next(private_ports) if http_private else args.http_port,
                        next(private_ports) if grpc_private else args.grpc_port, args.metrics_port, args.host,
                        revivable=args.revive, gpu_metrics=args.gpu_metrics,
                        http_host="127.0.0.1" if http_private else None,
                        grpc_host="127.0.0.1" if grpc_private else None,
                        open_apis=tuple(args.open_api), response_cache=response_cache_on(args),
                        nice=args.server_nice if gate else 0)


def front_gate(args: argparse.Namespace) -> FrontGate | None:
    """The fronts' admission gate, where they refuse overload: they stand on the ports and the export has
    admission control on (from its preprocess config)."""
    return FrontGate.for_repository(args.repository) if args.front != "off" else None


def ports_in_use(host: str, ports: list[int]) -> list[int]:
    """Those of `ports` that something already listens on at `host` (tritonserver would find them taken
    after it started, and the launcher must never report another server's readiness as its own)."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe_socket:
            # as servers bind: a port whose last connections linger in TIME_WAIT is free to listen on
            probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe_socket.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpus:  # inherited by tritonserver and every stub it starts
        os.sched_setaffinity(0, args.cpus)
    try:
        warm_labels = read_warm_labels(args.warm_labels) if args.warm_labels else None
    except ValueError as exc:
        print(f"[serve] --warm-labels: {exc}", file=sys.stderr)
        return 2
    problem = missing_export(args.repository)
    if problem or args.check_export:
        print(f"[serve] {problem or f'{args.repository} holds an exported model'}", file=sys.stderr if problem
              else sys.stdout)
        return 1 if problem else 0
    ports = [port for port in (args.http_port, args.grpc_port, args.metrics_port) if port]
    if len(set(ports)) < len(ports):
        print("[serve] --http-port, --grpc-port and --metrics-port must be three different ports", file=sys.stderr)
        return 2
    try:
        socket.getaddrinfo(args.host, None)
    except socket.gaierror as exc:
        print(f"[serve] --host {args.host}: no such address here ({exc.strerror})", file=sys.stderr)
        return 2
    taken = ports_in_use(args.host, [args.http_port, args.grpc_port, args.metrics_port])
    if taken:
        print(f"[serve] port {', '.join(map(str, taken))} on {args.host} is already in use (another server? "
              "`make serve` uses HTTP_PORT, GRPC_PORT and METRICS_PORT): stop it or choose other ports",
              file=sys.stderr)
        return 1
    warning = cpu_encoder_warning(args.repository)
    if warning:
        print(f"[serve] {warning}", file=sys.stderr, flush=True)
    admission = front_gate(args)
    try:
        with_edge, edge_line = edge_wanted(args.edge, args.front, admission, find_haproxy())
    except EdgeError as exc:
        print(f"[serve] {exc}", file=sys.stderr)
        return 1
    # behind the edge, the fronts listen on loopback ports of their own, bound as they start
    front_host, front_http, front_grpc = ("127.0.0.1", 0, 0) if with_edge else (args.host, args.http_port,
                                                                                  args.grpc_port)
    fronts: dict[str, HttpFront | GrpcFront] = {}
    if args.front != "off":
        fronts["HTTP"] = HttpFront(front_host, front_http, "127.0.0.1", 0)
    if args.front == "on":
        fronts["gRPC"] = GrpcFront(front_host, front_grpc, "127.0.0.1", 0)
    edge: Edge | None = None
    try:
        if with_edge:  # the public ports first, so that no front's port can be one of them
            edge = Edge(find_haproxy(), args.host, args.http_port, args.grpc_port, admission.settings.budget_ms)
        for front in fronts.values():
            front.start()
        if edge:
            edge.in_front_of(fronts["HTTP"].port, fronts["gRPC"].port).start()
    except (OSError, EdgeError) as exc:  # taken since the check above
        for part in [*fronts.values(), *([edge] if edge else [])]:
            part.stop(0)
        print(f"[serve] {exc}", file=sys.stderr)
        return 1
    print(f"[serve] edge: {edge_line}" + (f"; {edge.describe()}" if edge else ""), flush=True)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        print(f"\n[serve] {signal.Signals(signum).name}: stopping ...", flush=True)

    if admission:
        for front in fronts.values():
            front.admission = admission
        if edge:
            edge.follow(admission)

    def on_ready(server: TritonServer, first: bool) -> None:
        if admission:
            admission.follow(server.process.pid)
        if "HTTP" in fronts:
            fronts["HTTP"].upstream_port = server.http_port
        if "gRPC" in fronts:
            fronts["gRPC"].upstream_port = server.grpc_port
        http_url, grpc_url = (f"{client_host(args.host)}:{port}" for port in (args.http_port, args.grpc_port))
        if first:
            print(f"[serve] ready: HTTP http://{http_url}  gRPC {grpc_url}  metrics {server.metrics_url}\n"
                  f"[serve] try: zsc classify --url {grpc_url} {example_request(args.repository)}", flush=True)
        else:
            print(f"[serve] serving again: HTTP http://{http_url}  gRPC {grpc_url}", flush=True)

    def before_stop() -> None:
        nonlocal edge
        # all at once: the edge stops listening and each front finishes its own requests in flight within the bound
        with ThreadPoolExecutor(len(fronts) + 1) as pool:
            edge_stopped = pool.submit(edge.stop, DRAIN_TIMEOUT_S) if edge else None
            reports = list(pool.map(lambda front: front.stop(DRAIN_TIMEOUT_S), fronts.values()))
        if edge_stopped:
            edge_stopped.result()
            edge = None
            print("[serve] edge proxy stopped", flush=True)
        for name, report in zip(fronts, reports):
            print(f"[serve] {name} front stopped: {report.in_flight} requests in flight, {report.cut} cut at "
                  f"{DRAIN_TIMEOUT_S:.0f} s", flush=True)
        fronts.clear()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor = Supervisor(lambda: server_for(args, admission), lambda: stopping, on_ready,
                            warm_labels, args.probe_interval_s, args.ready_timeout_s, before_stop=before_stop)
    try:
        return supervisor.run()
    finally:
        before_stop()


if __name__ == "__main__":
    raise SystemExit(main())
