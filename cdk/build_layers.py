"""Build the Lambda layers' asset folders (no Docker): the CDK app points Code.from_asset at them.

    python cdk/build_layers.py [--out build/layers] [--skip-deps]

  shazzam/python/shazzam  the library (layers/shazzam, sources only)
  deps/python             the runtime dependencies from pyproject.toml, as manylinux x86_64 wheels
                          for Python 3.12 (pip --platform manylinux... --only-binary=:all:, so a laptop on any
                          OS builds what Lambda runs)
  models/models           layers/models' models (the functions read SHAZZAM_MODEL_DIR=/opt/models)

Each layer's unzipped size is printed against Lambda's 250 MB limit (function + all its layers).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
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


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build_library(out: Path) -> Path:
    target = out / "shazzam" / "python" / "shazzam"
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(ROOT / "layers" / "shazzam", target, ignore=IGNORED)
    return out / "shazzam"


def build_models(out: Path) -> Path:
    """Every model in layers/models (SHAZZAM_MODEL picks one at run time, so a rollback is a setting,
    not a deploy); the model cards (.md) stay out."""
    target = out / "models" / "models"
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(ROOT / "layers" / "models", target, ignore=shutil.ignore_patterns("*.md", "__pycache__"))
    return out / "models"


def build_dependencies(out: Path) -> Path:
    target = out / "deps" / "python"
    shutil.rmtree(target.parent, ignore_errors=True)
    target.mkdir(parents=True)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        *[arg for p in PLATFORMS for arg in ("--platform", p)], "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "--only-binary=:all:", "--target", str(target), *runtime_requirements(),
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
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    layers = {"shazzam": build_library(args.out), "models": build_models(args.out)}
    layers["deps"] = (
        args.out / "deps" if args.skip_deps and (args.out / "deps" / "python").is_dir() else build_dependencies(args.out)
    )
    python = args.python312 or find_python312()
    if python:
        for name in ("shazzam", "deps"):
            precompile(layers[name] / "python", python)
    else:
        print("no CPython 3.12 here: the layers go without byte code (slower cold starts)", file=sys.stderr)
    total = report(layers)
    return 0 if total <= LAMBDA_UNZIPPED_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
