"""The export's progress lines: `[export N/5] ...`, one per step as it happens."""

from __future__ import annotations

STEPS = 5


def step(number: int, message: str) -> None:
    print(f"[export {number}/{STEPS}] {message}", flush=True)
