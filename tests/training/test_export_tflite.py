"""training/export_tflite.py: what an export may put under a model's name."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO

INSTALL = """
import sys
from pathlib import Path
sys.path.insert(0, "training")
from export_tflite import install, staging_path
folder, replace = Path(sys.argv[1]), sys.argv[2] == "replace"
path = folder / "garment_v5.tflite"
staged = staging_path(path)
staged.write_bytes(b"the retrained network")
try:
    print(install(staged, path, folder / "garment_v5.json", replace))
except SystemExit as refusal:
    print(f"refused: {refusal}")
"""


def install(python, folder, replace: bool) -> str:
    done = subprocess.run([str(python), "-c", INSTALL, str(folder), "replace" if replace else "keep"], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def test_a_different_network_is_refused_the_name_of_a_model_already_there(training_python, tmp_path):
    (tmp_path / "garment_v5.tflite").write_bytes(b"the serving network")
    (tmp_path / "garment_v5.json").write_text(json.dumps({"name": "garment_v5", "sha256": "0" * 64}))

    said = install(training_python, tmp_path, replace=False)
    assert said.startswith("refused: ") and "give this one a new --name" in said and "--replace" in said
    # the serving model stays whole and the staged file is gone
    assert (tmp_path / "garment_v5.tflite").read_bytes() == b"the serving network"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garment_v5.json", "garment_v5.tflite"]

    digest = install(training_python, tmp_path, replace=True)  # on purpose
    assert (tmp_path / "garment_v5.tflite").read_bytes() == b"the retrained network"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garment_v5.json", "garment_v5.tflite"]

    # the same network again (a re-export) may keep its name
    (tmp_path / "garment_v5.json").write_text(json.dumps({"name": "garment_v5", "sha256": digest}))
    assert install(training_python, tmp_path, replace=False) == digest


def test_the_export_takes_replace(training_python):
    for script in ("train_embedder.py", "train_detector.py"):
        done = subprocess.run([str(training_python), str(REPO / "training" / script), "--help"], cwd=REPO,
                              capture_output=True, text=True, check=True, timeout=120)
        assert "--replace" in done.stdout
