"""The training scripts run for real, in the training venv (.venv-train: torch lives only there),
on a handful of images, then export; what they export must load in the service and match PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable

TRAINING_PYTHON = REPO / ".venv-train" / "bin" / "python"
SAMPLE_IMAGES = REPO / "samples" / "shop" / "images"
# per category of the bundled sample shop (clothing-dataset-small images): how many go to each split
SPLIT_SIZES = {"train": 2, "validation": 1, "test": 1}


@pytest.fixture(scope="session")
def training_python() -> Path:
    if not (REPO / ".venv-train" / ".installed").is_file():
        unavailable("no training venv: make .venv-train/.installed")
    return TRAINING_PYTHON


def train(python: Path, script: str, *args: str | Path, timeout: int = 300) -> str:
    """Run training/<script> with `args`; its log (stdout and stderr) on success."""
    done = subprocess.run([str(python), str(REPO / "training" / script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="session")
def tiny_clothing(tmp_path_factory) -> Path:
    """A clothing-dataset-small-shaped folder (split/category/image) of 40 sample-shop images, and
    one file in train that is not an image."""
    root = tmp_path_factory.mktemp("tiny-clothing")
    for category in sorted({p.name.rsplit("-", 1)[0] for p in SAMPLE_IMAGES.glob("*.jpg")}):
        images = iter(sorted(SAMPLE_IMAGES.glob(f"{category}-*.jpg")))
        for split, count in SPLIT_SIZES.items():
            folder = root / split / category
            folder.mkdir(parents=True)
            for _ in range(count):
                image = next(images)
                shutil.copyfile(image, folder / image.name)
    (root / "train" / "shirt" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    return root


CHANGED_BLOCKS = """
import sys, torch
sys.path.insert(0, "training")
from common import load_backbone
trained = torch.load(sys.argv[1], weights_only=False)["state"]
imagenet = load_backbone().state_dict()
print(sorted({int(k.split(".")[1]) for k, v in imagenet.items()
              if k.startswith("_blocks.") and k.endswith("weight") and not torch.equal(v, trained[k[1:]])}))
"""


def changed_blocks(python: Path, checkpoint: Path) -> list[int]:
    """The EfficientNet-Lite0 blocks whose weights a training run moved from the ImageNet ones."""
    done = subprocess.run([str(python), "-c", CHANGED_BLOCKS, str(checkpoint)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
