"""The documentation holds together: every relative link in README.md and docs/*.md leads to a file or folder
of the repository, and a `#fragment` to a heading of the page it names (slugged as GitHub slugs headings);
every `make TARGET` they show is a target of the Makefile; and the test command README shows is the one CI
runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; the text may hold code spans, not brackets
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# `make` as a command: not part of a longer word or path (cmake, $(MAKE), make.py)
MAKE_COMMAND = re.compile(r"(?<![\w./$-])make[ \t]+([^\n#;|&)`]*)")
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.'-]*")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
MAKEFILE_RULE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*(?:[ \t]+[A-Za-z0-9][A-Za-z0-9_.-]*)*)[ \t]*:(?!=)")


def split_code(text: str) -> tuple[str, str]:
    """(prose, code): the lines outside fenced code blocks, and those inside them."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return "\n".join(prose), "\n".join(code)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text lowercased, punctuation other than `-` and `_`
    dropped, each space a hyphen (github-slugger)."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"\*+", "", text)  # emphasis
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on the page; a repeated slug gets -1, -2, … as on GitHub."""
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        heading = HEADING.match(line)
        if not heading:
            continue
        slug = github_slug(heading.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets of the page's prose (a link in a code span or code block is no link)."""
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    return LINK.findall(INLINE_CODE.sub("``", prose))


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: …
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: leads out of the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root)}")
    return problems


def make_targets_named(page: Path) -> set[str]:
    """The targets of every `make …` command the page shows, in code blocks and in code spans."""
    prose, code = split_code(page.read_text(encoding="utf-8"))
    commands = code.splitlines() + [m.group(2) for m in INLINE_CODE.finditer(prose)]
    targets = set()
    for command in commands:
        for arguments in MAKE_COMMAND.findall(command):
            words = [w for w in arguments.split() if not ASSIGNMENT.match(w) and not w.startswith("-")]
            # `make` alone lists the targets; otherwise the first word is the target (in a comment it may
            # be a possessive: "make bench's client")
            name = TARGET_NAME.match(words[0]) if words else None
            if name:
                targets.add(name.group(0).removesuffix("'s"))
    return targets


def makefile_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    targets = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        rule = MAKEFILE_RULE.match(line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(page):
    missing = make_targets_named(page) - makefile_targets()
    assert not missing, f"{page.relative_to(ROOT)} names make targets the Makefile lacks: {sorted(missing)}"


def test_readme_links_every_docs_page():
    readme_links = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme_links]
    assert not unlinked, f"README's map of docs/ lacks {unlinked}"


def test_ci_runs_the_test_command_readme_shows_and_the_compose_smoke():
    _, readme_code = split_code((ROOT / "README.md").read_text(encoding="utf-8"))
    assert re.search(r"^make test\b", readme_code, re.MULTILINE)
    assert "make export && docker compose up -d" in readme_code
    ci_commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in ci_commands
    assert ci_commands[-1] == "make compose-smoke"


def test_slugs_follow_github():
    assert github_slug("GPU host: `make export && docker compose up`") == "gpu-host-make-export--docker-compose-up"
    assert github_slug("Inputs and outputs of `zero_shot`") == "inputs-and-outputs-of-zero_shot"
    assert github_slug("The ensemble's own cost: `make bench-overhead`") == "the-ensembles-own-cost-make-bench-overhead"
    assert github_slug("GPU run (and its rehearsal on a CPU)") == "gpu-run-and-its-rehearsal-on-a-cpu"
    assert github_slug("标签 缓存") == "标签-缓存"


def test_the_checks_find_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A `code` heading\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n"
                    "[fine](docs/other.md#a-code-heading) [second](docs/other.md#twice-1) [self](#page)\n"
                    "[missing file](docs/none.md) [missing heading](docs/other.md#nowhere) [out](../x.md)\n"
                    "`[in a code span](nowhere.md)` [web](https://example.com/nowhere)\n\n"
                    "```\n[in a code block](nowhere.md)\n"
                    "make no-such-target VAR=1  # make lint; `make up` and make down's\n```\n"
                    "Run `make BENCH_DURATION=5 bench` or `make`, never `cmake x`.\n")
    assert broken_links(page, root=tmp_path) == [
        "docs/none.md: no such file", "docs/other.md#nowhere: no heading #nowhere in docs/other.md",
        "../x.md: leads out of the repository"]
    assert make_targets_named(page) == {"no-such-target", "lint", "up", "down", "bench"}
    makefile = tmp_path / "Makefile"
    makefile.write_text("X ?= 1\nY := 2\n.PHONY: a\na b: c ## two\n$(V)/.x: y\n\tmake inner\nc:\n")
    assert makefile_targets(makefile) == {"a", "b", "c"}


def test_make_help_lists_every_documented_target_in_exactly_one_group():
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    documented = set(re.findall(r"^([a-z][a-z-]*):.*## ", text, re.M))
    groups = [set(re.search(rf"^{name} := (.*)$", text, re.M).group(1).split())
              for name in ("HELP_EVERYDAY", "HELP_MEASURE", "HELP_GPU_DEPLOY")]
    listed = [target for group in groups for target in group]
    assert sorted(listed) == sorted(documented), "make help's groups and the documented targets differ"
