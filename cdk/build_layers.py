"""Build the Lambda layers' asset folders (no Docker): the CDK app points Code.from_asset at them.

    python cdk/build_layers.py [--out build/layers] [--skip-deps]
    python cdk/build_layers.py --lock      # refresh cdk/requirements-lambda.txt from pyproject.toml

  shazzam/python/shazzam  the library (layers/shazzam sources) and its C kernel, _l1kernel.abi3.so,
                          compiled here against Python 3.11's stable ABI (so it loads on Lambda's
                          3.12) and checked to need no glibc newer than Amazon Linux 2023's 2.34
  deps/python             the runtime dependencies, installed from the lock cdk/requirements-lambda.txt
                          (exact versions, sha256 hashes) as manylinux x86_64 wheels for CPython 3.12
                          (pip --platform ... --only-binary=:all: --require-hashes, so a laptop on any
                          OS builds what Lambda runs)
  models/models           layers/models' models (the functions read SHAZZAM_MODEL_DIR=/opt/models)

Each layer's unzipped size is printed against Lambda's 250 MB limit (function + all its layers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "cdk" / "requirements-lambda.txt"
LOCK_COMMAND = "python cdk/build_layers.py --lock"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_GLIBC = (2, 34)  # Amazon Linux 2023, under Lambda's python3.12 runtime
KERNEL_FILE = "_l1kernel.abi3.so"
PYTHON_VERSION = "3.12"
# Lambda's Python 3.12 runs on Amazon Linux 2023 (glibc 2.34): any of these wheels loads there.
# pip does not widen a --platform to older manylinux tags by itself, so each is named.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# The Lambda Python runtime ships boto3/botocore/s3transfer (~25 MB unzipped); the library only
# needs S3 and Secrets Manager calls the runtime's copy has, so the layer leaves them out.
PROVIDED_BY_RUNTIME = ("boto3",)
# Never in a layer: byte code compiled here, tests, the local C kernel built for another Python.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.c", "tests", "*.egg-info")


def runtime_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [r for r in project["dependencies"] if not r.startswith(PROVIDED_BY_RUNTIME)]


def requirements_digest(requirements: list[str]) -> str:
    """What the lock was resolved from: it is stale as soon as pyproject.toml's list changes."""
    return hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()


def platform_arguments() -> list[str]:
    """pip's target: CPython 3.12 on manylinux x86_64 up to Lambda's glibc, wheels only."""
    return [
        *[arg for p in PLATFORMS for arg in ("--platform", p)], "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--only-binary=:all:",
    ]  # fmt: skip


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build_library(out: Path) -> Path:
    target = out / "shazzam" / "python" / "shazzam"
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(ROOT / "layers" / "shazzam", target, ignore=IGNORED)
    build_kernel(target)
    return out / "shazzam"


def build_kernel(package: Path) -> Path:
    """Compile layers/shazzam/_l1kernel.c as setup.py does (its KERNEL: the limited API of 3.11,
    -O3, no -march: Lambda's CPUs pick SSE2 or AVX2 at run time) into `package`, and check that
    Lambda can load it. Fails loudly: a layer without the kernel would serve the numpy fallback."""
    kernel = runpy.run_path(str(ROOT / "setup.py"), run_name="shazzam_setup")["KERNEL"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from setuptools import Distribution, Extension
        except ImportError:  # Python 3.12+ venvs come without setuptools: the compiler, as it would be called
            built = compile_directly(kernel, Path(tmp))
        else:
            extension = Extension(**{**kernel, "sources": [str(ROOT / s) for s in kernel["sources"]]})
            distribution = Distribution({"name": "shazzam-l1kernel", "ext_modules": [extension]})
            distribution.verbose = 0
            command = distribution.get_command_obj("build_ext")
            command.build_lib, command.build_temp = str(Path(tmp) / "lib"), str(Path(tmp) / "temp")
            distribution.run_command("build_ext")
            built = Path(tmp) / "lib" / "shazzam" / KERNEL_FILE
        if not built.is_file():
            raise SystemExit(f"the C kernel was not built as {KERNEL_FILE} (a C compiler is needed)")
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-debug", str(built)], check=True)  # -g from CPython's CFLAGS
        target = package / KERNEL_FILE
        shutil.copy2(built, target)
    newest = max(glibc_versions(target), default=(0,))
    if newest > LAMBDA_GLIBC:
        raise SystemExit(f"{target.name} needs glibc {'.'.join(map(str, newest))}; Lambda has {'.'.join(map(str, LAMBDA_GLIBC))}")
    return target


def compile_directly(kernel: dict, folder: Path) -> Path:
    """The kernel without setuptools: CPython's own compiler and flags (sysconfig), as build_ext uses."""
    import shlex
    import sysconfig

    built = folder / "lib" / "shazzam" / KERNEL_FILE
    built.parent.mkdir(parents=True)
    defines = [f"-D{name}={value}" for name, value in kernel["define_macros"]]
    command = [
        *shlex.split(sysconfig.get_config_var("CC") or "cc"), *shlex.split(sysconfig.get_config_var("CFLAGS") or ""),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"), "-shared", *defines, *kernel["extra_compile_args"],
        f"-I{sysconfig.get_paths()['include']}", *[str(ROOT / s) for s in kernel["sources"]], "-o", str(built),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return built


def glibc_versions(library: Path) -> set[tuple[int, ...]]:
    """The GLIBC_x.y symbol versions a shared library needs (from its dynamic symbol table)."""
    for command in (["objdump", "-T", str(library)], ["readelf", "--dyn-syms", "--wide", str(library)]):
        if shutil.which(command[0]):
            listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            return {tuple(int(n) for n in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", listing)}
    raise SystemExit("neither objdump nor readelf (binutils) is installed: cannot check the kernel's glibc needs")


def kernel_loads(library: Path, python: str) -> str:
    """Load the kernel with another interpreter (Lambda's 3.12) and answer its instruction set."""
    probe = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('shazzam._l1kernel', sys.argv[1]); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); print(module.INSTRUCTIONS)"
    )
    return subprocess.run([python, "-c", probe, str(library)], capture_output=True, text=True, check=True).stdout.strip()


def build_models(out: Path) -> Path:
    """Every model in layers/models (SHAZZAM_MODEL picks one at run time, so a rollback is a setting,
    not a deploy): its manifest (.json) and its network (.tflite). Model cards and export checks
    (.md, .npz) stay out: the layer's room is counted against Lambda's 250 MB."""
    target = out / "models" / "models"
    shutil.rmtree(target.parent, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted((ROOT / "layers" / "models").iterdir()):
        if path.is_file() and path.suffix in (".json", ".tflite"):
            shutil.copy2(path, target / path.name)
    return out / "models"


def read_lock(path: Path = LOCK) -> dict:
    """{"digest": ..., "pins": {name: (version, [sha256, ...])}} from the lock file."""
    text = path.read_text()
    digest = re.search(r"^# requirements-digest: ([0-9a-f]{64})$", text, re.M)
    pins = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement, *options = line.split()
            name, version = requirement.split("==")
            pins[name] = (version, [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")])
    return {"digest": digest.group(1) if digest else None, "pins": pins}


def write_lock(path: Path = LOCK, python: str | None = None) -> Path:
    """Resolve pyproject.toml's runtime dependencies for Lambda's platform (pip's resolver, with a
    CPython 3.12 when there is one so that environment markers are 3.12's) and pin each package to
    the exact wheel pip picks there, by sha256."""
    python = python or find_python312() or sys.executable
    requirements = runtime_requirements()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run", "--ignore-installed",
            "--report", str(report), *platform_arguments(), "--target", str(Path(tmp) / "target"), *requirements,
        ]  # fmt: skip
        subprocess.run(command, check=True)
        installs = json.loads(report.read_text())["install"]
    lines = [
        "# The deps layer's lock: pyproject.toml's runtime dependencies (boto3 aside: the Lambda runtime has it)",
        f"# resolved for AWS Lambda's CPython {PYTHON_VERSION} on manylinux x86_64 (glibc <= 2.34), each pinned to",
        "# the wheel pip picks for that platform, by sha256. cdk/build_layers.py installs it with",
        "# --require-hashes --no-deps --only-binary=:all: and the same platform flags.",
        f"# Refresh after changing the dependencies: {LOCK_COMMAND}  (or make layers LAYERS_ARGS=--lock)",
        f"# requirements-digest: {requirements_digest(requirements)}",
    ]
    for item in sorted(installs, key=lambda i: i["metadata"]["name"].lower()):
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        if name in ("boto3", "botocore", "s3transfer"):
            continue
        sha256 = item["download_info"]["archive_info"]["hashes"]["sha256"]
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        lines += [f"# {wheel}", f"{name}=={item['metadata']['version']} --hash=sha256:{sha256}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_dependencies(out: Path, lock: Path = LOCK) -> Path:
    target = out / "deps" / "python"
    shutil.rmtree(target.parent, ignore_errors=True)
    target.mkdir(parents=True)
    if read_lock(lock)["digest"] != requirements_digest(runtime_requirements()):
        raise SystemExit(f"{lock} is stale: pyproject.toml's dependencies changed; run {LOCK_COMMAND}")
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--require-hashes", "--no-deps", *platform_arguments(), "--target", str(target), "--requirement", str(lock),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    # boto3 may come back as someone's dependency; the runtime's copy is the one imported anyway.
    for name in ("boto3", "botocore", "s3transfer"):
        for path in target.glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for junk in [*target.rglob("__pycache__"), *target.glob("*/tests")]:
        shutil.rmtree(junk, ignore_errors=True)
    return out / "deps"


def find_python312() -> str | None:
    """A CPython 3.12 to precompile the layers with (byte code is per Python version)."""
    for candidate in (shutil.which("python3.12"), *sorted(Path("/root/.pyenv/versions").glob("3.12*/bin/python3.12"))):
        if candidate:
            probe = subprocess.run(
                [str(candidate), "-c", "import sys; print(sys.version_info[:2] == (3, 12))"], capture_output=True, text=True
            )
            if probe.stdout.strip() == "True":
                return str(candidate)
    return None


def precompile(folder: Path, python: str) -> None:
    """Write the .pyc files Lambda cannot (/opt is read-only): otherwise every cold start compiles
    every imported module again (SQLAlchemy alone: 0.5 s). unchecked-hash: valid whatever the
    mtimes the zip round trip leaves."""
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(folder)], check=True
    )


def report(layers: dict[str, Path]) -> int:
    total = 0
    for name, path in layers.items():
        size = folder_size(path)
        total += size
        print(f"layer {name:8s} {size / 2**20:8.1f} MB unzipped")
    verdict = "fits" if total <= LAMBDA_UNZIPPED_LIMIT else "OVER THE LIMIT"
    print(f"all layers {total / 2**20:8.1f} MB of Lambda's 250 MB unzipped limit: {verdict}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "layers")
    parser.add_argument("--python312", default=None, help="a CPython 3.12 for the byte code (default: found on this machine)")
    parser.add_argument("--skip-deps", action="store_true", help="keep the deps layer as it is (it takes a minute)")
    parser.add_argument("--lock", action="store_true", help=f"only refresh {LOCK.relative_to(ROOT)} from pyproject.toml")
    args = parser.parse_args(argv)
    if args.lock:
        print(f"wrote {write_lock(python=args.python312).relative_to(ROOT)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    layers = {"shazzam": build_library(args.out), "models": build_models(args.out)}
    layers["deps"] = (
        args.out / "deps" if args.skip_deps and (args.out / "deps" / "python").is_dir() else build_dependencies(args.out)
    )
    python = args.python312 or find_python312()
    kernel = layers["shazzam"] / "python" / "shazzam" / KERNEL_FILE
    versions = glibc_versions(kernel)
    needs = f"glibc {'.'.join(map(str, max(versions)))}" if versions else "no versioned glibc symbol"
    print(f"C kernel {kernel.name}: {kernel.stat().st_size / 1024:.0f} KB, needs {needs} (Lambda has glibc 2.34)")
    if python:
        print(f"C kernel loads on {python}: {kernel_loads(kernel, python)}")
        for name in ("shazzam", "deps"):
            precompile(layers[name] / "python", python)
    else:
        print("no CPython 3.12 here: the layers go without byte code (slower cold starts)", file=sys.stderr)
    total = report(layers)
    return 0 if total <= LAMBDA_UNZIPPED_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
