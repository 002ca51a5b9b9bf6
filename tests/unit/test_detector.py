"""The garment detector: boxes from a probability map (specks, letterbox, clipping, scores), the
detector on awkward photos through a fake interpreter, the loader's fallback, and the committed
detector_v2 itself (skipped while it is absent, except in CI)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shazzam import detector as detector_module
from shazzam.detector import (
    CLASSES,
    GarmentDetector,
    Postprocess,
    WholeImageDetector,
    candidate_detections,
    detections_from_probabilities,
    load_detector,
    upsample_bilinear,
)
from shazzam.detector_input import INPUT_HEIGHT, INPUT_WIDTH, detector_input, letterbox_geometry
from shazzam.images import load_image
from shazzam.vision import ModelError
from tests.support.detectors import real_detector_manifest, serve_real_detector

ROWS, COLS, STRIDE = INPUT_HEIGHT // 4, INPUT_WIDTH // 4, 4
SETTINGS = Postprocess(min_area_fraction=0.0004, score_threshold=0.35, stride=STRIDE)


def channel(name: str) -> int:
    return CLASSES.index(name)


def probability_map(*blobs) -> np.ndarray:
    """A softmax-like map: background 0.9 everywhere, each blob (name, rows, cols, p) its class at p."""
    probs = np.full((ROWS, COLS, len(CLASSES)), 0.01, dtype=np.float32)
    probs[..., 0] = 0.9
    for name, rows, cols, p in blobs:
        probs[rows, cols] = (1 - p) / (len(CLASSES) - 1)
        probs[rows, cols, channel(name)] = p
    return probs


def geometry(width: int, height: int):
    return letterbox_geometry(width, height)[0]


def test_one_box_per_class_specks_dropped_back_in_photo_pixels():
    probs = probability_map(
        ("top", slice(10, 30), slice(20, 40), 0.8),
        ("footwear", slice(80, 90), slice(20, 28), 0.9),  # two shoes apart: one footwear box
        ("footwear", slice(82, 92), slice(36, 44), 0.7),
        ("pants", slice(60, 61), slice(5, 6), 0.9),  # one cell: a speck (min 2.5 cells)
    )
    found = detections_from_probabilities(probs, geometry(512, 768), SETTINGS)  # 2:3, scale 0.5, no padding
    by_label = {d.label: d for d in found}
    assert set(by_label) == {"top", "footwear"}
    assert by_label["top"].box.as_list() == [160, 80, 320, 240]  # cells x 4 / 0.5
    assert by_label["footwear"].box.as_list() == [160, 640, 352, 736]
    assert by_label["top"].score == pytest.approx(0.8)
    assert by_label["footwear"].score == pytest.approx((80 * 0.9 + 80 * 0.7) / 160)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    top = by_label["top"]
    assert top.mask.shape == (240 - 80, 320 - 160) and top.mask.all()
    shoes = by_label["footwear"].mask
    assert shoes.shape == (96, 192) and 0.3 < shoes.mean() < 0.7  # the gap between the shoes is not shoe


def test_pieces_much_smaller_than_the_class_largest_do_not_stretch_its_box():
    probs = probability_map(
        ("footwear", slice(80, 90), slice(20, 28), 0.9),  # two shoes of about the same size
        ("footwear", slice(82, 92), slice(36, 44), 0.9),
        ("footwear", slice(40, 43), slice(50, 53), 0.9),  # a stray 9-cell blob at knee height
    )
    stretched = {d.label: d.box for d in detections_from_probabilities(probs, geometry(512, 768), SETTINGS)}
    assert stretched["footwear"].top == 320  # without the rule: the blob is 9 cells, over the speck size
    strict = Postprocess(SETTINGS.min_area_fraction, SETTINGS.score_threshold, min_share_of_largest=0.3, stride=4)
    found = {d.label: d.box for d in detections_from_probabilities(probs, geometry(512, 768), strict)}
    assert found["footwear"].as_list() == [160, 640, 352, 736]  # both shoes kept, the blob dropped


def test_a_product_shot_gives_its_one_garment():
    product = Postprocess(SETTINGS.min_area_fraction, SETTINGS.score_threshold, stride=STRIDE,
                          product_box_fraction=0.35, product_cell_share=0.7)
    shirt_and_guesses = probability_map(
        ("top", slice(10, 80), slice(5, 60), 0.8),  # 63 % of the photo
        ("hat", slice(85, 90), slice(10, 20), 0.9),  # a second guess in a corner, scored higher
        ("dress", slice(40, 60), slice(20, 30), 0.7),  # and one inside the shirt
    )
    assert len(detections_from_probabilities(shirt_and_guesses, geometry(512, 768), SETTINGS)) == 3  # rule off
    (shirt,) = detections_from_probabilities(shirt_and_guesses, geometry(512, 768), product)
    assert shirt.label == "top" and shirt.box.as_list() == [40, 80, 480, 640]

    outfit = probability_map(  # a person at full length: no garment covers a third of the photo
        ("top", slice(10, 40), slice(20, 44), 0.8),
        ("pants", slice(40, 80), slice(22, 42), 0.8),
        ("footwear", slice(80, 88), slice(20, 44), 0.9),
    )
    assert {d.label for d in detections_from_probabilities(outfit, geometry(512, 768), product)} == {"top", "pants", "footwear"}
    close_up = probability_map(  # an open coat whose box fills the photo, and more top than coat between
        ("outerwear", slice(10, 96), slice(0, 14), 0.8),
        ("outerwear", slice(10, 96), slice(50, 64), 0.8),
        ("top", slice(10, 96), slice(14, 50), 0.8),
    )
    assert {d.label for d in detections_from_probabilities(close_up, geometry(512, 768), product)} == {"outerwear", "top"}


def test_letterbox_padding_is_undone_and_cells_outside_the_photo_ignored():
    # 1024x384 fits the 256x384 canvas at scale 0.25 as 256x96, padded 144 above and below.
    box_geometry = geometry(1024, 384)
    assert (box_geometry.scale, box_geometry.pad_x, box_geometry.pad_y) == (0.25, 0, 144)
    probs = probability_map(
        ("dress", slice(30, 50), slice(8, 24), 0.9),  # starts in the padding (rows 30-35 are above the photo)
        ("hat", slice(0, 20), slice(40, 60), 0.9),  # wholly in the padding: not in the photo
    )
    (dress,) = detections_from_probabilities(probs, box_geometry, SETTINGS)
    assert dress.label == "dress"
    assert dress.box.as_list() == [128, 0, 384, 224]  # y from the photo's top edge to (50*4 - 144) / 0.25


def test_cells_in_the_letterbox_padding_neither_score_nor_make_a_garment():
    # The model sees grey padding around a wide photo; what it says there is not in the photo. A
    # bag the photo's cells hold only narrowly (0.3, under the 0.35 threshold) must not be lifted
    # over it by confident cells in the padding next to it: the user would see a bag that is not there.
    box_geometry = geometry(1024, 384)  # the photo is canvas rows 144-240 (cells 36-59), padding around
    probs = probability_map(
        ("bag", slice(50, 60), slice(10, 20), 0.3),  # in the photo, bottom edge
        ("bag", slice(60, 70), slice(10, 20), 0.95),  # just below it, in the padding
        ("bag", slice(26, 36), slice(10, 20), 0.95),  # just above it, in the padding
    )
    probs[50:60, 10:20, 0] = 0.25
    assert detections_from_probabilities(probs, box_geometry, SETTINGS) == []


def test_a_mask_lines_up_with_its_box_in_a_photo_padded_left_and_right():
    # 300x500: scale 0.768, 13 canvas pixels of padding left and right, none above. Two shoes apart
    # make one footwear box: its edge columns are shoe, the gap between them is not.
    probs = probability_map(
        ("footwear", slice(80, 90), slice(10, 20), 0.9),
        ("footwear", slice(80, 90), slice(30, 40), 0.9),
    )
    (shoes,) = detections_from_probabilities(probs, geometry(300, 500), SETTINGS)
    assert shoes.box.as_list() == [35, 416, 192, 469]  # x: (cells x 4 - 13) / 0.768, y: cells x 4 / 0.768
    assert shoes.mask.shape == (469 - 416, 192 - 35)
    row = shoes.mask[shoes.mask.shape[0] // 2]  # 157 pixels: shoe, gap, shoe, 52 each
    assert row[:50].all() and row[-51:-1].all()  # the shoes (the last pixel straddles the box's edge)
    assert not row[55:100].any()  # the gap between them


def test_boxes_are_clipped_to_the_photo():
    # 300x500: scale 0.768, content 230x384 with 13 pixels of padding either side.
    probs = probability_map(("outerwear", slice(0, ROWS), slice(0, COLS), 0.9))
    (coat,) = detections_from_probabilities(probs, geometry(300, 500), SETTINGS)
    assert coat.box.as_list() == [0, 0, 300, 500]


def test_low_scores_and_empty_maps_give_nothing():
    assert detections_from_probabilities(probability_map(), geometry(400, 600), SETTINGS) == []
    # A class that wins its cells only narrowly: below the score threshold.
    weak = probability_map(("bag", slice(10, 20), slice(10, 20), 0.3))
    weak[10:20, 10:20, 0] = 0.25
    assert detections_from_probabilities(weak, geometry(400, 600), SETTINGS) == []
    assert detections_from_probabilities(weak, geometry(400, 600), Postprocess(score_threshold=0.2)) != []


def test_candidates_add_second_guesses_that_the_boxes_shown_leave_out():
    # A skirt the model mostly calls a dress (dress 0.5, skirt 0.4 over its cells) and a weak bag.
    probs = probability_map(("dress", slice(40, 60), slice(20, 40), 0.5), ("bag", slice(10, 20), slice(10, 20), 0.3))
    probs[40:60, 20:40, channel("skirt")] = 0.4
    probs[40:60, 20:40, 0] = 0.0
    probs[10:20, 10:20, 0] = 0.25
    settings = Postprocess(min_area_fraction=0.0004, score_threshold=0.6, stride=4, hypothesis_levels=(0.3, 0.1), hypothesis_weight=0.5)
    assert detections_from_probabilities(probs, geometry(512, 768), settings) == []  # nothing confident to show
    found = [(d.label, d.box.as_list(), round(d.score, 3)) for d in candidate_detections(probs, geometry(512, 768), settings)]
    assert found == [
        ("dress", [160, 320, 320, 480], 0.5),  # the argmax boxes, whatever their score
        ("bag", [80, 80, 160, 160], 0.3),
        ("skirt", [160, 320, 320, 480], 0.2),  # the second guess: skirt >= 0.3 there, at half weight
    ]  # the dress and the bag again at lower levels overlap their own boxes: not listed twice
    assert all(d.mask is None for d in candidate_detections(probs, geometry(512, 768), settings))
    bare = Postprocess(min_area_fraction=0.0004, score_threshold=0.6, stride=4)
    assert [d.label for d in candidate_detections(probs, geometry(512, 768), bare)] == ["dress", "bag"]
    for bad in ({"hypothesis_levels": (1.2,)}, {"hypothesis_levels": (0,)}, {"hypothesis_weight": 0}):
        with pytest.raises(ValueError, match="hypothesis"):
            Postprocess(**bad)


def test_candidates_keep_what_the_product_shot_rule_drops():
    probs = probability_map(("top", slice(10, 90), slice(5, 60), 0.9), ("hat", slice(2, 6), slice(20, 30), 0.7))
    product = Postprocess(min_area_fraction=0.0004, score_threshold=0.35, stride=4, product_box_fraction=0.35, product_cell_share=0.7)
    assert [d.label for d in detections_from_probabilities(probs, geometry(512, 768), product)] == ["top"]
    assert [d.label for d in candidate_detections(probs, geometry(512, 768), product)] == ["top", "hat"]


def test_bilinear_upsampling_worked_by_hand():
    # Pixel centres aligned: output sample j sits at (j + 0.5) / 2 - 0.5 of the input, clamped.
    row = np.array([[[0.0], [1.0]]], dtype=np.float32)  # 1 x 2 x 1
    np.testing.assert_allclose(upsample_bilinear(row, 2)[..., 0], [[0, 0.25, 0.75, 1], [0, 0.25, 0.75, 1]])
    probs = probability_map(("top", slice(10, 30), slice(20, 40), 0.8))
    finer = upsample_bilinear(probs, 2)
    assert finer.shape == (2 * ROWS, 2 * COLS, len(CLASSES))
    np.testing.assert_allclose(finer.sum(axis=-1), probs.sum(axis=-1).repeat(2, 0).repeat(2, 1), rtol=1e-5)
    assert upsample_bilinear(probs, 1) is probs


def test_upsampling_puts_box_edges_between_cells():
    # A column of cells the top wins only narrowly: at stride 4 the box takes it whole, on the 2x
    # grid only the half next to the confident cells.
    probs = probability_map(("top", slice(10, 30), slice(20, 40), 0.8), ("top", slice(10, 30), slice(40, 41), 0.46))
    probs[10:30, 40, 0] = 0.44
    coarse = Postprocess(min_area_fraction=0.0004, score_threshold=0.35, stride=4)
    fine = Postprocess(min_area_fraction=0.0004, score_threshold=0.35, stride=4, upsample=2)
    (whole,) = detections_from_probabilities(probs, geometry(512, 768), coarse)
    (half,) = detections_from_probabilities(probs, geometry(512, 768), fine)
    assert whole.box.as_list() == [160, 80, 328, 240]  # 41 cells x 4 / 0.5
    assert half.box.as_list() == [160, 80, 324, 240]  # half a cell less on the right
    assert half.mask.shape == (240 - 80, 324 - 160)
    for upsample in (0, 3):
        with pytest.raises(ValueError, match=f"upsample {upsample} does not divide"):
            Postprocess(stride=4, upsample=upsample)


class RedIsTopModel:
    """A fake interpreter that sees: cells whose canvas pixels are mostly red are `top`."""

    path = Path("red.tflite")
    input_shape = (1, INPUT_HEIGHT, INPUT_WIDTH, 3)
    output_shapes = [(1, ROWS, COLS, len(CLASSES))]

    def __init__(self):
        self.inputs = []

    def run(self, batch):
        self.inputs.append(batch)
        red = (batch[0, ..., 0] > 200) & (batch[0, ..., 1] < 60)
        share = red.reshape(ROWS, STRIDE, COLS, STRIDE).mean(axis=(1, 3))
        probs = np.zeros((1, ROWS, COLS, len(CLASSES)), np.float32)
        probs[0, ..., channel("top")] = share
        probs[0, ..., 0] = 1 - share
        return [probs]


def test_mirror_averaging_maps_the_mirrored_output_back():
    photo = Image.new("RGB", (256, 384), (127, 127, 127))
    photo.paste((230, 20, 20), (16, 40, 96, 200))  # a red top on the photo's left
    mirrored = {**MANIFEST, "postprocess": {**MANIFEST["postprocess"], "mirror": True}}
    model = RedIsTopModel()
    (top,) = GarmentDetector(model, mirrored).detect(photo)
    assert len(model.inputs) == 2
    np.testing.assert_array_equal(model.inputs[1], model.inputs[0][:, :, ::-1])
    assert top.label == "top" and top.box.as_list() == [16, 40, 96, 200] and top.score == pytest.approx(1.0)
    assert GarmentDetector(RedIsTopModel(), MANIFEST).detect(photo)[0].box == top.box


class FakeModel:
    """Stands in for shazzam.vision.TFLiteModel: answers a fixed probability map."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs
        self.path = Path("fake.tflite")
        self.input_shape = (1, INPUT_HEIGHT, INPUT_WIDTH, 3)
        self.output_shapes = [(1, ROWS, COLS, len(CLASSES))]
        self.inputs = []

    def run(self, batch):
        assert batch.shape == self.input_shape and batch.dtype == np.float32
        self.inputs.append(batch)
        return [self.probs[None]]


MANIFEST = {
    "name": "fake-detector",
    "file": "fake.tflite",
    "outputs": {"probabilities": {"index": 0, "shape": [1, ROWS, COLS, len(CLASSES)], "stride": 4, "classes": list(CLASSES)}},
    "postprocess": {"min_area_fraction": 0.0004, "score_threshold": 0.35},
}


def jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """A 300x200 landscape JPEG whose EXIF says: turn me upright (to 200x300)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW
    return jpeg(Image.new("RGB", (300, 200), (200, 30, 30)), exif=exif.tobytes())


@pytest.mark.parametrize(
    "photo",
    [
        pytest.param(lambda: Image.new("RGB", (1, 1), "red"), id="tiny"),
        pytest.param(lambda: Image.new("RGB", (6000, 4000), "blue"), id="huge"),
        pytest.param(lambda: Image.new("RGB", (4000, 60), "green"), id="panoramic"),
        pytest.param(lambda: Image.new("RGB", (60, 4000), "green"), id="tall"),
        pytest.param(lambda: load_image(jpeg(Image.new("L", (240, 320), 90))), id="greyscale"),
        pytest.param(lambda: load_image(rotated_jpeg()), id="exif-rotated"),
    ],
)
def test_awkward_photos_give_boxes_inside_them(photo):
    image = photo()
    model = FakeModel(probability_map(("top", slice(20, 50), slice(10, 54), 0.9), ("footwear", slice(85, 95), slice(16, 48), 0.9)))
    found = GarmentDetector(model, MANIFEST).detect(image)
    for detection in found:
        box = detection.box
        assert 0 <= box.left < box.right <= image.width and 0 <= box.top < box.bottom <= image.height
        assert detection.label in CLASSES[1:] and detection.mask.shape == (box.bottom - box.top, box.right - box.left)
    assert model.inputs[0].shape == (1, INPUT_HEIGHT, INPUT_WIDTH, 3)
    if image.size == (200, 300):  # upright after EXIF: the 2:3 canvas is filled, both garments are in it
        assert {d.label for d in found} == {"top", "footwear"}


def test_the_detector_feeds_the_model_detector_input():
    image = Image.new("RGB", (500, 300), (10, 20, 30))
    model = FakeModel(probability_map())
    assert GarmentDetector(model, MANIFEST).detect(image) == []
    np.testing.assert_array_equal(model.inputs[0], detector_input(image)[0])


def test_a_manifest_that_disagrees_is_refused():
    model = FakeModel(probability_map())
    wrong = json.loads(json.dumps(MANIFEST))
    wrong["outputs"]["probabilities"]["classes"] = list(reversed(CLASSES))
    with pytest.raises(ModelError, match="classes"):
        GarmentDetector(model, wrong)
    model.output_shapes = [(1, ROWS, COLS, 7)]
    with pytest.raises(ModelError, match="output"):
        GarmentDetector(model, MANIFEST)
    settings = GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": {}}).settings
    assert settings == Postprocess(detector_module.DEFAULT_MIN_AREA_FRACTION, detector_module.DEFAULT_SCORE_THRESHOLD, stride=4)
    for upsample in (0, 3):
        with pytest.raises(ModelError, match="upsample"):
            GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": {"upsample": upsample}})
    product = {"product_box_fraction": 0.35, "product_cell_share": 0.5}
    settings = GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": product}).settings
    assert (settings.product_box_fraction, settings.product_cell_share) == (0.35, 0.5)
    with pytest.raises(ModelError, match="fractions"):
        GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": {"product_cell_share": 50}})
    guesses = {"hypothesis_levels": [0.3, 0.1], "hypothesis_weight": 0.5}
    settings = GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": guesses}).settings
    assert (settings.hypothesis_levels, settings.hypothesis_weight) == ((0.3, 0.1), 0.5)
    for bad in ({"hypothesis_levels": 0.3}, {"hypothesis_levels": [30]}):
        with pytest.raises(ModelError, match="postprocess"):
            GarmentDetector(FakeModel(probability_map()), {**MANIFEST, "postprocess": bad})


def test_without_a_model_the_whole_image_detector_answers(tmp_path, monkeypatch):
    monkeypatch.delenv(detector_module.DETECTOR_ENV, raising=False)
    assert isinstance(load_detector(tmp_path), WholeImageDetector)  # no manifest there
    (tmp_path / "detector_v2.json").write_text(json.dumps({**MANIFEST, "file": "detector_v2.tflite"}))
    assert isinstance(load_detector(tmp_path), WholeImageDetector)  # a manifest without its model
    monkeypatch.setenv(detector_module.DETECTOR_ENV, "whole-image")
    assert isinstance(load_detector(), WholeImageDetector)
    image = Image.new("RGB", (30, 40))
    (whole,) = WholeImageDetector().detect(image)
    assert whole.box.as_list() == [0, 0, 30, 40] and whole.label is None


def test_a_detector_the_environment_names_but_that_is_not_there_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(detector_module.DETECTOR_ENV, "detector_v9")  # a typo must not go unseen
    with pytest.raises(ModelError, match="detector_v9"):
        load_detector(tmp_path)


def test_the_app_looks_for_the_detector_in_its_model_folder(tmp_path, monkeypatch):
    from shazzam.app import App

    monkeypatch.setenv(detector_module.DETECTOR_ENV, "detector_v2")
    with pytest.raises(ModelError, match=str(tmp_path)):
        App(db=None, store=None, model_dir=str(tmp_path)).detector


# --- the committed model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_detector():
    return GarmentDetector.from_manifest(real_detector_manifest())


def test_the_committed_detector_keeps_the_contract(real_detector, monkeypatch):
    manifest = json.loads(real_detector_manifest().read_text())
    assert manifest["input"]["shape"] == [1, INPUT_HEIGHT, INPUT_WIDTH, 3]
    assert manifest["input"]["preprocessing"] == "shazzam.detector_input.detector_input"
    assert manifest["outputs"]["probabilities"]["classes"] == list(CLASSES)
    assert real_detector.settings.stride == 4
    serve_real_detector(monkeypatch)
    assert isinstance(load_detector(), GarmentDetector)  # what the service runs when it is there
    probabilities, _ = real_detector.probabilities(Image.new("RGB", (400, 600), (120, 110, 100)))
    assert probabilities.shape == (ROWS, COLS, len(CLASSES))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-3)


def test_the_committed_detector_finds_nothing_in_an_empty_photo(real_detector):
    for colour in ((127, 127, 127), (255, 255, 255), (20, 20, 20)):
        assert real_detector.detect(Image.new("RGB", (400, 600), colour)) == [], colour


@pytest.mark.parametrize("size", [(1, 1), (5000, 3000), (4000, 60), (60, 4000), (37, 53)])
def test_the_committed_detector_on_awkward_sizes(real_detector, size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    for detection in real_detector.detect(image):
        box = detection.box
        assert 0 <= box.left < box.right <= size[0] and 0 <= box.top < box.bottom <= size[1]


def test_the_committed_detector_copes_with_a_missing_or_altered_file(tmp_path):
    manifest = real_detector_manifest()
    shutil.copy(manifest, tmp_path / manifest.name)
    model_file = json.loads(manifest.read_text())["file"]
    (tmp_path / model_file).write_bytes(b"not the model")
    with pytest.raises(ModelError, match="sha256"):
        GarmentDetector.from_manifest(tmp_path / manifest.name)
