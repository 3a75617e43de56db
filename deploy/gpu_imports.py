"""Can the GPU run import everything it needs? Two steps of deploy/gpu/bench-on-gpu-host.sh, one per interpreter.

On the GPU host the run has two: the model side (export, the memory probe, the GPU tests) runs on the
host's numpy 2, which its transformers needs, and the serving side (the server's models, the launcher,
the benchmark, the load test) on numpy 1.26, which tritonserver's Python-backend stub needs. For its
side (--side), this imports every module the run executes, then lists the installed distributions they
came from with their versions and checks that each one's own requirements are met by what is installed
(pip installs the bundle with --no-deps, so nothing else checks it). With --host-packages and
--bundle-requirements (the rehearsal on a machine without a GPU) it also checks that each distribution is
one the GPU host has or the bundle carries, so a new import of a package the host lacks fails here,
before any GPU time is spent.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_GPU = ROOT / "deploy" / "gpu"
PROJECT_PACKAGES = {"deploy", "export", "loadtest", "zsc_server", "zsc_client", "tests"}
# What the run executes, by the interpreter that runs it. The model side (the host's own numpy 2, which
# transformers needs through scipy): export, the memory probe, and the unit tests `pytest -m gpu` collects.
# The serving side (numpy 1.26, which tritonserver's Python-backend stub needs): the Python-backend
# models' logic (the stubs import these), the launcher, the benchmark, the Locust load test. Locust
# last: it monkey-patches the standard library when imported.
MODEL_MODULES = ("export.cli", "export.random_checkpoint", "zsc_server.torch_encoder", "export.gpu_memory")
SERVING_MODULES = ("zsc_server.preprocess", "zsc_server.postprocess", "zsc_server.batching",
                   "zsc_server.torch_encoder", "zsc_server.serve", "loadtest.bench", "loadtest.run",
                   "loadtest.report", "zsc_client", "locust")
SIDES = ("model", "serving", "all")
TEST_FOLDER = ROOT / "tests" / "unit"
# Distributions a library imports only when they happen to be installed, which the GPU host runs without:
# torch.fx imports pydot when present (here nncf, the python-ov export's quantizer, brings it).
OPTIONAL_IMPORTS = {"pydot"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements-style file, comments dropped."""
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def requirement_names(path: Path) -> set[str]:
    """Distribution names in a requirements-style file (pins, extras and markers dropped)."""
    return {normalize(re.split(r"[\[=<>!~ ;]", line)[0]) for line in requirements(path)}


def run_modules(side: str) -> list[str]:
    """The modules `side` imports, in import order (Locust last)."""
    modules: list[str] = []
    if side in ("model", "all"):
        modules += MODEL_MODULES
        modules += ["tests.conftest"] + [f"tests.unit.{path.stem}" for path in sorted(TEST_FOLDER.glob("test_*.py"))]
    if side in ("serving", "all"):
        modules += SERVING_MODULES
    return list(dict.fromkeys(modules))


def import_modules(modules: list[str]) -> list[str]:
    """Import `modules`; the names that failed, with why."""
    failures = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the check goes on
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    return failures


def numpy_problems(side: str) -> list[str]:
    """The serving side's numpy must be 1.x: with numpy 2 the Python-backend stub corrupts tensors silently."""
    if side != "serving":
        return []
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        return [f"numpy {numpy.__version__} on the serving side: tritonserver's Python-backend stub needs numpy < 2"]
    return []


def imported_distributions() -> dict[str, str]:
    """Distribution name -> version for every third-party top-level module now imported."""
    owners = metadata.packages_distributions()
    found = {}
    for module in list(sys.modules):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in PROJECT_PACKAGES or top.startswith("_"):
            continue
        for dist in owners.get(top, ()):
            try:
                found[normalize(dist)] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return dict(sorted(found.items()))


def requirement_closure(roots: list[str]) -> set[str]:
    """The distributions `roots` (requirement strings, extras included: the bundle asks for
    tritonclient[grpc,http]) need, recursively, as their installed metadata says: what pip resolves."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        key = (normalize(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            dependency = Requirement(text)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra})
                                                for extra in (*requirement.extras, "")):
                todo.append(dependency)
    return {name for name, _extras in seen}


def unmet_requirements(distributions: dict[str, str]) -> list[str]:
    """Requirements of `distributions` (extras aside) that the installed versions do not satisfy."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    problems = []
    for name in distributions:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                installed = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {requirement}: not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(Version(installed), prereleases=True):
                problems.append(f"{name} needs {requirement}: {installed} is installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.gpu_imports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host-packages", type=Path, default=None,
                        help=f"distributions the GPU host has (e.g. {DEPLOY_GPU / 'host-packages.txt'})")
    parser.add_argument("--bundle-requirements", type=Path, default=None,
                        help=f"what the bundle carries (e.g. {DEPLOY_GPU / 'bundle-requirements.txt'})")
    parser.add_argument("--side", choices=SIDES, default="all",
                        help="what to import: the model side (export, memory probe, GPU tests), the serving side "
                             "(Python-backend models, launcher, benchmark, Locust), or both (default)")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]} at {sys.executable}, {args.side} side")
    failures = import_modules(run_modules(args.side))
    distributions = imported_distributions()
    for name, version in distributions.items():
        print(f"  {name}=={version}")
    problems = [f"import {failure}" for failure in failures] + unmet_requirements(distributions)
    problems += numpy_problems(args.side)
    if args.host_packages and args.bundle_requirements:
        # what the host's packages need comes with them (the image is installed whole), whatever
        # version of it this machine happens to have
        host = requirement_names(args.host_packages)
        provided = requirement_closure(sorted(host)) | requirement_closure(requirements(args.bundle_requirements))
        problems += [f"{name}: neither the GPU host ({args.host_packages.name}) nor the bundle "
                     f"({args.bundle_requirements.name}) has it" for name in distributions
                     if name not in provided and name not in OPTIONAL_IMPORTS]
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"{len(distributions)} distributions imported, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
