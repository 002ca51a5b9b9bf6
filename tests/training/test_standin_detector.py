"""tests/support/make_standin_detector.py writes a detector the service runs, as its docstring and
the README say: $SHAZZAM_DETECTOR pointed at the manifest it writes."""

from __future__ import annotations

import subprocess

from shazzam.detector import DETECTOR_ENV, load_detector
from shazzam.images import load_image
from tests.conftest import REPO


def test_the_standin_detector_loads_as_documented(training_python, tmp_path, monkeypatch):
    done = subprocess.run([str(training_python), str(REPO / "tests" / "support" / "make_standin_detector.py"), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "detector_v2-standin.json"))
    detector = load_detector()
    assert detector.name == "detector_v2-standin"
    photo = load_image((REPO / "samples" / "queries" / "dress-query.jpg").read_bytes())
    labels = {detection.label for detection in detector.detect(photo)}
    assert labels and labels <= {"top", "pants", "footwear"}, labels
