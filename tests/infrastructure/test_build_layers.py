"""cdk/build_layers.py: what goes into each layer, and the size report against Lambda's limit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("build_layers", ROOT / "cdk" / "build_layers.py")
build_layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_layers)


def test_library_and_models_layers_hold_sources_and_models_only(tmp_path):
    library = build_layers.build_library(tmp_path)
    package = library / "python" / "shazzam"
    assert (package / "wiring.py").is_file() and (package / "openapi.json").is_file()
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("*.so"))
    models = build_layers.build_models(tmp_path)
    shipped = sorted(p.name for p in (models / "models").iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "layers" / "models").iterdir() if p.suffix in (".json", ".tflite"))


def test_dependencies_are_the_runtime_ones_without_boto3():
    requirements = build_layers.runtime_requirements()
    assert any(r.startswith("ai-edge-litert") for r in requirements)
    assert not any(r.startswith("boto3") for r in requirements)
    assert not any(r.startswith(("pytest", "moto")) for r in requirements)


def test_report_prints_each_layer_against_the_limit(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 2**20)
    assert build_layers.report({"a": tmp_path / "a"}) == 2**20
    out = capsys.readouterr().out
    assert "layer a" in out and "1.0 MB" in out and "fits" in out
