"""Export a train_embedder.py checkpoint to layers/models/<name>.{tflite,json,parity.npz}.

    .venv-train/bin/python training/train_embedder.py --run-dir build/garment_v6 --export layers/models --name garment_v6

A name whose manifest describes another network is refused (export_tflite.install; --replace to
overwrite on purpose): the index re-embeds only when the model's name changes.

The .tflite takes one view of a standardised image (float32 [1, 224, 224, 3], raw RGB;
`shazzam.images.to_model_input(image)` is the centre one) and returns the embedding [1, D]
(non-negative, not normalised) and the category probabilities [1, 10] (`shazzam.taxonomy.CATEGORIES`
order); fp16 weights, float32 arithmetic (see export_tflite.py). The manifest names the views the
service averages the outputs over (SERVING_VIEWS). The parity file holds the PyTorch reference's
outputs for bundled sample photos (centre views).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_embedder import output_mapping, write_manifest  # noqa: E402
from export_tflite import MAX_RELATIVE_ERROR, convert, fold_batchnorms, install, relative_error, round_weights_to_fp16, run_tflite, staging_path  # noqa: E402
from common import load_backbone, log  # noqa: E402
from train_embedder import GarmentNet  # noqa: E402

from shazzam.images import load_image, to_model_input  # noqa: E402
from shazzam.taxonomy import CATEGORIES  # noqa: E402

NAME = "garment_v5"
# Outputs averaged over the centre crop and the whole square (shazzam.images.VIEWS): chosen on CCP
# garment crops the embedder never saw, with training/choose_views.py (layers/models/garment_v5.md).
SERVING_VIEWS = ("centre", "whole")
REPO = Path(__file__).resolve().parent.parent
PARITY_SAMPLES = ("samples/shop/images/dress-01.jpg", "samples/shop/images/shoes-01.jpg", "samples/shop/images/hat-01.jpg")


class ExportedGarment(nn.Module):
    def __init__(self, net: GarmentNet):
        super().__init__()
        self.net = net

    def forward(self, x_nhwc: torch.Tensor):
        embedding, _, logits = self.net(x_nhwc)
        return embedding, torch.softmax(logits, dim=1)


def export_checkpoint(checkpoint_path: Path, out: Path, name: str = NAME, replace: bool = False) -> Path:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    net = GarmentNet(load_backbone(checkpoint.get("backbone", "lite0")), checkpoint["dim"], checkpoint["frozen_blocks"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state"].items()})
    reference = ExportedGarment(round_weights_to_fp16(fold_batchnorms(net))).eval()
    inputs = [to_model_input(load_image((REPO / p).read_bytes())) for p in PARITY_SAMPLES]
    with torch.inference_mode():
        expected = [[t.numpy() for t in reference(torch.from_numpy(x))] for x in inputs]
    out.mkdir(parents=True, exist_ok=True)
    tflite_path = out / f"{name}.tflite"
    staged = convert(reference, inputs[0], staging_path(tflite_path))
    try:
        results, details, ms = run_tflite(staged, inputs)
        mapping = output_mapping(details, checkpoint["dim"], len(CATEGORIES))
        errors = {name: max(relative_error(got[mapping[name]], want[position]) for got, want in zip(results, expected))
                  for position, name in enumerate(("embedding", "probabilities"))}
        log(f"{tflite_path}: {staged.stat().st_size} bytes, relative error vs torch {errors}, {ms:.1f} ms (1 thread)")
        if max(errors.values()) >= MAX_RELATIVE_ERROR:
            raise SystemExit(f"parity {errors} >= {MAX_RELATIVE_ERROR}")
        digest = install(staged, tflite_path, out / f"{name}.json", replace)
    finally:
        staged.unlink(missing_ok=True)
    np.savez_compressed(out / f"{name}.parity.npz", samples=np.array(PARITY_SAMPLES),
                        embedding=np.concatenate([e[0] for e in expected]).astype(np.float32),
                        probabilities=np.concatenate([e[1] for e in expected]).astype(np.float32))
    write_manifest(out, name, tflite_path, digest, mapping, checkpoint["dim"], CATEGORIES)
    manifest_path = out / f"{name}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["input"]["preprocessing"] = "shazzam.images.to_model_input"  # one view: what parity checks
    manifest["input"]["views"] = list(SERVING_VIEWS)
    manifest["parity"] = {"file": f"{name}.parity.npz", "max_relative_error": max(errors.values())}
    summary = checkpoint.get("summary", {})
    manifest["training"] = {k: summary.get(k) for k in ("best_epoch", "seconds", "device", "torch", "packages", "images", "test")} | {
        "args": {k: v for k, v in (summary.get("args") or {}).items() if k not in ("export", "name", "replace", "run_dir", "data")}}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {manifest_path}")
    return tflite_path
