"""`make demo` (python -m deploy.demo), README's first command: the offline MiniLM exported, served, the
samples classified with the obvious label first, the server stopped."""

from __future__ import annotations

import re
import subprocess
import sys

from deploy.demo import SAMPLES


def test_the_demo_exports_serves_classifies_and_stops(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deploy.demo", "--repository", str(tmp_path / "repository")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for step in ("== 1. export offline-minilm", "== 2. start tritonserver", "== 3. classify (embedding mode",
                 "== 4. server stopped"):
        assert step in out, out
    _, labels, texts = SAMPLES["embedding"]
    # each sample is written to have one obvious label, in the order of the labels
    for text, obvious in zip(texts, labels):
        ranking = out.split(f"text: {text}\n", 1)[1]
        top = re.match(r"\s+(.+?)\s+-?\d+\.\d+", ranking).group(1)
        assert top == obvious, (text, ranking[:200])
    assert re.search(r"\d+ requests in flight together: \d+ ms", out)
    assert (tmp_path / "repository" / "zero_shot" / "config.pbtxt").is_file()
