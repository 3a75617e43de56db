"""Stand-ins for what a test machine lacks, each saying what it replaces: here, a GPU's nvidia-smi."""

from __future__ import annotations

import stat
from pathlib import Path


def fake_nvidia_smi(folder: Path, stdout: str, exit_code: int = 0) -> Path:
    """A `nvidia-smi` that prints `stdout` and exits with `exit_code`, in `folder` (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder
