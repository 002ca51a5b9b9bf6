"""A stand-in for the garment detector: the detector_v2 contract, no learning.

    .venv-train/bin/python tests/support/make_standin_detector.py /tmp/standin
    SHAZZAM_DETECTOR=/tmp/standin/detector_v2-standin.json .venv/bin/shazzam search photo.jpg

Writes detector_v2-standin.tflite and its manifest detector_v2-standin.json (named as the model is:
the service refuses a manifest whose file name is not its model's) into the
folder given, never into layers/models. The "model" puts a top in the upper middle of the canvas, pants
below it and footwear at the bottom, wherever the photo has texture (so a blank photo or the
letterbox's grey gives background): enough to develop and test everything around the real model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "layers"))
from shazzam.taxonomy import DETECTOR_CLASSES  # noqa: E402

H, W, STRIDE = 384, 256, 4
CLASSES = ["background", *DETECTOR_CLASSES]


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        prior = torch.zeros(len(CLASSES), H // STRIDE, W // STRIDE)
        prior[0] = 2.0
        rows, cols = H // STRIDE, W // STRIDE
        c0, c1 = int(cols * 0.25), int(cols * 0.75)
        for name, top, bottom in (("top", 0.18, 0.48), ("pants", 0.5, 0.84), ("footwear", 0.87, 0.97)):
            prior[CLASSES.index(name), int(rows * top) : int(rows * bottom), c0:c1] = 5.0
        self.register_buffer("prior", prior[None])
        background = torch.zeros(1, len(CLASSES), 1, 1)
        background[0, 0] = 6.0
        self.register_buffer("background", background)

    def forward(self, x):  # x: [1, 384, 256, 3] raw RGB
        grey = x.mean(dim=3, keepdim=True).permute(0, 3, 1, 2)  # [1, 1, H, W]
        texture = (grey - F.avg_pool2d(grey, 5, stride=1, padding=2)).abs()
        texture = F.avg_pool2d(texture, 16, stride=STRIDE, padding=6)[:, :, : H // STRIDE, : W // STRIDE]
        content = torch.sigmoid((texture - 1.5) * 4.0)
        logits = content * self.prior + (1 - content) * self.background
        return F.softmax(logits, dim=1).permute(0, 2, 3, 1)  # [1, 96, 64, 11]


def main(out: Path) -> None:
    import litert_torch

    out.mkdir(parents=True, exist_ok=True)
    module = StandIn().eval()
    sample = torch.rand(1, H, W, 3) * 255
    name = "detector_v2-standin"
    path = out / f"{name}.tflite"
    litert_torch.convert(module, (sample,)).export(str(path))
    manifest = {
        "name": name,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"shape": [1, H, W, 3], "dtype": "float32", "range": "raw RGB 0..255", "preprocessing": "shazzam.detector_input.detector_input"},
        "outputs": {"probabilities": {"index": 0, "shape": [1, H // STRIDE, W // STRIDE, len(CLASSES)], "stride": STRIDE, "classes": CLASSES}},
        "postprocess": {"min_area_fraction": 0.001, "score_threshold": 0.35},
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {path} and its manifest")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", type=Path, default=Path("/tmp/shazzam-standin-detector"), help="the folder to write it to")
    main(parser.parse_args().out)
