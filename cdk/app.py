"""The CDK app: `npx cdk synth` (cdk.json runs this file) or `python cdk/app.py`, offline both.

Context (cdk.json or `-c key=value`), all optional: see shazzam_cdk.settings.Settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shazzam_cdk, when run as a script
# jsii warns at length on every run that this machine's Node 20 is past its end of life.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402
from shazzam_cdk.settings import ROOT, project_context  # noqa: E402
from shazzam_cdk.stack import build_app  # noqa: E402

if __name__ == "__main__":
    if "CDK_OUTDIR" in os.environ:  # under the CDK CLI, which passes cdk.json's context itself
        app = cdk.App()
    else:  # run directly: the same context and output folder as the CLI would use
        app = cdk.App(context=project_context(), outdir=str(ROOT / "cdk.out"))
    build_app(app)
    app.synth()
