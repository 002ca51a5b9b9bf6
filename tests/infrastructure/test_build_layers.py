"""cdk/build_layers.py: what goes into each layer (the library with its C kernel, the locked
dependencies, the models), and the size report against Lambda's limit."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("build_layers", ROOT / "cdk" / "build_layers.py")
build_layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_layers)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    if not (shutil.which("cc") or shutil.which("gcc")):
        unavailable("no C compiler: the library layer's kernel is compiled by build_layers.py")
    return build_layers.build_library(tmp_path_factory.mktemp("layers"))


def test_library_and_models_layers_hold_sources_kernel_and_models_only(library, tmp_path):
    package = library / "python" / "shazzam"
    assert (package / "wiring.py").is_file() and (package / "openapi.json").is_file()
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("*.c"))
    # The one compiled file: the stable-ABI kernel, never a build for this machine's Python.
    assert [p.name for p in package.rglob("*.so")] == ["_l1kernel.abi3.so"]
    models = build_layers.build_models(tmp_path)
    shipped = sorted(p.name for p in (models / "models").iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "layers" / "models").iterdir() if p.suffix in (".json", ".tflite"))


def test_kernel_in_the_layer_needs_no_glibc_newer_than_lambdas(library):
    kernel = library / "python" / "shazzam" / "_l1kernel.abi3.so"
    if not (shutil.which("objdump") or shutil.which("readelf")):
        unavailable("binutils (objdump/readelf) are needed to read the kernel's symbol versions")
    versions = build_layers.glibc_versions(kernel)
    assert all(v <= (2, 34) for v in versions), sorted(versions)  # Amazon Linux 2023, Lambda's python3.12
    dynamic = subprocess.run(["readelf", "-d", str(kernel)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    assert not [n for n in needed if "python" in n], needed  # the stable ABI: no libpython of one version
    assert set(needed) <= {"libc.so.6", "libm.so.6", "libpthread.so.0"}, needed


def test_kernel_in_the_layer_loads_and_uses_simd(library):
    kernel = library / "python" / "shazzam" / "_l1kernel.abi3.so"
    assert build_layers.kernel_loads(kernel, sys.executable) in ("sse2", "avx2")
    python312 = build_layers.find_python312()
    if python312:  # Lambda's Python: one build serves both
        assert build_layers.kernel_loads(kernel, python312) in ("sse2", "avx2")


def test_glibc_versions_are_read_from_the_dynamic_symbols():
    if not shutil.which("objdump") and not shutil.which("readelf"):
        unavailable("binutils (objdump/readelf) are needed to read symbol versions")
    import _ctypes  # a C extension of the standard library, linked against glibc

    versions = build_layers.glibc_versions(Path(_ctypes.__file__))
    assert versions and all(v[0] == 2 for v in versions)


# --- the dependencies' lock ---------------------------------------------------------------------


def test_dependencies_are_the_runtime_ones_without_boto3():
    requirements = build_layers.runtime_requirements()
    assert any(r.startswith("ai-edge-litert") for r in requirements)
    assert not any(r.startswith("boto3") for r in requirements)
    assert not any(r.startswith(("pytest", "moto")) for r in requirements)


def test_lock_covers_the_runtime_dependencies_of_pyproject():
    lock = build_layers.read_lock()
    pins = {canonicalize_name(name): pin for name, pin in lock["pins"].items()}
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "boto3":  # the Lambda runtime's own copy
            assert name not in pins
            continue
        assert name in pins, f"{name} is not in cdk/requirements-lambda.txt: run {build_layers.LOCK_COMMAND}"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} does not satisfy {line}"
    assert lock["digest"] == build_layers.requirements_digest(build_layers.runtime_requirements()), (
        f"the lock predates pyproject.toml's dependencies: run {build_layers.LOCK_COMMAND}"
    )
    assert not {"boto3", "botocore", "s3transfer"} & set(pins)


def test_every_pin_is_exact_and_hashed():
    text = (ROOT / "cdk" / "requirements-lambda.txt").read_text()
    requirement_lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert requirement_lines
    for line in requirement_lines:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.+!-]+ --hash=sha256:[0-9a-f]{64}", line), line
    assert build_layers.LOCK_COMMAND in text  # how to refresh it, in the file itself


def test_dependencies_install_from_the_lock_with_hashes_for_lambdas_platform(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(build_layers.subprocess, "run", lambda command, **kw: commands.append(command))
    build_layers.build_dependencies(tmp_path)
    (command,) = commands
    assert command[command.index("--requirement") + 1] == str(build_layers.LOCK)
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(command)
    assert command[command.index("--python-version") + 1] == "3.12"
    assert command[command.index("--implementation") + 1] == "cp"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms and all(p.endswith("_x86_64") and p.startswith("manylinux") for p in platforms)
    assert not [a for a in command if looks_like_a_requirement(a)]  # nothing unpinned beside the lock


def looks_like_a_requirement(argument: str) -> bool:
    return bool(re.match(r"^[A-Za-z][\w.-]*\s*(>=|<=|==|~=|<|>)", argument))


def test_a_stale_lock_is_refused(tmp_path):
    stale = tmp_path / "requirements-lambda.txt"
    stale.write_text((ROOT / "cdk" / "requirements-lambda.txt").read_text().replace("requirements-digest: ", "requirements-digest: 0"))
    with pytest.raises(SystemExit, match="stale"):
        build_layers.build_dependencies(tmp_path, lock=stale)


def test_report_prints_each_layer_against_the_limit(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 2**20)
    assert build_layers.report({"a": tmp_path / "a"}) == 2**20
    out = capsys.readouterr().out
    assert "layer a" in out and "1.0 MB" in out and "fits" in out
