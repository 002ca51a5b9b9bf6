"""Ground truth from label maps and the detection metrics, on cases worked out by hand."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
from PIL import Image

from shazzam import taxonomy
from shazzam.ccp import CCP, channel_map, ground_truth
from shazzam.detection_eval import (
    AP50_TARGETS,
    Predicted,
    Truth,
    average_precision,
    detection_metrics,
    match,
    postprocess_overrides,
    targets,
)
from shazzam.regions import MIN_AREA_FRACTION, components, iou, label_map_regions
from shazzam.taxonomy import DETECTOR_CLASSES
from tests.support.ccp import write_ccp


def brute_force_components(mask: np.ndarray) -> int:
    """8-connected components by breadth-first search: the slow reference."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return count


@pytest.mark.parametrize("seed", range(8))
def test_components_agree_with_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 37)) < (0.2 + 0.08 * seed)
    labels, count = components(mask)
    assert count == brute_force_components(mask)
    assert ((labels > 0) == mask).all()
    # pixels touching (diagonals too) share a label
    for y, x in zip(*np.nonzero(mask)):
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < 40 and 0 <= nx < 37 and mask[ny, nx]:
                assert labels[y, x] == labels[ny, nx]


# CCP-like label numbers for a synthetic mask.
LABELS = ["null", "shirt", "jeans", "shoes", "boots", "skin", "bag"]
LUT = np.asarray(taxonomy.ccp_label_to_channel(LABELS), dtype=np.uint8)


def test_ground_truth_boxes_from_a_mask():
    mask = np.zeros((1000, 600), dtype=np.uint8)  # 600,000 px: specks are under 120 px
    mask[100:400, 150:450] = 1  # shirt -> top
    mask[390:800, 180:420] = 2  # jeans -> pants
    mask[900:950, 180:260] = 3  # shoes and boots: both footwear, one box over both
    mask[905:960, 340:420] = 4
    mask[500:510, 10:20] = 1  # a 100 px fleck of shirt far away: a speck
    mask[0:1000, 0:5] = 5  # skin: not a garment
    mask[600:700, 500:560] = 6  # bag
    truths = {t.label: t for t in ground_truth(channel_map(mask, LUT))}
    assert set(truths) == {"top", "pants", "footwear", "bag"}
    assert truths["top"].box == (150, 100, 450, 400)  # the jeans cover the middle of its last rows only
    assert truths["pants"].box == (180, 390, 420, 800)
    assert truths["footwear"].box == (180, 900, 420, 960)
    assert truths["footwear"].area == 50 * 80 + 55 * 80
    assert truths["bag"].box == (500, 600, 560, 700)
    # without speck removal the fleck stretches the top's box
    loose = {t.label: t for t in ground_truth(channel_map(mask, LUT), min_area_fraction=0)}
    assert loose["top"].box == (10, 100, 450, 510)
    assert MIN_AREA_FRACTION * mask.size == pytest.approx(120)


def test_a_component_of_exactly_min_pixels_is_kept():
    # min_pixels is the smallest garment kept: a shoe of exactly that size is a shoe, not a speck
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[2:6, 2:6] = 1  # 16 pixels
    label_map[10:13, 10:15] = 2  # 15 pixels
    regions = label_map_regions(label_map, [1, 2], min_pixels=16)
    assert [(region.label, region.box(), region.area) for region in regions] == [(1, (2, 2, 6, 6), 16)]


def test_the_real_ccp_labels_map_onto_detector_channels(shared_data):
    ccp = CCP(shared_data / "ccp")
    assert len(ccp.labels) == 59 and ccp.lut[0] == 0
    assert ccp.lut[ccp.labels.index("jeans")] == DETECTOR_CLASSES.index("pants") + 1
    truths = ccp.ground_truth(701)
    assert truths and {t.label for t in truths} <= set(DETECTOR_CLASSES)
    height, width = ccp.channel_map(701).shape
    assert all(0 <= t.box[0] < t.box[2] <= width and 0 <= t.box[1] < t.box[3] <= height for t in truths)


def test_garment_crops_are_cut_by_each_categorys_box(tmp_path):
    labels = ["null", "shirt", "jeans", "shoes", "skin", "blouse"]
    mask = np.zeros((200, 100), dtype=np.uint8)  # 20,000 px: a garment needs 200 (1 %)
    mask[20:80, 20:80] = 1  # shirt -> shirt
    mask[80:180, 30:70] = 2  # jeans -> pants
    mask[180:195, 0:10] = 3  # shoes: 150 px, under 1 % of the photo
    mask[0:200, 90:100] = 4  # skin: no category
    mask[0:15, 0:20] = 5  # blouse: CCP_CATEGORY names no category for it
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 100, 3), dtype=np.uint8))
    sideways = picture.transpose(Image.Transpose.ROTATE_90)  # unlike its mask: skipped
    thin = np.zeros((200, 100), dtype=np.uint8)
    thin[0:200, 40:60] = 2  # 4,000 px of jeans, but 20 px wide: under MIN_CROP_SIDE
    root = write_ccp(tmp_path / "ccp", labels, {1: (picture, mask), 2: (sideways, mask), 3: (picture, thin), 701: (picture, mask)})
    crops = list(CCP(root).garment_crops(range(1, 701)))
    assert [(number, category, crop.size) for number, category, crop in crops] == [(1, "pants", (40, 100)), (1, "shirt", (60, 60))]
    assert [number for number, _, _ in CCP(root).garment_crops(range(701, 801))] == [701, 701]


def test_a_photo_turned_by_exif_away_from_its_mask_is_refused_by_the_judge(tmp_path):
    """The masks are drawn on the photos as stored; upright (as the service sees it), a photo
    with an EXIF rotation no longer lines up with its mask, and its boxes cannot be judged."""
    from shazzam.detection_eval import evaluate_ccp
    from shazzam.images import ImageError
    from tests.support.detectors import FixedDetector

    mask = np.zeros((200, 100), dtype=np.uint8)
    mask[20:80, 20:80] = 1
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 100, 3), dtype=np.uint8))
    root = write_ccp(tmp_path / "ccp", ["null", "shirt"], {701: (picture, mask), 702: (picture, mask)})
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees to show
    picture.save(root / "photos" / "0702.jpg", exif=exif)
    ccp = CCP(root)
    assert ccp.photo(701).size == (100, 200)
    with pytest.raises(ImageError, match="0702 is 200x100 upright but its mask is 100x200"):
        ccp.photo(702)
    with pytest.raises(ImageError, match="0702"):
        evaluate_ccp(FixedDetector(), ccp, [702])
    assert [number for number, _, _ in ccp.garment_crops(range(701, 801))] == [701]  # a street crop fewer


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


def test_average_precision_worked_by_hand():
    # 3 tops in 3 photos; predictions by score: a hit, a miss (wrong place), a hit; photo c's top
    # is never found. Precision/recall: 1/1 at 1/3, 1/2 at 1/3, 2/3 at 2/3; made monotone, the
    # precision is 1 up to recall 1/3 and 2/3 up to 2/3: AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
    truths = {name: [Truth("top", (0, 0, 100, 100))] for name in ("a", "b", "c")}
    predictions = {
        "a": [Predicted("top", (0, 0, 100, 90), 0.9)],  # IoU 0.9
        "b": [Predicted("top", (60, 60, 160, 160), 0.8)],  # IoU 0.09: a false positive
        "d": [],
        "c": [Predicted("pants", (0, 0, 100, 100), 0.99)],  # another class: not a top
    }
    predictions["d"] = [Predicted("top", (0, 0, 50, 50), 0.7)]  # a photo with no top: false positive
    predictions["b"].append(Predicted("top", (0, 0, 100, 100), 0.75))
    # (b now has two tops; the second, a perfect one, is the hit at 0.75; d's is a miss at 0.7)
    outcome, positives = match(predictions, truths, "top", 0.5)
    assert positives == 3 and outcome == [(0.9, True), (0.8, False), (0.75, True), (0.7, False)]
    assert average_precision(outcome, positives) == pytest.approx(5 / 9)
    # at IoU 0.95 only b's perfect box counts: precision 1/3 at recall 1/3 (monotone: 1/2 up to it)
    outcome, _ = match(predictions, truths, "top", 0.95)
    assert outcome == [(0.9, False), (0.8, False), (0.75, True), (0.7, False)]
    assert average_precision(outcome, 3) == pytest.approx(1 / 3 * 1 / 3)
    assert average_precision([], 3) == 0.0 and average_precision([(0.5, False)], 0) is None


def test_a_box_is_matched_once():
    truths = {"a": [Truth("dress", (0, 0, 10, 10))]}
    predictions = {"a": [Predicted("dress", (0, 0, 10, 10), 0.9), Predicted("dress", (0, 0, 10, 9), 0.8)]}
    outcome, _ = match(predictions, truths, "dress", 0.5)
    assert outcome == [(0.9, True), (0.8, False)]


def test_metrics_and_targets():
    truths = {"1": [Truth("top", (0, 0, 10, 10)), Truth("skirt", (0, 10, 10, 20))], "2": [Truth("top", (0, 0, 10, 10))]}
    predictions = {"1": [Predicted("top", (0, 0, 10, 10), 0.9), Predicted("skirt", (0, 14, 10, 20), 0.8)], "2": []}
    metrics = detection_metrics(predictions, truths)
    top, skirt = metrics["per_class"]["top"], metrics["per_class"]["skirt"]
    assert top["ap50"] == pytest.approx(0.5) and top["recall50"] == 0.5 and top["truths"] == 2
    assert top["ap50_95"] == pytest.approx(0.5)  # a perfect box: a hit at every threshold
    assert skirt["ap50"] == 1.0 and skirt["ap50_95"] == pytest.approx(0.3)  # IoU 0.6: hits at .5, .55, .6
    assert metrics["per_class"]["bag"]["ap50"] is None  # no bag to find: left out of the mean
    assert metrics["map50"] == pytest.approx(0.75) and metrics["map50_95"] == pytest.approx(0.4)
    # the boxes shown: the confident top of that list (here the top alone), judged on recall
    shown = detection_metrics({"1": predictions["1"][:1], "2": []}, truths)
    report = {"metrics": metrics, "served": shown, "latency_ms": {"median": 12.0}, "model_bytes": 2_000_000, "agreement": None}
    checks = {check["name"]: check for check in targets(report)}
    assert checks["mAP@0.5"]["met"] is True and checks["AP@0.5 top"]["met"] is False
    assert checks["recall@0.5 skirt (shown)"]["value"] == 0.0 and checks["recall@0.5 top (shown)"]["value"] == 0.5
    assert checks["AP@0.5 dress"]["met"] is None  # nothing measured
    assert checks["latency ms/photo (1 thread)"]["met"] is True and checks["model bytes"]["met"] is True
    assert checks["top-label agreement"]["met"] is None
    assert set(AP50_TARGETS) == {"dress", "skirt", "top"}
    json.dumps(report)  # --json prints it


def test_postprocess_overrides_are_typed_and_checked():
    assert postprocess_overrides(["upsample=2", "mirror=true", "score_threshold=0.5"]) == {"upsample": 2, "mirror": True, "score_threshold": 0.5}
    assert postprocess_overrides(["mirror=0"]) == {"mirror": False}
    assert postprocess_overrides([]) == {}
    assert postprocess_overrides(["hypothesis_levels=0.3,0.1"]) == {"hypothesis_levels": (0.3, 0.1)}
    assert postprocess_overrides(["hypothesis_levels="]) == {"hypothesis_levels": ()}
    for bad, says in (("upsample", "KEY=VALUE"), ("stride=2", "KEY=VALUE"), ("colour=red", "KEY=VALUE"),
                      ("mirror=maybe", "true or false"), ("upsample=two", "a number"),
                      ("hypothesis_levels=0.3;0.1", "separated by commas")):
        with pytest.raises(ValueError, match=says):
            postprocess_overrides([bad])


def test_agreement_counts_what_a_product_shot_should_not_give(tmp_path):
    from PIL import Image

    from shazzam.detection_eval import format_report, top_label_agreement
    from tests.support.detectors import FixedDetector

    for category in ("dress", "pants"):
        (tmp_path / "test" / category).mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (40, 60), "white").save(tmp_path / "test" / category / f"{n}.png")
    # a dress alone, and a dress over a hat and a belt: right top label on the dress photos only
    detector = FixedDetector((("dress", 0.9, (0.1, 0.1, 0.9, 0.9)),))
    one = top_label_agreement(detector, tmp_path)
    assert one["share"] == 0.5 and one["per_category"] == {"dress": 1.0, "pants": 0.0}
    assert one["one_box_share"] == 0.5 and one["other_class_boxes_per_photo"] == 0.5  # the pants photos' dress
    detector = FixedDetector((("dress", 0.9, (0.1, 0.1, 0.9, 0.9)), ("hat", 0.6, (0, 0, 1, 1)), ("belt", 0.4, (0.2, 0.5, 0.8, 0.6))))
    three = top_label_agreement(detector, tmp_path)
    assert three["share"] == 0.5 and three["one_box_share"] == 0.0
    assert three["other_class_boxes_per_photo"] == 2.5  # hat and belt on each photo, the dress on the pants photos
    report = {"model": "fixed", "photos": 0, "photo_range": [701, 800], "held_out": True, "postprocess": {},
              "metrics": detection_metrics({}, {}), "served": detection_metrics({}, {}),
              "latency_ms": {"median": 1.0, "p90": 1.0}, "model_bytes": 1,
              "agreement": three}
    assert "exactly one box, of its class, on 0.0%; 2.50 boxes of other classes per photo" in format_report({**report, "targets": targets(report)})
    # a figure just under its target is not printed rounded up to it, beside "NOT MET"
    below = {**report, "metrics": {**report["metrics"], "map50": 0.7196}}
    line = next(line for line in format_report({**below, "targets": targets(below)}).splitlines() if line.strip().startswith("mAP@0.5 "))
    assert line.split()[1:] == ["0.7196", ">=", "0.72", "NOT", "MET"]


def test_agreement_passes_over_other_files_and_skips_unreadable_images(tmp_path):
    """A stray file in clothing-dataset-small (notes, .DS_Store, a broken download) used to abort
    eval-detector after its whole CCP pass, naming no file."""
    from shazzam.detection_eval import format_report, top_label_agreement
    from tests.support.detectors import FixedDetector

    (tmp_path / "test" / "dress").mkdir(parents=True)
    Image.new("RGB", (40, 60), "white").save(tmp_path / "test" / "dress" / "0.png")
    (tmp_path / "test" / "dress" / "notes.txt").write_text("not an image, not a photo to count")
    (tmp_path / "test" / "dress" / "broken.jpg").write_bytes(b"not a picture")
    agreement = top_label_agreement(FixedDetector((("dress", 0.9, (0.1, 0.1, 0.9, 0.9)),)), tmp_path)
    assert agreement["photos"] == 1 and agreement["share"] == 1.0
    assert agreement["unreadable"] == [str(tmp_path / "test" / "dress" / "broken.jpg")]
    report = {"model": "fixed", "photos": 0, "photo_range": [701, 800], "held_out": True, "postprocess": {},
              "metrics": detection_metrics({}, {}), "served": detection_metrics({}, {}),
              "latency_ms": {"median": 1.0, "p90": 1.0}, "model_bytes": 1, "agreement": agreement}
    assert f"1 unreadable image(s) skipped: {tmp_path}/test/dress/broken.jpg" in format_report({**report, "targets": targets(report)})
    (tmp_path / "test" / "dress" / "0.png").write_bytes(b"broken too")
    nothing = top_label_agreement(FixedDetector(), tmp_path)
    assert nothing["photos"] == 0 and len(nothing["unreadable"]) == 2
    report["agreement"] = nothing
    assert "no readable photo, agreement not measured" in format_report({**report, "targets": targets(report)})


def test_an_out_folder_that_cannot_be_made_is_refused_before_the_ccp_pass(tmp_path, capsys):
    """It used to fail in drawing the picture, after the whole evaluation, and print no report."""
    from shazzam import cli
    from shazzam.detection_eval import run
    from shazzam.evaluation import EvaluationError

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    manifest = tmp_path / "detector.json"
    manifest.write_text("{}")  # never read: the folder is refused first
    with pytest.raises(EvaluationError, match="^--out .*a-file/pictures: cannot make that folder"):
        run(manifest, tmp_path / "ccp", None, a_file / "pictures")
    assert cli.main(["eval-detector", "--model", str(manifest), "--data", str(tmp_path), "--small-data", "",
                     "--out", str(a_file / "pictures")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shazzam eval-detector: --out ") and err.count("\n") == 1
