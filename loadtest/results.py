"""What every measurement here shares around its run: the command line's common options, the conditions every
report states (what is served, on what hardware), and where it writes: one folder per run under
loadtest/results/, named by kind, date and conditions, holding results.json (what tests and later reports
read) and results.md (the same figures as tables, with the conditions above them)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from loadtest.server import query_gpus
from loadtest.workload import DEFAULT_WORKLOAD, LABEL_MODES

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


def parser(prog: str, about: str, server: str | None = None, label_mode: str = "fresh",
           label_help: str = "") -> argparse.ArgumentParser:
    """The options the programs share: the server measured (`server`: the --grpc-url default, None: no such
    options), the workload and its label mode, where the results go and a note for them."""
    made = argparse.ArgumentParser(prog=f"python -m loadtest.{prog}", description=about,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    if server is not None:
        made.add_argument("--grpc-url", default=server, help="Triton's gRPC host:port" + (
            f" (default: {server})" if server else ": measure a running server instead of starting one"))
        made.add_argument("--http-url", default="", help="its HTTP host:port, for configs and health (default: the "
                          "gRPC host, port 8000)")
        made.add_argument("--metrics-url", default="", help="its Prometheus endpoint, host:port or URL (default: "
                          "the HTTP host, port 8002; 'none' to skip)")
    made.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    made.add_argument("--label-mode", choices=LABEL_MODES, default=label_mode, help=label_help)
    made.add_argument("--out", type=Path, default=RESULTS, help="results parent (default: %(default)s)")
    made.add_argument("--note", default="", help="one line stored with the results (e.g. 'random weights')")
    return made


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


def served_meta(facts: dict[str, str], /, **more) -> dict:
    """The conditions every report starts with: when, on what, and what is served (an export's facts, as
    loadtest.server.Target.export_info reads them), then `more`."""
    return {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hardware": hardware(),
            "model": facts.get("source", "unknown"), "runtime": facts.get("runtime", "unknown"),
            "precision": facts.get("precision", "unknown"), "max_length": facts.get("max_length"), **more}


def served_line(meta: dict) -> str:
    """served_meta's facts as the start of a report's conditions."""
    return (f"{meta['model']} ({meta.get('note') or 'weights as exported'}), {meta['runtime']}, {meta['precision']}, "
            f"max_length {meta['max_length']}, {meta['hardware']}")


def shown(path: Path) -> str:
    """A path as reports show it: relative to the project where it lies in it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:40] or "unknown"


def new_folder(parent: Path, kind: str, *conditions: str, name: str = "") -> Path:
    """parent/<kind>-<date>-<conditions...> (or parent/<name>), created."""
    folder = Path(parent) / (name or "-".join([kind, datetime.now().strftime("%Y%m%d-%H%M%S"),
                                               *(slug(c) for c in conditions if c)]))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def write(folder: Path, data: dict, markdown: str, stem: str = "results", echo: bool = True) -> Path:
    """folder/<stem>.json and folder/<stem>.md; the Markdown printed too (echo)."""
    write_json(folder / f"{stem}.json", data)
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
