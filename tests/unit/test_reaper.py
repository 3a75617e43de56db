"""zsc_server.reaper with stand-in processes (this Python started under the names tritonserver and
triton_python_backend_stub, carrying a fresh prefix) and a stand-in region in /dev/shm: the real reaper
process, real signals. tests/integration/test_orphans.py does the same to real tritonservers."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import settles
from zsc_server.reaper import SHM_DIR, SHM_PREFIX_FLAG, carriers
from zsc_server.triton_process import start_reaper

SLEEP = "import time; time.sleep(60)"
STUCK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"  # as a stub ignores it
# A healthy stub leaves once tritonserver is gone (a zombie counts as gone: the stub cannot reap it)
LEAVES_WITH = """import sys, time
def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while alive(sys.argv[1]):
    time.sleep(0.05)
"""


def stand_in(tmp_path: Path, name: str, code: str, *args: str) -> subprocess.Popen:
    link = tmp_path / name
    if not link.exists():
        link.symlink_to(sys.executable)
    return subprocess.Popen([str(link), "-c", code, *args])


@pytest.fixture
def prefix():
    prefix = f"zsc_{secrets.token_hex(8)}_"
    yield prefix
    for region in SHM_DIR.glob(f"{prefix}*"):
        region.unlink()


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""  # a zombie has none
    except OSError:
        return False


def ended(process: subprocess.Popen, timeout_s: float) -> int | None:
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def test_when_tritonserver_exits_its_stuck_stubs_are_killed_and_its_regions_removed(tmp_path, prefix):
    region = SHM_DIR / f"{prefix}0c5a"
    region.write_bytes(b"stub memory")
    server = stand_in(tmp_path, "tritonserver", SLEEP, SHM_PREFIX_FLAG + prefix)
    healthy = stand_in(tmp_path, "triton_python_backend_stub", LEAVES_WITH, str(server.pid), f"{prefix}aa")
    stuck = stand_in(tmp_path, "triton_python_backend_stub", STUCK, f"{prefix}bb")
    reaper = start_reaper(prefix)
    try:
        settles(lambda: len(carriers(prefix, exclude=reaper.pid)) == 3, timeout_s=10)
        assert set(carriers(prefix, exclude=reaper.pid)) == {server.pid, healthy.pid, stuck.pid}
        reaper.stdin.write(f"server {server.pid}\n".encode())
        reaper.stdin.flush()
        time.sleep(0.5)
        assert reaper.poll() is None and stuck.poll() is None, "the reaper acted before tritonserver exited"
        server.kill()  # a zombie until we wait for it: still an exit for the reaper
        assert ended(reaper, 15) == 0
        report = json.loads(reaper.stdout.read())
    finally:
        for process in (server, healthy, stuck, reaper):
            process.kill()
            process.wait()
    assert report["why"] == "tritonserver exited"
    assert healthy.returncode == 0, "the healthy stub did not leave by itself"
    assert stuck.returncode == -signal.SIGKILL
    assert report["killed"] == {str(stuck.pid): "triton_python_backend_stub"}
    assert report["regions"] == [region.name] and not region.exists()


def test_when_the_owner_is_sigkilled_tritonserver_and_its_stubs_are_killed(tmp_path, prefix):
    """The owner (what runs TritonServer: the launcher, a test session) dies without a word: the reaper,
    in its own session, kills tritonserver, then the stubs that stay, and removes the regions."""
    region = SHM_DIR / f"{prefix}77e1"
    region.write_bytes(b"stub memory")
    server = stand_in(tmp_path, "tritonserver", SLEEP, SHM_PREFIX_FLAG + prefix)
    stuck = stand_in(tmp_path, "triton_python_backend_stub", STUCK, f"{prefix}cc")
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom zsc_server.triton_process import start_reaper\n"
         f"reaper = start_reaper({prefix!r})\nreaper.stdin.write(b'server {server.pid}\\n')\n"
         "reaper.stdin.flush()\nprint(reaper.pid, flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        reaper_pid = int(owner.stdout.readline())
        time.sleep(0.5)
        assert server.poll() is None and stuck.poll() is None
        owner.kill()
        owner.wait()
        assert ended(server, 5) == -signal.SIGKILL
        assert ended(stuck, 5) == -signal.SIGKILL
        settles(lambda: not region.exists() and not running(reaper_pid))
        assert not region.exists()
        assert not running(reaper_pid), "the reaper did not exit once done"
    finally:
        for process in (server, stuck, owner):
            process.kill()
            process.wait()


def test_the_reaper_refuses_a_prefix_that_other_servers_could_share():
    result = subprocess.run([sys.executable, "-m", "zsc_server.reaper", "--prefix", "triton_", "--owner", "1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unique prefix" in result.stderr
