"""Export a train_detector.py checkpoint to layers/models/<name>.{tflite,json,parity.npz}.

    .venv-train/bin/python training/train_detector.py --run-dir build/detector_v3 --export layers/models --name detector_v3

A name whose manifest describes another network is refused (export_tflite.install; --replace to
overwrite on purpose).

The .tflite takes `shazzam.detector_input.detector_input(image)` (float32 [1, 384, 256, 3], raw
RGB) and returns per-pixel probabilities [1, 96, 64, 11] (background + the taxonomy's detector
classes) at stride 4; fp16 weights, float32 arithmetic (see export_tflite.py). The parity file
holds the PyTorch reference's output for two bundled sample photos, so a test without torch can
check the .tflite against it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_tflite import MAX_RELATIVE_ERROR, convert, fold_batchnorms, install, relative_error, round_weights_to_fp16, run_tflite, staging_path  # noqa: E402
from common import load_backbone, log  # noqa: E402
from train_detector import CHANNELS, ExportedParser, GarmentParser  # noqa: E402

from shazzam.detector_input import INPUT_HEIGHT, INPUT_WIDTH, detector_input  # noqa: E402
from shazzam.images import load_image  # noqa: E402
from shazzam.taxonomy import DETECTOR_CLASSES  # noqa: E402

NAME = "detector_v2"
REPO = Path(__file__).resolve().parent.parent
PARITY_SAMPLES = ("samples/shop/images/dress-01.jpg", "samples/shop/images/pants-01.jpg")
# Chosen on detector_v1's output (kept for detector_v2) and on training photos (never on the held-out
# 0701-0800), with `shazzam eval-detector --photos 601-700 --postprocess KEY=VALUE`: dropping a class's pieces under 30 % of its largest raised mAP@0.5
# on 0601-0700 from 0.692 to 0.710 (the area and score thresholds barely mattered); then, on 0401-0700,
# upsampling the probabilities 2x before the argmax raised it from 0.728 to 0.742 for 6 % more time.
# Averaging with the mirrored photo as well reached 0.748 but runs the model twice (79.5 against 44.6
# ms per photo on this machine that day, against the 80 ms budget), so it stays off. Last, the score
# threshold 0.35 -> 0.6 for product shots (one garment each), chosen on 0401-0700 and 40 images per
# class of clothing-dataset-small `train`: boxes of other classes per product shot 2.65 -> 0.46 for
# mAP@0.5 0.742 -> 0.731 (the largest threshold that cost about 0.01; 0.65 cost 0.028). Then, on
# the same photos, the product-shot rule (a garment whose box covers >= 35 % of the photo and holds
# >= 70 % of the garment cells is returned alone): exactly one box on 59.5 % -> 84.3 % of the
# product shots at no cost on 0401-0700. A share of 0.5 gave 87.5 %, but would also take a close-up
# of a coat open over a top for a product shot; 0401-0700 are full-length photos and cannot show that.
# The second guesses that the ranked list (the mAP) adds, not the boxes shown: on 0401-0700 (the
# `--postprocess hypothesis_levels=... --postprocess hypothesis_weight=...` grid in detector_v2.md),
# levels 0.3 and 0.1 at half weight scored best, mAP@0.5 over all scored boxes 0.808 -> 0.838.
POSTPROCESS = {
    "min_area_fraction": 0.0004, "score_threshold": 0.6, "min_share_of_largest": 0.3, "upsample": 2, "mirror": False,
    "product_box_fraction": 0.35, "product_cell_share": 0.7, "hypothesis_levels": [0.3, 0.1], "hypothesis_weight": 0.5,
}


def load_checkpoint(path: Path) -> tuple[ExportedParser, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    parser = GarmentParser(load_backbone())
    parser.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state"].items()})
    reference = ExportedParser(round_weights_to_fp16(fold_batchnorms(parser))).eval()
    return reference, checkpoint.get("summary", {})


def recorded_args(args: dict) -> dict:
    """The training run's arguments as the manifest records them: the data folders by name (the
    paths are one machine's), without the export's own arguments."""
    return {k: Path(v).name if k in ("ccp", "clothing") and v else v for k, v in args.items()
            if k not in ("export", "run_dir", "name", "replace")}


def export_checkpoint(checkpoint: Path, out: Path, name: str = NAME, replace: bool = False) -> Path:
    reference, summary = load_checkpoint(checkpoint)
    images = [load_image((REPO / p).read_bytes()) for p in PARITY_SAMPLES]
    inputs = [detector_input(image)[0] for image in images]
    with torch.inference_mode():
        expected = [reference(torch.from_numpy(x)).numpy() for x in inputs]
    out.mkdir(parents=True, exist_ok=True)
    tflite_path = out / f"{name}.tflite"
    staged = convert(reference, inputs[0], staging_path(tflite_path))
    try:
        results, details, ms = run_tflite(staged, inputs)
        if [list(d["shape"]) for d in details] != [[1, INPUT_HEIGHT // 4, INPUT_WIDTH // 4, CHANNELS]]:
            raise SystemExit(f"unexpected outputs {[list(d['shape']) for d in details]}")
        error = max(relative_error(got[0], want) for got, want in zip(results, expected))
        log(f"{tflite_path}: {staged.stat().st_size} bytes, relative error vs torch {error:.2e}, {ms:.1f} ms (1 thread)")
        if error >= MAX_RELATIVE_ERROR:
            raise SystemExit(f"parity {error:.2e} >= {MAX_RELATIVE_ERROR}")
        digest = install(staged, tflite_path, out / f"{name}.json", replace)
    finally:
        staged.unlink(missing_ok=True)
    np.savez_compressed(out / f"{name}.parity.npz", samples=np.array(PARITY_SAMPLES),
                        probabilities=np.concatenate(expected).astype(np.float32))
    manifest = {
        "name": name,
        "file": tflite_path.name,
        "sha256": digest,
        "input": {"shape": [1, INPUT_HEIGHT, INPUT_WIDTH, 3], "dtype": "float32", "range": "raw RGB 0..255",
                  "preprocessing": "shazzam.detector_input.detector_input"},
        "outputs": {"probabilities": {"index": 0, "shape": [1, INPUT_HEIGHT // 4, INPUT_WIDTH // 4, CHANNELS],
                                      "stride": 4, "classes": ["background", *DETECTOR_CLASSES]}},
        "postprocess": POSTPROCESS,
        "parity": {"file": f"{name}.parity.npz", "max_relative_error": error},
        "training": {k: summary.get(k) for k in ("train_seconds", "device", "torch", "packages", "photos")}
        | {"args": recorded_args(summary.get("args") or {})},
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out / name}.json")
    return tflite_path
