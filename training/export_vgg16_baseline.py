"""Build the VGG16 fc7 baseline that `shazzam eval --vgg16` times the garment model against.

The original system embedded garments with VGG16's fc7 layer (4096 float32 = 16,384 bytes per
vector). Its latency does not depend on the weights, so this builds VGG16 (configuration D of
Simonyan & Zisserman 2015: 13 3x3 convolutions in 5 blocks, each block ending in a 2x2 max pool,
then fc6 25088 -> 4096 and fc7 4096 -> 4096, both ReLU; fc8 and the softmax are left out, as an
fc7 embedder does) by hand in torch (no torchvision), with seeded random weights (He init), and
converts it with litert-torch to one float32 LiteRT file with the garment models' interface:

    input  float32 [1, 224, 224, 3], NHWC, raw RGB 0..255 (normalised inside, like the garment models)
    output float32 [1, 4096], the fc7 activations

Run in the training venv (torch + litert-torch; ~550 MB written, a few minutes on 2 cores):

    .venv-train/bin/python training/export_vgg16_baseline.py --out build/vgg16_fc7.tflite

or `make vgg16-baseline`. The file is a timing stand-in only: its vectors mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

# Output channels of each 3x3 convolution; "M" is a 2x2 max pool (VGG16, configuration D).
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
FC7_DIM = 4096
SEED = 16


class VGG16Fc7(nn.Module):
    """VGG16 up to fc7 (ReLU), fed raw NHWC RGB 0..255."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in VGG16_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = spec
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Linear(512 * 7 * 7, FC7_DIM)
        self.fc7 = nn.Linear(FC7_DIM, FC7_DIM)
        self.register_buffer("mean", torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2) - self.mean) / self.std
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc6(x))
        return torch.relu(self.fc7(x))


def build(seed: int = SEED) -> VGG16Fc7:
    torch.manual_seed(seed)
    model = VGG16Fc7()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/vgg16_fc7.tflite"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    import litert_torch

    started = time.perf_counter()
    model = build(args.seed)
    params = sum(p.numel() for p in model.parameters())
    sample = torch.rand(1, 224, 224, 3) * 255
    with torch.inference_mode():
        expected = model(sample)
    assert expected.shape == (1, FC7_DIM), expected.shape
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.tflite")
    litert_torch.convert(model, (sample,)).export(str(tmp))
    tmp.replace(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    info = {
        "name": "vgg16_fc7",
        "file": args.out.name,
        "sha256": digest,
        "bytes": args.out.stat().st_size,
        "parameters": params,
        "seed": args.seed,
        "input": {"shape": [1, 224, 224, 3], "dtype": "float32", "range": "raw RGB 0..255"},
        "outputs": {"embedding": {"index": 0, "dim": FC7_DIM}},
        "note": "random weights: a latency baseline only (training/export_vgg16_baseline.py)",
    }
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out} ({info['bytes']} bytes, {params} parameters) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
