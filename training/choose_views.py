"""Choose the views a garment model is served with, on data its training never saw.

    .venv/bin/python training/choose_views.py --ccp ../shared/data/ccp \
        --data ../shared/data/clothing-dataset-small --model layers/models/garment_v5.json [--json]

The embedder is trained on clothing-dataset-small `train` + `validation`, and its `test` split is
the judge (`shazzam eval`), so the choice belongs elsewhere: on crops of CCP photos 0001-0700,
people in the street, which no garment model up to garment_v5 has seen. (A model trained with
`train_embedder.py --ccp` has seen them, and CCP's only other photos, 0701-0800, are the judge of
`shazzam eval --ccp`: for such a model no CCP photo is left to choose on; take its views as they
are, or leave some of 0001-0700 out of its training with `--ccp-photos` and choose on those.) Each garment whose CCP label names one
catalogue category (`shazzam.taxonomy.CCP_CATEGORY`; all the pixels of that category in the photo,
if they cover at least 1 % of it) is cut out by its mask's box, as the detector's box would be
(`shazzam.ccp.CCP.garment_crops`), and standardised. For each candidate set of views the model's outputs
are averaged over the views (as `GarmentModel.infer` does), then:

- precision@10 and mAP@10: the crops searched against the clothing-dataset-small gallery
  (train + validation) with the index's search (`shazzam.evaluation.retrieval_figures`);
- accuracy: the classifier's top category against the crop's.

The domain differs (street photos against product shots), so the figures are low; they are for
comparing candidates. Besides the served views of `shazzam.images.VIEWS` (centre, whole), two
candidates live here only: `mirror` (the centre view flipped) and `tight` (the centre 75 % of the
standardised square). Runs in the service's venv: no torch.

garment_v5's views (centre + whole) were not chosen here first: they were chosen on the test split,
then checked here, where `whole` alone scores higher and centre + whole is the only set that beats
the single centre view both here and on the test split (its model card has both tables).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shazzam import evaluation
from shazzam import ccp
from shazzam.ccp import CCP, TRAINING
from shazzam.images import (
    MODEL_INPUT_SIZE,
    STANDARD_SIZE,
    VIEWS,
    ImageError,
    load_image,
    model_input,
    standardise_img,
)
from shazzam.vision import GarmentModel

def tight_view(standardised: Image.Image) -> Image.Image:
    side = round(STANDARD_SIZE * 0.75)
    margin = (STANDARD_SIZE - side) // 2
    return standardised.crop((margin, margin, margin + side, margin + side)).resize(
        (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), Image.Resampling.BILINEAR)


CANDIDATE_VIEWS = {**VIEWS, "mirror": lambda s: ImageOps.mirror(VIEWS["centre"](s)), "tight": tight_view}
DEFAULT_CANDIDATES = ("centre", "whole", "centre+whole", "centre+mirror", "centre+tight", "tight+whole")


def ccp_crops(root: Path, photos: range) -> tuple[list[Image.Image], np.ndarray]:
    """The standardised crop and catalogue category of every garment CCP_CATEGORY names."""
    garments = list(CCP(root).garment_crops(photos))
    return [standardise_img(crop) for _, _, crop in garments], np.array([category for _, category, _ in garments])


def view_outputs(model: GarmentModel, images: list[Image.Image], views: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{view: (raw embeddings, probabilities)} of each standardised image, one view at a time."""
    out = {}
    for view in sorted(views):
        embeddings = np.zeros((len(images), model.embedding_dim), np.float32)
        probabilities = np.zeros((len(images), len(model.categories)), np.float32)
        for row, image in enumerate(images):
            embeddings[row], probabilities[row] = (output[0] for output in model.outputs(model_input(CANDIDATE_VIEWS[view](image))))
        out[view] = (embeddings, probabilities)
    return out


def training_photos(text: str) -> range:
    """--photos: CCP photo numbers within the training photos (shazzam.ccp.training_photos)."""
    try:
        return ccp.training_photos(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ccp", default="../shared/data/ccp")
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small")
    parser.add_argument("--model", default="layers/models/garment_v5.json", help="a garment model's manifest")
    parser.add_argument("--photos", default=f"{TRAINING.start}-{TRAINING.stop - 1}", type=training_photos,
                        help="CCP photo numbers FIRST-LAST, within the training photos 1-700")
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                        help=f"comma-separated view sets, views joined by '+', from {sorted(CANDIDATE_VIEWS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    candidates = [tuple(c.split("+")) for c in args.candidates.split(",")]
    unknown = {v for c in candidates for v in c} - set(CANDIDATE_VIEWS)
    if unknown:
        parser.error(f"unknown views {sorted(unknown)}: choose from {sorted(CANDIDATE_VIEWS)}")
    started = time.perf_counter()
    model = GarmentModel.from_manifest(args.model, num_threads=args.threads)
    crops, categories = ccp_crops(Path(args.ccp), args.photos)
    dataset = evaluation.load_dataset(args.data)
    gallery, gallery_labels, refused = [], [], 0
    for item in (item for split in evaluation.GALLERY_SPLITS for item in dataset[split]):
        try:
            gallery.append(standardise_img(load_image(item.path.read_bytes())))
        except ImageError:
            refused += 1
            continue
        gallery_labels.append(item.label)
    gallery_labels = np.array(gallery_labels)
    if refused:
        print(f"refused {refused} unreadable gallery image(s)", file=sys.stderr)
    views = {v for c in candidates for v in c}
    print(f"{len(crops)} CCP crops, {len(gallery)} gallery images, views {sorted(views)}", file=sys.stderr, flush=True)
    crop_outputs, gallery_outputs = view_outputs(model, crops, views), view_outputs(model, gallery, views)
    rows = []
    for candidate in candidates:
        queries = np.mean([crop_outputs[v][0] for v in candidate], axis=0)
        probabilities = np.mean([crop_outputs[v][1] for v in candidate], axis=0)
        figures = evaluation.retrieval_figures(queries, categories, np.mean([gallery_outputs[v][0] for v in candidate], axis=0),
                                               gallery_labels)
        accuracy = float(np.mean(np.array(model.categories)[probabilities.argmax(axis=1)] == categories))
        rows.append({"views": list(candidate), "precision_at_10": figures["precision_at_10"],
                     "map_at_10": figures["map_at_10"], "accuracy": accuracy})
    photos = f"{args.photos.start}-{args.photos.stop - 1}"
    report = {"model": model.name, "ccp_photos": photos, "crops": len(crops),
              "crops_per_category": {c: int(np.sum(categories == c)) for c in model.categories},
              "candidates": rows, "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{model.name} on {len(crops)} crops of CCP photos {photos} ({report['seconds']} s)")
        print(f"{'views':<16} {'P@10':>6} {'mAP@10':>7} {'accuracy':>8}")
        for row in rows:
            print(f"{'+'.join(row['views']):<16} {row['precision_at_10']:>6.3f} {row['map_at_10']:>7.3f} {row['accuracy']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
