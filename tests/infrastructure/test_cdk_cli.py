"""`cdk synth` as a user runs it: the CDK CLI from npm (package.json / package-lock.json) running
cdk.json's app, offline (no notices, no version check, no telemetry), cdk-nag included.

`make test` installs the CLI (`npm ci`) first when npm is there. Without node/npm this skips on a
developer's machine and fails in CI (CI=true), where the CLI is part of the contract.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.infrastructure.conftest import stub_layers

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"
OFFLINE = {
    "CDK_DISABLE_VERSION_CHECK": "1",  # no look-up of a newer CLI on the registry
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}


@pytest.fixture(scope="module")
def cdk_cli() -> Path:
    if not (shutil.which("node") and shutil.which("npm") and shutil.which("npx")):
        unavailable("node/npm are not installed: the CDK CLI comes from npm (package.json)")
    if not CDK.exists():  # `make test` ran `npm ci` already; a bare `pytest` does it here
        subprocess.run(["npm", "ci", "--no-fund", "--no-audit"], cwd=ROOT, check=True, timeout=300)
    return CDK


@pytest.fixture(scope="module")
def cli_synth(cdk_cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cdk.out"
    layers = stub_layers(tmp_path_factory.mktemp("layers"))  # make layers is not offline; the template needs only folders
    command = [
        "npx", "--no", "--", "cdk", "synth", "--quiet", "--no-notices", "--no-version-reporting",
        "--output", str(out), "--context", f"layersDir={layers}",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=300
    )
    elapsed = time.monotonic() - started
    assert process.returncode == 0, f"cdk synth failed ({process.returncode}):\n{process.stdout[-4000:]}\n{process.stderr[-4000:]}"
    return out, elapsed


def test_cdk_synth_with_the_cli_succeeds(cli_synth):
    out, elapsed = cli_synth
    template = json.loads((out / "Shazzam.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::ApiGatewayV2::Api", "AWS::CloudFront::Distribution", "AWS::RDS::DBCluster"} <= kinds
    assert {"ApiUrl", "SiteUrl", "BucketName"} <= set(template["Outputs"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"]["Shazzam"]["type"] == "aws:cloudformation:stack"
    assert elapsed < 120, f"cdk synth took {elapsed:.0f} s"


def test_cli_synth_ran_cdk_nag_with_nothing_unsuppressed(cli_synth):
    out, _ = cli_synth
    (path,) = out.glob("AwsSolutions-*Shazzam-NagReport.csv")  # cdk-nag writes it during synth
    with open(path, newline="") as report:
        rows = list(csv.DictReader(report))
    assert rows, "cdk-nag's report is empty"
    compliance = {row["Compliance"] for row in rows}
    # Anything else (Non-Compliant, or a rule that could not be evaluated) is a finding to fix.
    assert compliance <= {"Compliant", "Suppressed"}, [r for r in rows if r["Compliance"] not in ("Compliant", "Suppressed")][:5]
    assert "Suppressed" in compliance


def test_cli_template_is_cfn_lint_clean(cli_synth):
    from cfnlint.api import ManualArgs, lint_file

    out, _ = cli_synth
    # W3005: CDK has each function DependsOn its role as well as GetAtt-ing it; redundant, harmless, CDK's.
    matches = lint_file(out / "Shazzam.template.json", config=ManualArgs(ignore_checks=["W3005"], regions=["eu-west-1", "us-east-1"]))
    assert [str(m) for m in matches] == []
