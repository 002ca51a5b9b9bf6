"""One synth of the CDK app per session (with cdk-nag's checks), shared by the template tests."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "cdk"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

if shutil.which("node") is None:
    # aws-cdk-lib runs its constructs in node (jsii): without node nothing here can run, not even an import.
    if IN_CI:
        raise pytest.UsageError("node is not installed: the CDK libraries and CLI need Node 20+ (required in CI)")
    # The modules that build the stack; the layer builder's, the database's and the migration's run.
    collect_ignore = ["test_cdk_cli.py", "test_checks.py", "test_settings.py", "test_site.py", "test_site_page.py", "test_stack.py"]
else:
    aws_cdk = pytest.importorskip("aws_cdk", reason="the CDK libraries: pip install -e '.[cdk]'")
    pytest.importorskip("cdk_nag")

    from aws_cdk.assertions import Template
    from shazzam_cdk.settings import project_context
    from shazzam_cdk.stack import build_app


def layers_dir(tmp_path_factory) -> Path:
    """Tiny stand-ins for the layers cdk/build_layers.py builds: the template only needs each asset
    folder to exist, and staging the real ones (240 MB) would copy them on every synth."""
    return stub_layers(tmp_path_factory.mktemp("layers"))


def stub_layers(stub: Path) -> Path:
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
