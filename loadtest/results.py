"""Where every measurement here writes: one folder per run under loadtest/results/, named by kind, date and
conditions, holding results.json (what tests and later reports read) and results.md (the same figures as
tables, with the conditions above them). Also the facts every report states: the hardware."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime
from pathlib import Path

from loadtest.server import query_gpus

RESULTS = Path(__file__).resolve().parent / "results"


def hardware() -> str:
    """'1x NVIDIA H200' where nvidia-smi lists GPUs, else 'CPU <model name> (<n> cores)'."""
    gpus = query_gpus()
    if gpus:
        names = sorted({gpu["name"] for gpu in gpus})
        return f"{len(gpus)}x {', '.join(names)}"
    cpu = platform.processor() or "CPU"
    try:
        models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = models[0].strip() if models else cpu
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:40] or "unknown"


def new_folder(parent: Path, kind: str, *conditions: str, name: str = "") -> Path:
    """parent/<kind>-<date>-<conditions...> (or parent/<name>), created."""
    folder = Path(parent) / (name or "-".join([kind, datetime.now().strftime("%Y%m%d-%H%M%S"),
                                               *(slug(c) for c in conditions if c)]))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(folder: Path, data: dict, markdown: str, stem: str = "results", echo: bool = True) -> Path:
    """folder/<stem>.json and folder/<stem>.md; the Markdown printed too (echo)."""
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n",
                                         encoding="utf-8")
    (folder / f"{stem}.md").write_text(markdown, encoding="utf-8")
    if echo:
        print(markdown)
        print(f"[results] {folder / stem}.md and .json", flush=True)
    return folder


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines; cells as given (format numbers before)."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def number(value, digits: int = 1) -> str:
    """A figure for a table: 'n/a' where there is none."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:,.{digits}f}"


def read(folder: Path, stem: str = "results") -> dict:
    return json.loads((Path(folder) / f"{stem}.json").read_text(encoding="utf-8"))
