"""How good the garment detector is: the metrics (pure), and `shazzam eval-detector`'s run.

Metrics, over CCP's validation photos (0701-0800; ground truth from shazzam.ccp, one box per
detector class per photo). AP is measured, as detectors' AP is, on the detector's whole ranked list
of scored boxes (shazzam.detector.candidate_detections: each class's box from the argmax map
whatever its score, and its second guesses); recall, the issue's other target, on the boxes the
service shows (GarmentDetector.detect: score threshold, product-shot rule), whose mAP is reported
too (`served`):

- AP per class at an IoU threshold, VOC/COCO style: every prediction of the class over all photos,
  best score first, is a true positive when it overlaps that photo's box of the class by at least
  the threshold (each box is matched once), else a false positive; AP is the area under the
  precision-recall curve with precision made monotone (all-point interpolation, VOC 2010+).
  Classes without a ground-truth box in the photos have no AP and are left out of the means.
- mAP@0.5 the mean of AP@0.5 over classes; mAP@0.5:0.95 the mean of mAP at 0.50, 0.55 .. 0.95.
- recall@0.5 per class: the share of its boxes found at IoU >= 0.5 by the boxes considered.
- latency: median ms per photo of GarmentDetector.detect on one thread (letterbox, the TFLite
  interpreter, boxes), the photo already decoded.
- top-label agreement on clothing-dataset-small's test split: the share of photos whose best
  detection's class is the folder's (shazzam.taxonomy.DETECTOR_CLASS_OF); no detection disagrees.
  Each of those photos shows one garment, so the same pass counts what a product shot should not
  give: the share with exactly one box (of the folder's class), and boxes of other classes per photo.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from shazzam.evaluation import beside_target, writable_folder
from shazzam.regions import iou
from shazzam.taxonomy import DETECTOR_CLASS_OF, DETECTOR_CLASSES

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95

BoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True)
class Predicted:
    label: str
    box: BoxTuple  # left, top, right, bottom (exclusive), photo pixels
    score: float


@dataclass(frozen=True)
class Truth:
    label: str
    box: BoxTuple


# --- metrics (pure) -----------------------------------------------------------------------------


def match(
    predictions: Mapping[str, Sequence[Predicted]], truths: Mapping[str, Sequence[Truth]], label: str, threshold: float
) -> tuple[list[tuple[float, bool]], int]:
    """(score, is a true positive) of each prediction of `label`, best first, and how many truths."""
    scored = sorted(
        ((p.score, photo, p.box) for photo, found in predictions.items() for p in found if p.label == label),
        key=lambda entry: -entry[0],
    )
    boxes = {photo: [t.box for t in found if t.label == label] for photo, found in truths.items()}
    used: dict[str, set[int]] = {}
    outcome = []
    for score, photo, box in scored:
        best, best_iou = None, threshold
        for index, truth in enumerate(boxes.get(photo, [])):
            overlap = iou(box, truth)
            if overlap >= best_iou and index not in used.get(photo, set()):
                best, best_iou = index, overlap
        if best is not None:
            used.setdefault(photo, set()).add(best)
        outcome.append((score, best is not None))
    return outcome, sum(len(b) for b in boxes.values())


def average_precision(outcome: Sequence[tuple[float, bool]], positives: int) -> float | None:
    """Area under the precision-recall curve of `outcome` (see match), all-point interpolated;
    None when there is nothing to find."""
    if positives == 0:
        return None
    hits = np.array([tp for _, tp in outcome], dtype=float)
    if hits.size == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    recall = true_positives / positives
    precision = true_positives / np.arange(1, hits.size + 1)
    # Make precision monotone (the best precision at this recall or any higher), then integrate
    # over the recall steps.
    recall = np.concatenate(([0.0], recall))
    precision = np.concatenate(([0.0], precision))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def recall(outcome: Sequence[tuple[float, bool]], positives: int) -> float | None:
    return None if positives == 0 else sum(tp for _, tp in outcome) / positives


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def detection_metrics(
    predictions: Mapping[str, Sequence[Predicted]],
    truths: Mapping[str, Sequence[Truth]],
    classes: Sequence[str] = DETECTOR_CLASSES,
) -> dict:
    """mAP@0.5, mAP@0.5:0.95 and, per class, AP@0.5, AP@0.5:0.95, recall@0.5 and counts."""
    per_class = {}
    for label in classes:
        aps = []
        for threshold in IOU_THRESHOLDS:
            outcome, positives = match(predictions, truths, label, threshold)
            aps.append(average_precision(outcome, positives))
            if threshold == 0.5:
                found = recall(outcome, positives)
                predicted = len(outcome)
        per_class[label] = {
            "ap50": aps[0],
            "ap50_95": None if aps[0] is None else sum(aps) / len(aps),
            "recall50": found,
            "truths": positives,
            "predicted": predicted,
        }
    return {
        "map50": _mean(entry["ap50"] for entry in per_class.values()),
        "map50_95": _mean(entry["ap50_95"] for entry in per_class.values()),
        "per_class": per_class,
    }


# --- targets ------------------------------------------------------------------------------------

MAP50_TARGET = 0.72
AP50_TARGETS = {"dress": 0.60, "skirt": 0.60, "top": 0.60}
RECALL50_TARGETS = dict.fromkeys(("top", "outerwear", "pants", "skirt", "dress", "footwear"), 0.85)
LATENCY_MS_TARGET = 80.0
MODEL_BYTES_TARGET = 10_000_000
AGREEMENT_TARGET = 0.85


def targets(report: dict) -> list[dict]:
    """Each target of the issue with its measured value and whether it is met (None: not measured)."""
    checks = [("mAP@0.5", report["metrics"]["map50"], MAP50_TARGET, ">=")]
    per_class, shown = report["metrics"]["per_class"], report["served"]["per_class"]
    checks += [(f"AP@0.5 {label}", per_class[label]["ap50"], target, ">=") for label, target in AP50_TARGETS.items()]
    checks += [(f"recall@0.5 {label} (shown)", shown[label]["recall50"], target, ">=") for label, target in RECALL50_TARGETS.items()]
    checks.append(("latency ms/photo (1 thread)", report.get("latency_ms", {}).get("median"), LATENCY_MS_TARGET, "<="))
    checks.append(("model bytes", report.get("model_bytes"), MODEL_BYTES_TARGET, "<="))
    checks.append(("top-label agreement", (report.get("agreement") or {}).get("share"), AGREEMENT_TARGET, ">="))
    return [
        {"name": name, "value": value, "target": target, "op": op, "met": None if value is None else (value >= target if op == ">=" else value <= target)}
        for name, value, target, op in checks
    ]


# --- the run ------------------------------------------------------------------------------------


def evaluate_ccp(detector, ccp, numbers: Sequence[int], progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict, dict, list[float]]:
    """The boxes shown and the candidates (GarmentDetector.detect, .candidates) of the CCP photos
    `numbers`, their ground truth, and detect()'s ms per photo. ImageError for a photo that does
    not line up with its mask."""
    def predicted(found):
        return [Predicted(d.label, tuple(d.box.as_list()), d.score) for d in found if d.label]

    shown: dict[str, list[Predicted]] = {}
    candidates: dict[str, list[Predicted]] = {}
    truths: dict[str, list[Truth]] = {}
    latencies = []
    for done, number in enumerate(numbers, 1):
        photo = ccp.photo(number)
        started = time.perf_counter()
        found = detector.detect(photo)
        latencies.append((time.perf_counter() - started) * 1000)
        key = f"{number:04d}"
        shown[key] = predicted(found)
        candidates[key] = predicted(detector.candidates(photo))
        truths[key] = [Truth(t.label, t.box) for t in ccp.ground_truth(number)]
        if progress:
            progress(done, len(numbers))
    return shown, candidates, truths, latencies


def top_label_agreement(detector, root: Path, split: str = "test", progress=None) -> dict | None:
    """clothing-dataset-small's `split`: the share whose best detection is the folder's class.
    Files that are not images (by suffix, as `shazzam eval` takes them) are passed over; images that
    do not decode are skipped, and named in the report (`unreadable`)."""
    from shazzam.evaluation import IMAGE_SUFFIXES
    from shazzam.images import ImageError, load_image

    folder = Path(root) / split
    if not folder.is_dir():
        return None
    photos = sorted((category.name, path) for category in folder.iterdir() if category.is_dir() for path in category.iterdir()
                    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    per_category: dict[str, list[int]] = {}
    one_box = other_class_boxes = 0
    unreadable = []
    for done, (category, path) in enumerate(photos, 1):
        try:
            image = load_image(path.read_bytes())
        except (ImageError, OSError):  # one bad file of thousands should not cost the whole run
            unreadable.append(str(path))
            continue
        found = detector.detect(image, masks=False)
        wanted = DETECTOR_CLASS_OF.get(category)
        agrees = bool(found) and found[0].label == wanted
        one_box += len(found) == 1 and agrees
        other_class_boxes += sum(d.label != wanted for d in found)
        counts = per_category.setdefault(category, [0, 0])
        counts[0] += agrees
        counts[1] += 1
        if progress:
            progress(done, len(photos))
    total = sum(n for _, n in per_category.values())
    return {
        "share": sum(a for a, _ in per_category.values()) / total if total else None,
        "photos": total,
        "per_category": {category: a / n for category, (a, n) in sorted(per_category.items())},
        "one_box_share": one_box / total if total else None,
        "other_class_boxes_per_photo": other_class_boxes / total if total else None,
        "unreadable": unreadable,
    }


def postprocess_overrides(pairs: Sequence[str]) -> dict:
    """`KEY=VALUE` strings as shazzam.detector.Postprocess fields, typed like their defaults (for
    trying a setting without editing the manifest); ValueError names what is wrong."""
    from dataclasses import asdict

    from shazzam.detector import Postprocess

    defaults = {name: value for name, value in asdict(Postprocess()).items() if name != "stride"}
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"postprocess setting {pair!r} is not KEY=VALUE with KEY one of {', '.join(defaults)}")
        if isinstance(defaults[key], tuple):
            try:
                overrides[key] = tuple(float(level) for level in value.split(",") if level.strip())
            except ValueError:
                raise ValueError(f"postprocess {key} takes numbers separated by commas, not {value!r}") from None
        elif isinstance(defaults[key], bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"postprocess {key} takes true or false, not {value!r}")
            overrides[key] = value.lower() in ("true", "1")
        else:
            try:
                overrides[key] = type(defaults[key])(value)
            except ValueError:
                raise ValueError(f"postprocess {key} takes a number, not {value!r}") from None
    return overrides


def run(manifest: Path, data: Path, small_data: Path | None, out: Path | None = None, progress=None,
        photos: range | None = None, overrides: Mapping[str, object] | None = None) -> dict:
    """The whole evaluation of the detector in `manifest` (see the module's docstring).

    `photos` scores other CCP photos than the validation set (training photos 0601-0700 are where
    postprocess settings are chosen); `overrides` replaces manifest postprocess settings.
    EvaluationError (a ValueError) when `out` cannot be a folder, before anything is measured."""
    from dataclasses import asdict, replace

    from shazzam.ccp import CCP, VALIDATION
    from shazzam.detector import GarmentDetector

    if out is not None:
        writable_folder(out, "--out")
    detector = GarmentDetector.from_manifest(manifest, num_threads=1)
    if overrides:
        detector.settings = replace(detector.settings, **overrides)  # checked by Postprocess itself
    photos = photos or VALIDATION
    ccp = CCP(data)
    numbers = ccp.numbers(photos)
    if not numbers:
        raise FileNotFoundError(f"no CCP photos {photos.start:04d}-{photos.stop - 1:04d} under {data}")
    shown, candidates, truths, latencies = evaluate_ccp(detector, ccp, numbers, progress)
    report = {
        "model": detector.name,
        "manifest": str(manifest),
        "postprocess": {k: v for k, v in asdict(detector.settings).items() if k != "stride"},
        "photos": len(numbers),
        "photo_range": [numbers[0], numbers[-1]],  # those scored: a range may run past the last photo
        "held_out": set(numbers) <= set(VALIDATION),
        "metrics": detection_metrics(candidates, truths),
        "served": detection_metrics(shown, truths),
        "latency_ms": {"median": statistics.median(latencies), "p90": float(np.percentile(latencies, 90)), "threads": 1},
        "model_bytes": detector.model.path.stat().st_size,
        "agreement": top_label_agreement(detector, small_data) if small_data else None,
    }
    report["targets"] = targets(report)
    if out is not None:
        report["picture"] = str(draw_examples(detector, ccp, numbers[:6], shown, truths, Path(out)))
    return report


COLOURS = {
    "top": (230, 25, 75), "outerwear": (245, 130, 48), "pants": (0, 130, 200), "dress": (145, 30, 180), "skirt": (240, 50, 230),
    "footwear": (60, 180, 75), "bag": (128, 128, 0), "hat": (0, 128, 128), "eyewear": (170, 110, 40), "belt": (0, 0, 128),
}


def draw_examples(detector, ccp, numbers, predictions, truths, out: Path, height: int = 480) -> Path:
    """One PNG of the photos side by side: ground truth thin and white-edged, the boxes shown
    thick with class and score, in each class's colour."""
    from PIL import Image, ImageDraw

    tiles = []
    for number in numbers:
        key = f"{number:04d}"
        photo = ccp.photo(number)
        scale = height / photo.height
        photo = photo.resize((round(photo.width * scale), height))
        draw = ImageDraw.Draw(photo)
        for truth in truths[key]:
            box = [v * scale for v in truth.box]
            draw.rectangle(box, outline=(255, 255, 255), width=3)
            draw.rectangle(box, outline=COLOURS[truth.label], width=1)
        for predicted in predictions[key]:
            box = [v * scale for v in predicted.box]
            draw.rectangle(box, outline=COLOURS[predicted.label], width=3)
            text = f"{predicted.label} {predicted.score:.2f}"
            draw.rectangle([box[0], box[1], box[0] + 7 * len(text), box[1] + 12], fill=COLOURS[predicted.label])
            draw.text((box[0] + 2, box[1]), text, fill=(255, 255, 255))
        tiles.append(photo)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{detector.name}-validation.png"
    sheet.save(path)
    return path


def format_report(report: dict) -> str:
    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    metrics, served = report["metrics"], report["served"]
    first, last = report.get("photo_range", (701, 800))
    kind = "validation photos" if report.get("held_out", True) else "photos, TRAINING photos among them (not a held-out figure)"
    lines = [
        f"detector {report['model']} on {report['photos']} CCP {kind} ({first:04d}-{last:04d}); "
        f"postprocess {report['postprocess']}",
        f"all scored boxes: mAP@0.5 {number(metrics['map50'])}   mAP@0.5:0.95 {number(metrics['map50_95'])}",
        f"boxes shown:      mAP@0.5 {number(served['map50'])}   mAP@0.5:0.95 {number(served['map50_95'])}",
        f"{'class':<10} {'AP@0.5':>7} {'AP@.5:.95':>9} {'recall@0.5':>10} {'boxes':>6} {'scored':>6} "
        f"{'shown AP@0.5':>12} {'recall@0.5':>10} {'shown':>6}",
    ]
    for label, entry in metrics["per_class"].items():
        mine = served["per_class"][label]
        lines.append(
            f"{label:<10} {number(entry['ap50']):>7} {number(entry['ap50_95']):>9} {number(entry['recall50']):>10} "
            f"{entry['truths']:>6} {entry['predicted']:>6} {number(mine['ap50']):>12} {number(mine['recall50']):>10} {mine['predicted']:>6}"
        )
    latency = report["latency_ms"]
    lines.append(f"latency {latency['median']:.1f} ms median, {latency['p90']:.1f} ms p90 per photo (1 thread)")
    lines.append(f"model {report['model_bytes'] / 1e6:.2f} MB")
    agreement = report.get("agreement")
    if not agreement:
        lines.append("clothing-dataset-small: not found, agreement not measured")
    elif not agreement["photos"]:
        lines.append("clothing-dataset-small test: no readable photo, agreement not measured")
    else:
        per = ", ".join(f"{c} {s:.0%}" for c, s in agreement["per_category"].items())
        lines.append(f"clothing-dataset-small test: top label agrees on {agreement['share']:.1%} of {agreement['photos']} ({per})")
        lines.append(f"  one garment each: exactly one box, of its class, on {agreement['one_box_share']:.1%}; "
                     f"{agreement['other_class_boxes_per_photo']:.2f} boxes of other classes per photo")
    unreadable = (agreement or {}).get("unreadable")
    if unreadable:
        lines.append(f"  {len(unreadable)} unreadable image(s) skipped: {', '.join(unreadable[:3])}{' ...' if len(unreadable) > 3 else ''}")
    lines.append("targets:")
    for check in report["targets"]:
        verdict = "not measured" if check["met"] is None else ("met" if check["met"] else "NOT MET")
        value = check["value"]
        if value is None:
            shown = "n/a"
        else:
            shown = f"{value:.1f}" if check["name"].startswith("latency") else f"{value:,.0f}" if check["name"] == "model bytes" else f"{value:.3f}"
            shown = beside_target(value, shown, check["target"], at_most=check["op"] == "<=")
        lines.append(f"  {check['name']:<28} {shown:>12} {check['op']} {check['target']:<10} {verdict}")
    if report.get("picture"):
        lines.append(f"picture: {report['picture']}")
    return "\n".join(lines)
