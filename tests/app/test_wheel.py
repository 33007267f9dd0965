"""The product as users get it: Archer's wheel in a fresh virtualenv, run from an empty directory.

Builds the wheel once per session, installs it (with its dependencies, from the package index)
into a new virtualenv outside the checkout, and runs the commands the README gives from an empty
directory with no ``.env`` and no checkout on ``sys.path``: ``--version``, ``demo``, ``db init``
and ``db seed`` on a fresh SQLite file, ``serve`` answering ``/healthz``, and the README's three
processes. On every other Python 3.11–3.13 found on the machine, the same wheel is installed and
``--version`` and ``demo`` run too (the README names the versions this covers).

Slow (a real-time call or two, and pip installs): marked ``wheel``; it runs in ``.ci/run`` with
the rest of the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

import archer
from tests.helpers import free_port

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


@attrs.frozen
class Installed:
    """Archer installed from its wheel into a virtualenv of its own."""

    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **settings: str) -> dict[str, str]:
        """A user's environment: the venv's bin first on PATH, no PYTHONPATH, ``settings``."""
        path = os.pathsep.join([str(self.bin), "/usr/local/bin", "/usr/bin", "/bin"])
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
        return {**keep, "PATH": path, **settings}

    def run(
        self, *args: str, cwd: Path, timeout: float = 60, **settings: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "archer"), *args],
            env=self.env(**settings),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, cwd: Path, **settings: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.bin / "archer"), *args],
            env=self.env(**settings),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def interpreters() -> list[str]:
    """This interpreter, then every other CPython 3.11–3.13 found (each version once).

    Looks on PATH and among pyenv's installed versions (whose shims answer only for the
    versions pyenv has selected).
    """
    found = {sys.version_info[:2]: sys.executable}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in (11, 12, 13):
        name = f"python3.{minor}"
        candidates = [shutil.which(name), *sorted(map(str, pyenv.glob(f"3.{minor}.*/bin/{name}")))]
        for candidate in candidates:
            if (3, minor) in found or candidate is None:
                continue
            probe = subprocess.run(
                [candidate, "-c", "import sys, venv; print(sys.version_info[1])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == str(minor):
                found[(3, minor)] = candidate
    return list(found.values())


#: Never part of a build: local environments, caches, and earlier builds (setuptools would put
#: stale files from an old ``build/`` into the wheel).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Archer's wheel, built by ``pip wheel`` from a clean copy of the checkout."""
    source = tmp_path_factory.mktemp("source") / "archer"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=600,
    )
    [built] = out.glob("archer-*.whl")
    return built


def install(python: str, wheel: Path, where: Path) -> Installed:
    """A fresh virtualenv at ``where`` with the wheel (and its dependencies) installed."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=120)
    subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=900,
    )
    return Installed(venv=where, wheel=wheel)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install(sys.executable, wheel, tmp_path_factory.mktemp("venv") / "archer")


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """An empty working directory: no .env, no config/, no checkout."""
    work = tmp_path / "empty"
    work.mkdir()
    return work


def test_the_wheel_carries_the_licence_and_the_runtime_files(wheel: Path) -> None:
    """LICENSE in the wheel's metadata; the schema, demo bank and hypercorn defaults in the
    package."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    for resource in (
        "archer/db/schema.sql",
        "archer/data/demo_bank.json",
        "archer/data/hypercorn.toml",
        "archer/bank/tools.json",
    ):
        assert resource in names


def test_the_installed_package_is_the_one_that_runs(installed: Installed, empty: Path) -> None:
    """From an empty directory the venv's Archer is imported, not the checkout."""
    result = subprocess.run(
        [str(installed.bin / "python"), "-c", "import archer, sys; print(archer.__file__)"],
        env=installed.env(),
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()).is_relative_to(installed.venv)
    assert str(REPO) not in result.stdout


def test_version(installed: Installed, empty: Path) -> None:
    result = installed.run("--version", cwd=empty)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"archer {archer.__version__}"


def test_demo_from_an_empty_directory(installed: Installed, empty: Path) -> None:
    """``archer demo`` exits 0 and writes what the caller heard, with no .env and no files."""
    result = installed.run("demo", cwd=empty, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    heard = empty / "archer-demo-caller.wav"
    assert heard.stat().st_size > 8000 * 10  # more than ten seconds of 8 kHz μ-law


def test_outbound_demo_from_an_empty_directory(installed: Installed, empty: Path) -> None:
    """``archer demo --outbound`` exits 0 from the wheel: its scripts, clips and bank ship."""
    result = installed.run("demo", "--outbound", cwd=empty, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'collect_pin({}) → {"verified":true}' in result.stdout


def test_db_init_and_seed_on_a_fresh_sqlite_file(installed: Installed, empty: Path) -> None:
    """The schema and the shipped demo bank, from any directory."""
    url = f"sqlite:///{empty / 'fresh.db'}"
    init = installed.run("db", "init", cwd=empty, DATABASE_URL=url)
    assert init.returncode == 0, init.stderr
    seed = installed.run("db", "seed", cwd=empty, DATABASE_URL=url)
    assert seed.returncode == 0, seed.stderr
    with sqlite3.connect(empty / "fresh.db") as db:
        [(customers,)] = db.execute("SELECT count(*) FROM customers").fetchall()
    assert customers == 3


def wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                assert reply.status == 200
                return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"exited {process.returncode}: {process.communicate()[1][-2000:]}")
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.2)


def stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    stop(started)


def test_serve_answers_healthz(
    installed: Installed, empty: Path, servers: list[subprocess.Popen[str]]
) -> None:
    """``archer serve`` with the packaged hypercorn defaults, from an empty directory."""
    port = free_port()
    settings = {
        "WEBHOOK_BASE_URL": "https://archer.bank.test",
        "TWILIO_ACCOUNT_SID": "AC" + "5" * 32,
        "TWILIO_AUTH_TOKEN": "wheel-token",
        "CARTESIA_API_KEY": "wheel-key",
        "CARTESIA_AGENT_ID": "agent_wheel",
    }
    servers.append(
        installed.start("serve", "--host", "127.0.0.1", "--port", str(port), cwd=empty, **settings)
    )
    wait_for(f"http://127.0.0.1:{port}/healthz", servers[0])
    stop(servers)
    assert servers[0].returncode == 0


#: The README's "three processes" recipe, line for line (the test swaps in free ports).
RECIPE_ENV = """\
WEBHOOK_BASE_URL=http://127.0.0.1:8000
TWILIO_ACCOUNT_SID=AC00000000000000000000000000000000
TWILIO_AUTH_TOKEN=local-twilio-token
TWILIO_API_BASE_URL=http://127.0.0.1:8100
CARTESIA_API_KEY=local-cartesia-key
CARTESIA_AGENT_ID=agent_local
CARTESIA_WS_URL=ws://127.0.0.1:9000
"""
RECIPE_COMMANDS = (
    "archer emulate cartesia --port 9000 &",
    "archer serve --port 8000 &",
    "archer emulate call --url http://127.0.0.1:8000 --rest-port 8100 --out heard.wav",
)


def test_the_readme_gives_the_recipe_tested_here() -> None:
    assert RECIPE_ENV in README
    for command in RECIPE_COMMANDS:
        assert command in README


def test_the_readme_three_processes_complete_a_call(
    installed: Installed, empty: Path, servers: list[subprocess.Popen[str]]
) -> None:
    """``emulate cartesia`` + ``serve`` + ``emulate call`` with one .env: a completed call."""
    ports = {"8000": str(free_port()), "9000": str(free_port()), "8100": str(free_port())}

    def localise(text: str) -> str:
        for readme_port, port in ports.items():
            text = (
                text.replace(f":{readme_port}", f":{port}")
                .replace(f"--port {readme_port}", f"--port {port}")
                .replace(f"--rest-port {readme_port}", f"--rest-port {port}")
            )
        return text

    (empty / ".env").write_text(localise(RECIPE_ENV))
    commands = [localise(c).removesuffix(" &").split() for c in RECIPE_COMMANDS]
    servers.append(installed.start(*commands[0][1:], cwd=empty))
    servers.append(installed.start(*commands[1][1:], cwd=empty))
    wait_for(f"http://127.0.0.1:{ports['8000']}/readyz", servers[1])
    # The agent emulator listens once it has printed its address.
    assert servers[0].stdout is not None
    assert "agent_local" in servers[0].stdout.readline()
    call = installed.run(*commands[2][1:], cwd=empty, timeout=180)
    assert call.returncode == 0, call.stdout + call.stderr
    assert "0 invalid messages" in call.stdout
    assert (empty / "heard.wav").stat().st_size > 8000 * 10


OTHER_PYTHONS = interpreters()[1:]


def version_and_demo(python: str, wheel: Path, where: Path) -> list[str]:
    """Install the wheel with ``python`` and run ``--version`` and ``demo``; what went wrong."""
    other = install(python, wheel, where / "venv")
    work = where / "empty"
    work.mkdir()
    problems = []
    version = other.run("--version", cwd=work)
    if version.stdout.strip() != f"archer {archer.__version__}":
        problems.append(f"{python}: --version printed {version.stdout!r} {version.stderr!r}")
    demo = other.run("demo", cwd=work, timeout=240)
    if demo.returncode != 0:
        problems.append(f"{python}: demo exited {demo.returncode}: {demo.stdout + demo.stderr}")
    elif (work / "archer-demo-caller.wav").stat().st_size <= 8000 * 10:
        problems.append(f"{python}: the demo's WAV is too short")
    return problems


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no other Python 3.11–3.13 on this machine")
def test_version_and_demo_on_every_other_python(wheel: Path, tmp_path: Path) -> None:
    """The same wheel on each other supported interpreter found: ``--version`` and ``demo``.

    The interpreters run side by side (a demo is a real-time call, mostly waiting).
    """
    with ThreadPoolExecutor(max_workers=len(OTHER_PYTHONS)) as pool:
        results = pool.map(
            lambda numbered: version_and_demo(numbered[1], wheel, tmp_path / str(numbered[0])),
            enumerate(OTHER_PYTHONS),
        )
        problems = [problem for result in results for problem in result]
    assert not problems, "\n".join(problems)
