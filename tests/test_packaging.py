"""The distributions: what the sdist and the wheel hold, and what the import exposes.

The sdist and the wheel are built once per run (``python -m build --no-isolation``:
no network, the installed setuptools); without the ``build`` package the tests skip on a
developer's machine and fail in CI (``CI=true``), where the dev extra installs it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Everything the sdist must carry for its own test suite to run from it.
SDIST_DIRECTORIES = ("docs", "examples", "tests", "tools", "fuzz", "bench")
SDIST_FILES = ("LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", "tests/conftest.py")


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        return
    message = f"the {module!r} package is missing: pip install -e '.[dev]'"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI must run the packaging tests)")
    pytest.skip(message)


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path

    def sdist_names(self) -> list[str]:
        """The sdist's members, without the leading ``smtpbee-VERSION/``."""
        with tarfile.open(self.sdist) as archive:
            names = archive.getnames()
        top = {name.split("/", 1)[0] for name in names}
        assert len(top) == 1, top
        return [name.split("/", 1)[1] for name in names if "/" in name]

    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.namelist()

    def sdist_metadata(self) -> Message:
        with tarfile.open(self.sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.count("/") == 1
                          and m.name.endswith("/PKG-INFO"))  # fmt: skip
            stream = archive.extractfile(member)
            assert stream is not None
            return HeaderParser().parsestr(stream.read().decode("utf-8"))

    def wheel_metadata(self) -> Message:
        with zipfile.ZipFile(self.wheel) as archive:
            [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            return HeaderParser().parsestr(archive.read(name).decode("utf-8"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """The sdist, and the wheel built from it, as ``python -m build`` makes them."""
    _require("build")
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [sdist] = out.glob("smtpbee-*.tar.gz")
    [wheel] = out.glob("smtpbee-*.whl")
    return Distributions(sdist, wheel)


def test_the_sdist_carries_what_its_tests_need(dists: Distributions) -> None:
    names = set(dists.sdist_names())
    for directory in SDIST_DIRECTORIES:
        assert any(name.startswith(f"{directory}/") for name in names), directory
    for name in SDIST_FILES:
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert not [n for n in names if n.startswith(("fuzz/.work/", "fuzz/crash-"))]


def test_the_sdist_has_every_tracked_file_of_those_directories(dists: Distributions) -> None:
    # From a git checkout only (an unpacked sdist has no history to compare with).
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "-C", str(ROOT), "ls-files", "--", *SDIST_DIRECTORIES, "LICENSE"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    names = set(dists.sdist_names())
    missing = [name for name in listed if name not in names and (ROOT / name).exists()]
    assert missing == []


def test_the_wheel_is_the_packages_typed_and_nothing_else(dists: Distributions) -> None:
    names = dists.wheel_names()
    assert "smtpbee/py.typed" in names
    for module in ("smtpbee/__init__.py", "smtpbee/transports/sync.py", "smtpbee/cli/__init__.py"):
        assert module in names
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"smtpbee", "smtpbee-0.1.0.dist-info"}, tops
    base = [name.rsplit("/", 1)[-1] for name in names]
    assert not [n for n in names if "tests/" in n]
    assert not [n for n in base if n.startswith("test_") or n == "conftest.py"]
    assert not [n for n in names if "__pycache__" in n]
    assert "smtpbee-0.1.0.dist-info/licenses/LICENSE" in names


@pytest.mark.parametrize("which", ["sdist", "wheel"])
def test_the_metadata(dists: Distributions, which: str) -> None:
    meta = dists.sdist_metadata() if which == "sdist" else dists.wheel_metadata()
    assert meta["Name"] == "smtpbee"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    for expected in (
        "Development Status :: 4 - Beta",
        "Framework :: AsyncIO",
        "Framework :: Trio",
        "Intended Audience :: Developers",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Communications :: Email",
        "Typing :: Typed",
    ):
        assert expected in classifiers
    # A license expression replaces the License classifiers (PEP 639).
    assert not [c for c in classifiers if c.startswith("License ::")]
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith("https://github.com/smtpbee/smtpbee") for url in urls.values())
    assert meta["Description-Content-Type"] == "text/markdown"


def test_twine_accepts_both(dists: Distributions) -> None:
    _require("twine")
    run = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists.sdist), str(dists.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- what `import smtpbee` costs: the rarely used parts are imported on first use --------

# Not imported by `import smtpbee` (the Connection needs none of them).
LAZY_MODULES = ("smtpbee._auth", "smtpbee._scram", "smtpbee._procedures", "smtpbee._transaction")
HEAVY_STDLIB = ("hashlib", "hmac", "secrets", "unicodedata", "stringprep", "json")


def _fresh(code: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_import_smtpbee_leaves_auth_scram_and_the_procedures_for_later() -> None:
    modules = (*LAZY_MODULES, *HEAVY_STDLIB)
    out = _fresh(
        "import sys; before = set(sys.modules); import smtpbee;"
        f" print(sorted(m for m in {modules!r} if m in sys.modules and m not in before))"
    )
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_lazy_ones_on_first_use() -> None:
    out = _fresh(
        "import sys, smtpbee\n"
        "assert 'smtpbee._scram' not in sys.modules\n"
        "from smtpbee import ScramSHA256, ClientSession, MECHANISMS\n"
        "assert 'smtpbee._scram' in sys.modules\n"
        "assert MECHANISMS['SCRAM-SHA-256'] is ScramSHA256\n"
        "assert ClientSession.__module__ == 'smtpbee._procedures'\n"
        "missing = [n for n in smtpbee.__all__ if getattr(smtpbee, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(smtpbee.__all__) <= set(dir(smtpbee))\n"
        "ns = {}\n"
        "exec('from smtpbee import *', ns)\n"
        "assert set(smtpbee.__all__) <= set(ns)\n"
        "try:\n"
        "    smtpbee.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    assert "has no attribute 'NoSuchName'" in out


def test_lazy_names_type_checking_imports_and_all_agree() -> None:
    import smtpbee

    lazy = smtpbee._LAZY
    assert set(lazy) <= set(smtpbee.__all__)
    tree = ast.parse(Path(smtpbee.__file__).read_text(encoding="utf-8"))
    checked: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    checked[alias.asname or alias.name] = "." * statement.level + (
                        statement.module or ""
                    )
    assert checked == lazy
    # Each lazy name really lives where the table says.
    for name, module in lazy.items():
        assert getattr(importlib.import_module(module, "smtpbee"), name) is getattr(smtpbee, name)


def test_dir_lists_the_lazy_names_too() -> None:
    import smtpbee

    listed = dir(smtpbee)
    assert {"ScramSHA256", "ClientSession", "MECHANISMS", "Connection"} <= set(listed)
    assert set(smtpbee.__all__) <= set(listed)
