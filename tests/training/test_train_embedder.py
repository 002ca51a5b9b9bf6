"""training/train_embedder.py: both recipes train on a handful of images and export a model the
service loads, whose .tflite matches PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from PIL import Image

from shazzam.taxonomy import CATEGORIES
from shazzam.vision import GarmentModel
from tests.conftest import REPO
from tests.support.parity import assert_matches_pytorch
from tests.training.conftest import SAMPLE_IMAGES, changed_blocks, train

TINY = ("--epochs", "1", "--batch", "8", "--workers", "0", "--threads", "2", "--score-from", "1")


@pytest.mark.parametrize("recipe", [("--cache-views", "1"), ("--cache-views", "0")], ids=["cached-cpu", "end-to-end"])
def test_trains_and_exports_a_model_the_service_runs(training_python, tiny_clothing, tmp_path, recipe):
    run_dir, models = tmp_path / "run", tmp_path / "models"
    log = train(training_python, "train_embedder.py", "--data", tiny_clothing, "--run-dir", run_dir, *TINY, *recipe)
    assert "refused 1 unreadable image(s)" in log
    assert "s from start to checkpoint" in log
    # the default --frozen-blocks 8: the stem and blocks 0-7 keep their ImageNet weights
    assert changed_blocks(training_python, run_dir / "checkpoint.pt") == list(range(8, 16))
    train(training_python, "train_embedder.py", "--run-dir", run_dir, "--export", models, "--name", "tiny_garment")

    manifest = json.loads((models / "tiny_garment.json").read_text())
    # the default recipe fits train + validation; the file that is not an image is left out
    assert manifest["training"]["args"]["fit_validation"] is True
    assert manifest["training"]["images"] == {"train": 20, "validation": 10, "test": 10}
    assert manifest["training"]["seconds"] > 0 and "name" not in manifest["training"]["args"]
    assert_matches_pytorch(models / "tiny_garment.json")
    model = GarmentModel.from_manifest(models / "tiny_garment.json")
    prediction = model.predict(Image.open(SAMPLE_IMAGES / "dress-01.jpg"))
    assert prediction.embedding.shape == (192,)
    assert prediction.category in model.categories


@pytest.mark.shared_data
def test_trains_on_ccp_street_garments_too_then_a_second_stage_from_that_run(training_python, tiny_clothing, shared_data, tmp_path):
    run_dir = tmp_path / "run"
    log = train(training_python, "train_embedder.py", "--data", tiny_clothing, "--run-dir", run_dir, *TINY,
                "--ccp", shared_data / "ccp", "--ccp-photos", "1-3")
    crops = sorted((run_dir / "ccp-garments").glob("*/*.jpg"))
    assert len(crops) >= 3 and {p.parent.name for p in crops} <= set(CATEGORIES)
    assert {p.stem for p in crops} <= {"0001", "0002", "0003"}
    assert f"street garments: {len(crops)} crops of CCP photos 0001-0003" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["fitted_images"] == 30 + len(crops)  # train + validation, and the crops
    assert summary["args"]["ccp_photos"] == "1-3"

    # a second stage on the catalogue alone starts from those weights: with no learning they stay
    second = tmp_path / "second"
    log = train(training_python, "train_embedder.py", "--data", tiny_clothing, "--run-dir", second, *TINY,
                "--init-from", run_dir / "checkpoint.pt", "--lr-body", "0", "--lr-head", "0")
    assert f"starting from {run_dir / 'checkpoint.pt'}" in log
    assert json.loads((second / "summary.json").read_text())["fitted_images"] == 30
    assert same_parameters(training_python, run_dir / "checkpoint.pt", second / "checkpoint.pt")


SAME_PARAMETERS = """
import sys, torch
first, second = (torch.load(path, weights_only=False)["state"] for path in sys.argv[1:3])
# parameters only: batch-norm running statistics move in train mode whatever the learning rate
keys = [k for k in first if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
print(all(torch.equal(first[k], second[k]) for k in keys) and set(first) == set(second))
"""


def same_parameters(python, first, second) -> bool:
    done = subprocess.run([str(python), "-c", SAME_PARAMETERS, str(first), str(second)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


def test_refuses_the_held_out_ccp_photos(training_python, tmp_path):
    done = subprocess.run([str(training_python), str(REPO / "training" / "train_embedder.py"), "--ccp", str(tmp_path),
                           "--ccp-photos", "690-710"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not within the training photos 1-700 (0701-0800 are held out)" in done.stderr


def test_learns_from_a_teacher_read_back_from_its_tflite(training_python, tiny_clothing, tmp_path):
    run_dir = tmp_path / "run"
    log = train(training_python, "train_embedder.py", "--data", tiny_clothing, "--run-dir", run_dir, *TINY,
                "--teacher", REPO / "layers" / "models" / "garment_v5.json", "--distill-weight", "2")
    assert "garment_v5: weights read back from its .tflite" in log and "distilling from" in log
    (epoch,) = json.loads((run_dir / "summary.json").read_text())["history"]
    assert epoch["distill"] > 0  # the KL to the teacher's softened probabilities, learnt beside the rest
    assert changed_blocks(training_python, run_dir / "checkpoint.pt") == list(range(8, 16))


CACHE_PREFIX = """
import os, shutil, sys
from pathlib import Path
sys.path.insert(0, "training")
from train_embedder import cache_prefix
from shazzam.images import centre_view, standardise_img

class Means:  # a stand-in for the frozen part: each view's mean colour
    def prefix(self, x):
        return x.mean(dim=(1, 2))

folder, images = Path(sys.argv[1]), Path(sys.argv[2])
image = folder / "shirt" / "image.jpg"
image.parent.mkdir()
items, cache = [(image, 0)], folder / "cache" / "train-serving.npy"
shutil.copyfile(images / "dress-01.jpg", image)
view = lambda i, im: centre_view(standardise_img(im))
before = cache_prefix(Means(), items, view, cache, 0, what="train")
stat = image.stat()
shutil.copyfile(images / "shoes-01.jpg", image)  # replaced in place, under the same name
os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
after = cache_prefix(Means(), items, view, cache, 0, what="train")
print((before != after).any())
"""


def test_the_cached_views_are_remade_when_an_image_changes_in_place(training_python, tmp_path):
    done = subprocess.run([str(training_python), "-c", CACHE_PREFIX, str(tmp_path), str(SAMPLE_IMAGES)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cached in" not in done.stdout
    assert done.stdout.split()[-1] == "True"


@pytest.mark.parametrize("recipe", ["1", "0"], ids=["cached-cpu", "end-to-end"])
def test_refuses_fewer_images_than_a_batch(training_python, tiny_clothing, tmp_path, recipe):
    # train + validation hold 30 readable images: not one batch of 64, so no step would run
    done = subprocess.run([str(training_python), str(REPO / "training" / "train_embedder.py"), "--data", str(tiny_clothing),
                           "--run-dir", str(tmp_path / "run"), *TINY[:2], "--batch", "64", *TINY[4:], "--cache-views", recipe],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "30 fitted image(s), fewer than --batch 64: no training step would run" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


LIST_SPLIT = """
import sys
from pathlib import Path
sys.path.insert(0, "training")
from train_embedder import list_split
print(len(list_split(Path(sys.argv[1]), "train")))
"""


def test_says_which_folders_it_leaves_out(training_python, tiny_clothing, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_clothing / "train", data / "train")
    for folder in ("tshirt", "Shoes"):  # not the taxonomy's names
        shutil.copytree(tiny_clothing / "train" / "dress", data / "train" / folder)
    done = subprocess.run([str(training_python), "-c", LIST_SPLIT, str(data)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    assert "train: ignored 4 images in folders not in the taxonomy: Shoes, tshirt" in done.stdout
    assert done.stdout.split()[-1] == "21"  # 2 of each category, and the file that is not an image
