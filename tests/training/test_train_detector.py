"""training/train_detector.py: both recipes train on four CCP photos and export a detector the
service loads, whose .tflite matches PyTorch."""

from __future__ import annotations

import json
import subprocess

import pytest
from PIL import Image

from shazzam.detector import GarmentDetector
from shazzam.images import load_image
from tests.conftest import REPO
from tests.support.parity import assert_matches_pytorch
from tests.training.conftest import changed_blocks, train

TINY = ("--limit", "4", "--epochs", "1", "--batch", "2", "--workers", "0", "--threads", "2", "--iou-every", "0")
RECIPES = {
    # the committed model's CPU recipe: blocks 0-10 cached, one product shot per photo, the catalogue term
    "cached-cpu": ("--frozen-blocks", "11", "--product-views", "1", "--clothing-batch", "4"),
    # the same, with one more cached view a photo: another photo's garments pasted on it
    "cached-copy-paste": ("--frozen-blocks", "11", "--product-views", "1", "--copy-paste-views", "1", "--clothing-batch", "4"),
    # blocks 0-10 frozen, but every view augmented afresh (not cached)
    "fresh-cpu": ("--frozen-blocks", "11", "--fresh-views", "--clothing-batch", "4"),
    # detector_v1's recipe (on a GPU then), end to end
    "end-to-end": ("--device", "cpu"),
}
# the blocks each recipe trains; the stem and the blocks before keep their ImageNet weights
TRAINED_BLOCKS = {"cached-cpu": list(range(11, 16)), "cached-copy-paste": list(range(11, 16)), "fresh-cpu": list(range(11, 16)),
                  "end-to-end": list(range(16))}
# cached views of each of the four photos: as it is, mirrored, a product shot, and pasted garments
VIEWS = {"cached-cpu": 4 * 3, "cached-copy-paste": 4 * 4}


@pytest.mark.parametrize("recipe", RECIPES.keys())
def test_trains_and_exports_a_detector_the_service_runs(training_python, shared_data, tiny_clothing, tmp_path, recipe):
    run_dir, models = tmp_path / "run", tmp_path / "models"
    log = train(training_python, "train_detector.py", "--ccp", shared_data / "ccp", "--clothing", tiny_clothing,
                "--run-dir", run_dir, *TINY, *RECIPES[recipe])
    assert "refused 1 unreadable clothing-dataset-small image(s)" in log
    assert "s from start to checkpoint" in log
    assert changed_blocks(training_python, run_dir / "checkpoint.pt") == TRAINED_BLOCKS[recipe]
    if recipe in VIEWS:
        assert json.loads((run_dir / "summary.json").read_text())["views"] == VIEWS[recipe]
    if recipe == "cached-copy-paste":
        return  # the same network as cached-cpu's, whose export is checked below (CI's time)
    train(training_python, "train_detector.py", "--run-dir", run_dir, "--export", models, "--name", "tiny_detector")

    manifest = json.loads((models / "tiny_detector.json").read_text())
    assert manifest["name"] == "tiny_detector"
    # the options that shaped the model, not those the recipe does not read
    assert ("product_share" in manifest["training"]["args"]) == (recipe not in VIEWS)
    assert_matches_pytorch(models / "tiny_detector.json")
    # the service loads it (checksum, shapes, classes, stride) and runs it on a held-out photo; one
    # epoch on four photos finds little, so nothing is asserted of what it finds
    photo = load_image((shared_data / "ccp" / "photos" / "0701.jpg").read_bytes())
    assert isinstance(GarmentDetector.from_manifest(models / "tiny_detector.json").detect(photo), list)


IOU_SET = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, "training")
from common import load_backbone
from train_detector import GarmentParser, pixel_iou, readable_photos
samples = readable_photos(Path(sys.argv[1]), range(601, 605), "the pixel IoU")
print(len(samples), 0 <= pixel_iou(GarmentParser(load_backbone()), samples, torch.device("cpu")) <= 1)
"""


def test_the_iou_photos_are_those_the_loader_accepts(training_python, tmp_path):
    """An unreadable photo, or a mask without its photo, among 0601-0700 is refused and counted
    before training starts; it once crashed the run at its first IoU epoch, the training lost."""
    ccp = tmp_path / "ccp"
    (ccp / "photos").mkdir(parents=True)
    (ccp / "masks").mkdir()
    (ccp / "labels.json").write_text(json.dumps(["null", "dress"]))
    mask = Image.new("L", (200, 300))
    mask.paste(1, (50, 50, 150, 250))
    for number in (601, 602, 603, 604):
        mask.save(ccp / "masks" / f"{number:04d}.png")
    for number in (601, 604):
        Image.new("RGB", (200, 300), (200, 60, 60)).save(ccp / "photos" / f"{number:04d}.jpg")
    (ccp / "photos" / "0602.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")  # 0603: the mask alone

    done = subprocess.run([str(training_python), "-c", IOU_SET, str(ccp)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["2", "True"]
    assert "refused CCP photo 0603: 0603: no photo in" in done.stdout
    assert "refused 2 unreadable CCP photo(s); the pixel IoU without them" in done.stdout
