"""Each layer's unzipped size, and each function's cold start as Lambda would run it.

    python cdk/measure_cold_start.py [--python python3.12] [--items 20000]

Every figure comes from a fresh interpreter (nothing cached in memory) that sees only what Lambda
would: the function's folder, the three built layers (cdk/build_layers.py) and boto3 (which the
runtime provides). The interpreter should be a CPython 3.12, the deps layer's version.
  - every function: the wall time of `import handler` (and, from `-X importtime`, the packages it spends it in);
  - search, further: opening the database, loading the models (garment embedder and detector),
    detecting the garments of a photo, embedding it, and loading and searching a shard of --items
    vectors, the work of its first request. Target: <= 2 s in all.
Figures are from this machine; Lambda's CPU share grows with memory (search has 1536 MB, ~1 vCPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers"))
from shazzam import wiring  # noqa: E402

SEARCH_TARGET_S = 2.0

SEARCH_FIRST_REQUEST = r"""
import json, sys, time
started = time.perf_counter()
marks = {}
import handler  # the search function's module: powertools, the resolver, the library
marks["import handler"] = time.perf_counter() - started
from shazzam import app as app_module
from shazzam.images import load_image
app = app_module.current()  # SQLite here (the cloud opens MySQL through the proxy)
marks["open database"] = time.perf_counter() - started - sum(marks.values())
model = app.garment_model
detector = app.detector
marks["load models"] = time.perf_counter() - started - sum(marks.values())
photo = load_image(open(sys.argv[1], "rb").read())
detections = detector.detect(photo)
marks["detect garments"] = time.perf_counter() - started - sum(marks.values())
prediction = model.predict(photo)
marks["embed photo"] = time.perf_counter() - started - sum(marks.values())
results = app.shards.search("dress", prediction.embedding, k=10, model=model.name)
marks["load shard + search"] = time.perf_counter() - started - sum(marks.values())
assert len(results) == 10
from shazzam import distance
print(json.dumps({"marks": marks, "kernel": distance.kernel_name(), "detector": detector.name, "garments": len(detections)}))
"""

MAKE_SHARD = r"""
import sys, numpy as np
from shazzam import app as app_module
from shazzam.index import publish
from shazzam.vision import load_garment_model
app = app_module.current()
model = load_garment_model(app.model_dir)
rng = np.random.default_rng(0)
from PIL import Image
dimensions = model.predict(Image.new("RGB", (224, 224))).embedding.shape[0]
vectors = rng.random((int(sys.argv[1]), dimensions), dtype=np.float32)
publish(app.store, "dress", add={f"d{i:08d}": v for i, v in enumerate(vectors)}, model=model.name)
"""


def boto3_like_the_runtime(build: Path) -> Path:
    """boto3 in a folder of its own: the Lambda runtime's copy, which the deps layer leaves out."""
    target = build / "runtime-boto3"
    if not (target / "boto3").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target), "boto3"],
            check=True,
        )
    return target


def lambda_environment(layers: Path, runtime: Path, data_dir: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(layers / "shazzam" / "python"), str(layers / "deps" / "python"), str(runtime)]),
        "PYTHONDONTWRITEBYTECODE": "1",  # nothing cached between runs: each import is a cold one
        "SHAZZAM_DATA_DIR": data_dir,
        "SHAZZAM_MODEL_DIR": str(layers / "models" / "models"),
        "POWERTOOLS_SERVICE_NAME": "shazzam-measure",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }


def import_time(python: str, name: str, environment: dict) -> tuple[float, list[tuple[float, str]]]:
    started = time.perf_counter()
    process = subprocess.run(
        [python, "-X", "importtime", "-c", "import handler"],
        cwd=ROOT / "functions" / name, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    if process.returncode:
        sys.exit(f"{name}: import handler failed\n{process.stderr[-3000:]}")
    wall = time.perf_counter() - started
    by_package: dict[str, float] = {}
    for line in process.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].split(":")[-1].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(parts[0].split(":")[-1]) / 1e6  # self time
    return wall, sorted(((seconds, package) for package, seconds in by_package.items()), reverse=True)[:4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=None, help="a CPython 3.12 (default: the one build_layers.py finds)")
    parser.add_argument("--layers", type=Path, default=ROOT / "build" / "layers")
    parser.add_argument("--items", type=int, default=20000, help="vectors in the measured search shard")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "cdk"))
    import build_layers

    args.python = args.python or build_layers.find_python312() or "python3.12"
    # The interpreter itself, not a launcher (pyenv's shims need an environment Lambda's lacks).
    args.python = subprocess.run(
        [args.python, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not (args.layers / "deps" / "python").is_dir():
        sys.exit(f"no built layers in {args.layers}: run python cdk/build_layers.py first")
    build_layers.report({name: args.layers / name for name in ("shazzam", "deps", "models")})
    runtime = boto3_like_the_runtime(args.layers.parent)
    with tempfile.TemporaryDirectory() as data_dir:
        environment = lambda_environment(args.layers, runtime, data_dir)
        print(f"\ncold import of each handler ({args.python}, a fresh process each):")
        for function in wiring.FUNCTIONS:
            wall, slowest = import_time(args.python, function.name, environment)
            detail = ", ".join(f"{module} {seconds:.2f}s" for seconds, module in slowest)
            print(f"  {function.name:12s} {wall:5.2f} s   (slowest: {detail})")

        subprocess.run(
            [args.python, "-c", MAKE_SHARD, str(args.items)], env=environment, check=True, cwd=ROOT / "functions" / "search"
        )
        photo = ROOT / "samples" / "queries" / "dress-query.jpg"
        started = time.perf_counter()
        process = subprocess.run(
            [args.python, "-c", SEARCH_FIRST_REQUEST, str(photo)],
            cwd=ROOT / "functions" / "search", env=environment, capture_output=True, text=True, check=True,
        )  # fmt: skip
        total = time.perf_counter() - started
        answer = json.loads(process.stdout.strip().splitlines()[-1])
        marks = answer["marks"]
        print(
            f"\nsearch cold start, first request ({args.items} vectors in the shard, detector {answer['detector']} "
            f"({answer['garments']} found), L1 kernel {answer['kernel']}):"
        )
        for mark, seconds in marks.items():
            print(f"  {mark:22s} {seconds:5.2f} s")
        print(
            f"  {'total (process start)':22s} {total:5.2f} s   target <= {SEARCH_TARGET_S} s: {'met' if total <= SEARCH_TARGET_S else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
