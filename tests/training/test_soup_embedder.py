"""training/soup_embedder.py: two seeds of one recipe averaged into one network that exports like a run."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO
from tests.support.parity import assert_matches_pytorch
from tests.training.conftest import train

TINY = ("--epochs", "1", "--batch", "8", "--workers", "0", "--threads", "2", "--score-from", "1", "--cache-views", "1")


@pytest.fixture(scope="module")
def two_seeds(training_python, tiny_clothing, tmp_path_factory):
    runs = tmp_path_factory.mktemp("seeds")
    for seed in ("1", "2"):
        train(training_python, "train_embedder.py", "--data", tiny_clothing, "--run-dir", runs / seed, *TINY, "--seed", seed)
    return runs / "1", runs / "2"


SOUP_STATE = """
import sys, torch
from pathlib import Path
sys.path.insert(0, "training")
from soup_embedder import ingredient
soup = torch.load(sys.argv[1], weights_only=False)["state"]
first, second = (ingredient(Path(p))[0] for p in sys.argv[2:4])
floating = [k for k in soup if soup[k].is_floating_point()]
moved = sum(not torch.equal(first[k], second[k]) for k in floating)
# the largest relative difference between the soup and the mean of the two folded ingredients
gap = max(float((soup[k] - (first[k] + second[k]) / 2).norm() / ((first[k] + second[k]) / 2).norm().clamp(min=1e-12))
          for k in floating)
print(moved, gap)
"""


def soup_state(python, soup_dir, first, second) -> tuple[int, float]:
    """How many tensors the two ingredients differ in, and the soup's largest relative gap to their mean."""
    done = subprocess.run([str(python), "-c", SOUP_STATE, str(soup_dir / "checkpoint.pt"), str(first), str(second)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    moved, gap = done.stdout.split()
    return int(moved), float(gap)


def test_averages_two_seeds_and_exports_the_average(training_python, tiny_clothing, two_seeds, tmp_path):
    soup_dir, models = tmp_path / "soup", tmp_path / "models"
    log = train(training_python, "soup_embedder.py", "--data", tiny_clothing, "--workers", "0",
                "--runs", *two_seeds, "--run-dir", soup_dir)
    assert "soup of 2 runs (seeds [1, 2])" in log
    moved, gap = soup_state(training_python, soup_dir, *two_seeds)
    assert moved > 0, "the two seeds trained to the same weights: nothing was averaged"
    assert gap < 1e-6

    summary = json.loads((soup_dir / "summary.json").read_text())
    runs = [json.loads((d / "summary.json").read_text()) for d in two_seeds]
    assert summary["seconds"] == sum(r["seconds"] for r in runs)  # a soup costs both trainings
    assert [i["seed"] for i in summary["soup"]] == [1, 2] and summary["args"]["seed"] == [1, 2]
    assert 0 <= summary["test"]["accuracy"] <= 1

    train(training_python, "train_embedder.py", "--run-dir", soup_dir, "--export", models, "--name", "tiny_soup")
    manifest = json.loads((models / "tiny_soup.json").read_text())
    assert manifest["training"]["seconds"] == summary["seconds"]
    assert_matches_pytorch(models / "tiny_soup.json")


def test_an_exported_model_is_read_back_from_its_tflite_as_an_ingredient(training_python, tiny_clothing, two_seeds, tmp_path):
    first, second = two_seeds
    models = tmp_path / "models"
    train(training_python, "train_embedder.py", "--run-dir", first, "--export", models, "--name", "tiny_first")
    log = train(training_python, "soup_embedder.py", "--data", tiny_clothing, "--workers", "0",
                "--runs", models / "tiny_first.json", second, "--run-dir", tmp_path / "soup")
    assert "tiny_first: weights read back from its .tflite" in log
    # the same soup as from the run directory, but for the fp16 rounding of the exported weights
    _, gap = soup_state(training_python, tmp_path / "soup", first, second)
    assert gap < 2e-3

    (models / "tiny_first.tflite").write_bytes((models / "tiny_first.tflite").read_bytes()[:-1] + b"\0")
    refused = soup_fails(training_python, "--runs", models / "tiny_first.json", second, "--run-dir", tmp_path / "broken")
    assert "does not match the checksum" in refused


def soup_fails(python, *args) -> str:
    done = subprocess.run([str(python), str(REPO / "training" / "soup_embedder.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    return done.stderr


# a copy of a run whose summary says it was trained with another seed and another instance weight
OTHER_RECIPE = """
import sys, torch
from pathlib import Path
checkpoint = torch.load(Path(sys.argv[1]) / "checkpoint.pt", weights_only=False)
checkpoint["summary"]["args"].update(seed=3, instance_weight=0.25)
Path(sys.argv[2]).mkdir()
torch.save(checkpoint, Path(sys.argv[2]) / "checkpoint.pt")
"""


# a copy of a run whose summary says it is a soup of two seeds (as soup_embedder.py writes it)
A_SOUP = """
import sys, torch
from pathlib import Path
checkpoint = torch.load(Path(sys.argv[1]) / "checkpoint.pt", weights_only=False)
checkpoint["summary"]["args"].update(seed=[3, 4])
Path(sys.argv[2]).mkdir()
torch.save(checkpoint, Path(sys.argv[2]) / "checkpoint.pt")
"""


def test_refuses_runs_that_cannot_be_averaged(training_python, two_seeds, tmp_path):
    first, _ = two_seeds
    assert "repeat a seed" in soup_fails(training_python, "--runs", first, first, "--run-dir", tmp_path / "same")
    assert "at least two runs" in soup_fails(training_python, "--runs", first, "--run-dir", tmp_path / "one")
    other = tmp_path / "other-recipe"
    subprocess.run([str(training_python), "-c", OTHER_RECIPE, str(first), str(other)], cwd=REPO, check=True)
    refused = soup_fails(training_python, "--runs", first, other, "--run-dir", tmp_path / "mixed")
    assert "not a run of" in refused and "instance_weight" in refused
    assert not (tmp_path / "mixed").exists()

    a_soup = tmp_path / "a-soup"
    subprocess.run([str(training_python), "-c", A_SOUP, str(first), str(a_soup)], cwd=REPO, check=True)
    refused = soup_fails(training_python, "--runs", first, a_soup, "--run-dir", tmp_path / "soup-of-soups")
    assert f"{a_soup} is itself a soup (seeds [3, 4]): give the runs it was made of instead" in refused
    assert not (tmp_path / "soup-of-soups").exists()
