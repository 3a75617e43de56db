"""Nothing of one tritonserver outlives it: not tritonserver itself, its Python-backend stubs or their
shared memory, however it or its launcher ends (SIGTERM, SIGKILL, a crash).

Why it is needed (measured, tests/integration/test_orphans.py):
- A stub (Triton 2.51, python_backend r24.10) checks every 300 ms whether tritonserver is alive and exits
  when it is gone, except when tritonserver dies while the stub waits, holding the GIL, for it to take a
  response (`Stub::ProcessRequests`): the stub's exit path needs the GIL, so it hangs there for good (its
  stack: main thread in `sem_wait`, health thread in `gil_scoped_acquire` in `Stub::~Stub`). Under load,
  a SIGKILLed tritonserver left 1 to 3 of its 4 stubs running in 7 of 14 tries. Stubs ignore SIGTERM.
- The shared-memory region that tritonserver makes for each stub (/dev/shm/<prefix><uuid>) is removed
  when the model unloads, or by a stub that leaves after tritonserver died; a stuck or SIGKILLed stub's
  region stays, and so do those of a model copy that never unloads (one whose stub died), which an exit
  timeout leaves behind.
- tritonserver itself keeps running when the process that started it is SIGKILLed.

So every tritonserver gets its own shared-memory prefix (`--backend-config=python,shm-region-prefix-name`,
random): its command line, its stubs' command lines and its regions' names all carry it. A reaper process
(`python -m zsc_server.reaper`), started before tritonserver in a session of its own (signals to the
launcher's process group miss it), waits for whichever comes first (it looks every 0.1 s): tritonserver
exits, the process that started it exits (however it ends: the reaper then has another parent), or that
process says "stop". Then it SIGKILLs tritonserver if it still runs (its owner went away without stopping
it), gives the stubs a second to leave by themselves, SIGKILLs those that stay, removes
/dev/shm/<prefix>* and admission control's state (/dev/shm/zsc-admission-<tritonserver pid>), prints what
it did as one JSON line and exits. Standard library only: it runs inside
the Triton image as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

from zsc_server.admission import remove_state
from zsc_server.revive import process_state

SHM_DIR = Path("/dev/shm")
# tritonserver's flag that sets the prefix of its stubs' shared-memory regions
SHM_PREFIX_FLAG = "--backend-config=python,shm-region-prefix-name="
SERVER_NAME = "tritonserver"
# A stub looks for tritonserver every 300 ms: one that is still there after this is stuck (see above)
STUB_GRACE_S = 1.0
KILL_PATIENCE_S = 5.0
POLL_S = 0.1  # how often it looks whether tritonserver or the owner has ended


def carriers(prefix: str, exclude: int | None = None) -> dict[int, str]:
    """{pid: name} of the live processes whose command line carries `prefix` (tritonserver, its stubs, and
    the shell that starts each stub for an instant); zombies have no command line and do not count."""
    found = {}
    needle = prefix.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(needle in arg for arg in args):
            found[int(entry.name)] = os.path.basename(args[0].decode(errors="replace"))
    return found


def regions(prefix: str) -> list[Path]:
    return sorted(SHM_DIR.glob(f"{prefix}*"))


def restrict_regions(prefix: str) -> int:
    """Make the server's shared-memory regions readable by their owner alone; how many were changed. A region
    holds the texts of requests in flight, and the Python backend creates it world-readable (Boost sets the
    mode 0644 after creating it, whatever the umask), so the launcher narrows it as soon as it sees it."""
    changed = 0
    for region in regions(prefix):
        try:
            if region.stat().st_mode & 0o077:
                region.chmod(0o600)
                changed += 1
        except OSError:
            continue  # removed meanwhile
    return changed


def kill(processes: dict[int, str], killed: dict[int, str]) -> None:
    for pid, name in processes.items():
        try:
            os.kill(pid, signal.SIGKILL)
            killed[pid] = name
        except ProcessLookupError:
            pass


def reap(prefix: str, exclude: int | None = None, grace_s: float = STUB_GRACE_S) -> dict:
    """SIGKILL tritonserver if it still runs, give its stubs `grace_s` to see it gone and leave by themselves,
    SIGKILL those that stay until none is left, then remove the shared memory.
    Returns {"killed": {pid: name}, "regions": [removed names]}."""
    killed: dict[int, str] = {}
    kill({pid: name for pid, name in carriers(prefix, exclude).items() if name == SERVER_NAME}, killed)
    deadline = time.monotonic() + grace_s
    while carriers(prefix, exclude) and time.monotonic() < deadline:
        time.sleep(0.05)
    deadline = time.monotonic() + KILL_PATIENCE_S
    while (alive := carriers(prefix, exclude)) and time.monotonic() < deadline:
        kill(alive, killed)
        time.sleep(0.05)
    removed = []
    for region in regions(prefix):
        try:
            region.unlink()
            removed.append(region.name)
        except FileNotFoundError:
            pass
    return {"killed": {str(pid): name for pid, name in killed.items()}, "regions": removed}


def ended(pid: int) -> bool:
    """Whether process `pid` has exited: gone, or a zombie that its parent has not reaped yet."""
    state = process_state(pid)
    return state is None or state[0] in ("Z", "X")


def wait_for_end(owner: int, commands: int) -> tuple[str, int | None]:
    """Block until tritonserver exits, the owner exits (this process is then someone else's child: no pid
    can be mistaken for it) or says "stop" (or closes the pipe); returns which, and tritonserver's pid if
    the owner said it. `commands` is the readable end of the owner's pipe: lines "server <pid>", "stop"."""
    poller = select.poll()
    poller.register(commands, select.POLLIN)
    server, pending = None, b""
    while True:
        if os.getppid() != owner:
            return "its owner exited", server
        if server is not None and ended(server):
            return "tritonserver exited", server
        if not poller.poll(POLL_S * 1000):
            continue
        data = os.read(commands, 4096)
        if not data:
            return "its owner closed the pipe", server
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            word, _, value = line.decode().partition(" ")
            if word == "stop":
                return "stopped by its owner", server
            if word == "server":
                server = int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zsc_server.reaper",
        description="Kill what is left of one tritonserver (itself, its Python-backend stubs) and remove its "
        "shared memory once it or its owner exits. Started by zsc_server.serve.TritonServer, not by hand.")
    parser.add_argument("--prefix", required=True, help="the tritonserver's shared-memory prefix")
    parser.add_argument("--owner", type=int, required=True, help="the pid of the process that started this one")
    args = parser.parse_args(argv)
    if len(args.prefix) < 12:
        parser.error("--prefix must be the server's unique prefix, not a common one")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the launcher, which then stops us
    reason, server = wait_for_end(args.owner, sys.stdin.fileno())
    report = {"why": reason, **reap(args.prefix, exclude=os.getpid())}
    if server is not None:
        remove_state(server)  # admission control's state, named after tritonserver's pid
    if reason.startswith("its owner") and (report["killed"] or report["regions"]):
        # nobody else will say it: the owner is gone
        print(f"[reaper] tritonserver's owner exited without stopping it: killed {sorted(report['killed'].values())}, "
              f"removed {len(report['regions'])} shared-memory region(s)", file=sys.stderr, flush=True)
    try:
        print(json.dumps(report), flush=True)
    except BrokenPipeError:  # the owner is gone
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
