"""One synth of the CDK app per session (with cdk-nag's checks), shared by the template tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "cdk"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

aws_cdk = pytest.importorskip("aws_cdk", reason="the CDK libraries: pip install -e '.[cdk]'")
pytest.importorskip("cdk_nag")

from aws_cdk.assertions import Template  # noqa: E402
from shazzam_cdk.settings import project_context  # noqa: E402
from shazzam_cdk.stack import build_app  # noqa: E402

BUILT_LAYERS = ROOT / "build" / "layers"


def layers_dir(tmp_path_factory) -> Path:
    """The layers cdk/build_layers.py built, or (before any build) tiny stand-ins: the template
    only needs each asset folder to exist."""
    if all((BUILT_LAYERS / name).is_dir() for name in ("shazzam", "deps", "models")):
        return BUILT_LAYERS
    stub = tmp_path_factory.mktemp("layers")
    for name, inner in (("shazzam", "python/shazzam"), ("deps", "python"), ("models", "models")):
        (stub / name / inner).mkdir(parents=True)
        (stub / name / inner / "STUB").write_text("a stand-in for the built layer\n")
    return stub


def synthesize(tmp_path_factory, **context):
    app = aws_cdk.App(
        context={**project_context(), "layersDir": str(layers_dir(tmp_path_factory)), **context},
        outdir=str(tmp_path_factory.mktemp("cdk.out")),
    )
    stack = build_app(app, nag=True)
    app.synth()
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    return synthesize(tmp_path_factory)


@pytest.fixture(scope="session")
def template(stack) -> Template:
    return Template.from_stack(stack)


@pytest.fixture(scope="session")
def resources(template) -> dict:
    return template.to_json()["Resources"]
