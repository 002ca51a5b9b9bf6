"""`shazzam eval`: the metric functions against hand-computed answers, the re-photograph transform,
the refusals (test images in the gallery, a model unlike its manifest), and the whole core on a
handful of real images from ../shared/data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shazzam import cli, evaluation, taxonomy
from shazzam.evaluation import (
    EmbeddingCache,
    EvaluationError,
    Item,
    average_precision_at_k,
    check_disjoint,
    confusion_matrix,
    mean_average_precision_at_k,
    misclassified_sheet,
    precision_at_k,
    recall_at_k,
    retrieval_figures,
    verify_manifest,
)
from shazzam.rephotograph import perspective_coefficients, phone_photo, rephotograph, rephotograph_jpeg
from tests.support.ccp import write_ccp

MODELS = Path(__file__).resolve().parents[2] / "layers" / "models"


# --- metrics, by hand ---


def test_precision_at_k_by_hand():
    relevant = np.array([[1, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
    assert precision_at_k(relevant, 1) == pytest.approx((1 + 0) / 2)
    assert precision_at_k(relevant, 2) == pytest.approx((0.5 + 0) / 2)
    assert precision_at_k(relevant, 4) == pytest.approx((0.75 + 0.25) / 2)
    with pytest.raises(ValueError):
        precision_at_k(relevant, 5)


def test_average_precision_at_10_by_hand():
    first_and_third = np.zeros((1, 10), bool)
    first_and_third[0, [0, 2]] = True
    # precision@1 = 1 at the first hit, precision@3 = 2/3 at the second: (1 + 2/3) / min(10, R)
    assert average_precision_at_k(first_and_third, 2, 10)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(first_and_third, 50, 10)[0] == pytest.approx((1 + 2 / 3) / 10)
    perfect = np.ones((1, 10), bool)
    assert average_precision_at_k(perfect, 300, 10)[0] == pytest.approx(1.0)
    last_only = np.zeros((1, 10), bool)
    last_only[0, 9] = True
    assert average_precision_at_k(last_only, 100, 10)[0] == pytest.approx(0.1 / 10)
    nothing = np.zeros((1, 10), bool)
    assert average_precision_at_k(nothing, 0, 10)[0] == 0.0
    both = np.concatenate([first_and_third, perfect])
    assert mean_average_precision_at_k(both, np.array([2, 300]), 10) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_a_miss_ranked_higher_costs_more():
    early_miss = np.ones((1, 10), bool)
    early_miss[0, 0] = False
    late_miss = np.ones((1, 10), bool)
    late_miss[0, 9] = False
    assert precision_at_k(early_miss, 10) == precision_at_k(late_miss, 10) == pytest.approx(0.9)
    assert average_precision_at_k(early_miss, 100)[0] < average_precision_at_k(late_miss, 100)[0]
    assert average_precision_at_k(late_miss, 100)[0] == pytest.approx(0.9)
    # 2/2 + 3/3 + ... + 10/10 minus what the early miss costs: sum_{i=2..10} (i-1)/i over 10
    assert average_precision_at_k(early_miss, 100)[0] == pytest.approx(sum((i - 1) / i for i in range(2, 11)) / 10)


def test_recall_at_k_by_hand():
    found = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    assert recall_at_k(found, 1) == pytest.approx(1 / 4)
    assert recall_at_k(found, 2) == pytest.approx(2 / 4)
    assert recall_at_k(found, 3) == pytest.approx(3 / 4)


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(["a", "a", "b", "c", "c"], ["a", "b", "b", "a", "c"], ["a", "b", "c"])
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="'z'"):
        confusion_matrix(["a"], ["z"], ["a", "b"])


def test_nearest_is_the_index_search():
    from shazzam.distance import l1_topk_u8, l2_normalise, quantise
    from shazzam.index import Shard

    rng = np.random.default_rng(0)
    gallery = rng.uniform(0, 1, size=(50, 24)).astype(np.float32)
    queries = rng.uniform(0, 1, size=(5, 24)).astype(np.float32)
    if evaluation.GalleryIndex.uses_shard():
        expected, _ = Shard.from_vectors("g", [str(i) for i in range(50)], gallery).search_rows(queries, 10)
    else:
        expected, _ = l1_topk_u8(quantise(l2_normalise(queries)), quantise(l2_normalise(gallery)), 10)
    assert evaluation.nearest(queries, gallery, 10).tolist() == np.asarray(expected).tolist()
    # The codes keep the exact L1 order of the normalised vectors at the top, on data this spread out.
    exact = np.abs(l2_normalise(queries)[:, None, :] - l2_normalise(gallery)[None]).sum(axis=2)
    assert evaluation.nearest(queries, gallery, 1)[:, 0].tolist() == np.argmin(exact, axis=1).tolist()
    index = evaluation.GalleryIndex(gallery)
    assert index.codes.dtype == np.uint8 and index.codes.shape == gallery.shape
    assert index.bytes_per_vector >= 24


def test_retrieval_figures_by_hand():
    # Three prototypes; the query is nearest to b, then to the first a, then to the second a.
    ones = np.ones(32, np.float32)
    a1, b, a2 = ones.copy(), ones.copy(), ones.copy()
    b[:16] *= 2
    a2[16:] *= 2
    query = ones.copy()
    query[:16] *= 1.8
    assert evaluation.nearest(query[None], np.stack([a1, b, a2]), 3).tolist() == [[1, 0, 2]]
    # Four copies of each: the 10 nearest are the 4 b's, then the 4 first a's, then 2 second a's.
    gallery = np.tile(np.stack([a1, b, a2]), (4, 1))
    labels = np.array(["a", "b", "a"] * 4)
    figures = retrieval_figures(query[None], np.array(["a"]), gallery, labels)
    assert set(figures) == {"precision_at_1", "precision_at_5", "precision_at_10", "map_at_10"}
    assert figures["precision_at_1"] == 0.0
    assert figures["precision_at_5"] == pytest.approx(1 / 5)
    assert figures["precision_at_10"] == pytest.approx(6 / 10)
    # hits at ranks 5..10, R = 8 a's in the gallery: (1/5 + 2/6 + 3/7 + 4/8 + 5/9 + 6/10) / min(10, 8)
    assert figures["map_at_10"] == pytest.approx((1 / 5 + 2 / 6 + 3 / 7 + 4 / 8 + 5 / 9 + 6 / 10) / 8)


def test_targets_and_their_flags():
    figures = {"precision_at_10": 0.95, "map_at_10": 0.9, "ms_per_image_1_thread": 12.5, "bytes_per_vector": 256}
    flags = {row["figure"]: row["met"] for row in evaluation.targets_report(figures)}
    assert flags["precision_at_10"] is True
    assert flags["map_at_10"] is False
    assert flags["ms_per_image_1_thread"] is False
    assert flags["bytes_per_vector"] is True
    assert flags["rephotographed_recall_at_1"] is None  # not measured


def test_a_figure_beside_its_target_is_not_rounded_across_it():
    assert evaluation.beside_target(0.94996, "0.9500", 0.95) == "0.94996"  # not met: not "0.9500"
    assert evaluation.beside_target(0.95, "0.9500", 0.95) == "0.9500"
    assert evaluation.beside_target(0.9512, "0.9512", 0.95) == "0.9512"
    assert evaluation.beside_target(12.04, "12.0", 12.0, at_most=True) == "12.04"
    assert evaluation.beside_target(256.04, "256.0", 256, at_most=True) == "256.04"
    figures = {"model": "m", "sha256": "0" * 64, "precision_at_10": 0.94996,
               "confusion_test": {"categories": ["dress"], "rows_true_columns_predicted": [[1]]}}
    report = {"model": {**figures, "targets": evaluation.targets_report(figures)},
              "data": {"path": "d", "images": {"test": 1}, "gallery_size": 1, "metric": "L1"},
              "timing": {"statistic": "median", "images": 1, "threads": 1},
              "vgg16_fc7": {"measured": False, "file": None, "how": "make vgg16-baseline"}, "seconds": 0}
    line = next(line for line in evaluation.format_report(report).splitlines() if line.startswith("precision@10"))
    assert line.split()[1:] == ["0.94996", ">=", "0.95", "NO"]


# --- the re-photograph transform ---


def _garment_picture(seed: int = 0, size=(300, 400)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 240, np.uint8)
    pixels[60:340, 70:230] = rng.integers(0, 255, size=3)  # a "garment"
    pixels[100:140, 90:210] = rng.integers(0, 255, size=3)  # a stripe
    return Image.fromarray(pixels)


def test_the_misclassified_sheet_shows_the_most_confident_mistakes_first(tmp_path):
    colours = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230)}
    items = []
    for name, colour in colours.items():
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        items.append(evaluation.Item(path, {"red": "dress", "green": "hat", "blue": "shoes"}[name], name))
    categories = ["dress", "hat", "shoes"]
    probabilities = np.array([[0.9, 0.05, 0.05],  # right
                              [0.6, 0.3, 0.1],  # a hat called a dress at 0.6
                              [0.05, 0.9, 0.05]])  # shoes called a hat at 0.9: shown first
    path, wrong = misclassified_sheet(items, probabilities, categories, tmp_path / "out" / "sheet.png", tile=50, columns=4)
    assert wrong == 2
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (50 + 14, 4 * 50, 3)
    assert tuple(sheet[25, 25]) == colours["blue"] and tuple(sheet[25, 75]) == colours["green"]
    assert tuple(sheet[25, 125]) == (255, 255, 255)  # the right answer is not on the sheet
    _, none_wrong = misclassified_sheet(items[:1], probabilities[:1], categories, tmp_path / "none.png")
    assert none_wrong == 0 and (tmp_path / "none.png").is_file()


def test_rephotograph_is_deterministic_for_a_seed_and_changes_the_image():
    picture = _garment_picture()
    first = rephotograph_jpeg(picture, np.random.default_rng([1, 2]))
    again = rephotograph_jpeg(picture, np.random.default_rng([1, 2]))
    other = rephotograph_jpeg(picture, np.random.default_rng([1, 3]))
    assert first == again
    assert first != other
    assert first[:3] == b"\xff\xd8\xff"  # a JPEG, as a phone sends
    decoded = rephotograph(picture, np.random.default_rng([1, 2]))
    assert decoded.mode == "RGB" and 320 <= max(decoded.size) <= 800
    resized = np.asarray(decoded.resize(picture.size), np.float32)
    assert np.abs(resized - np.asarray(picture, np.float32)).mean() > 10  # really changed


def test_phone_photo_is_deterministic_for_a_seed():
    picture = _garment_picture(1)
    a = np.asarray(phone_photo(picture, np.random.default_rng(5)))
    b = np.asarray(phone_photo(picture, np.random.default_rng(5)))
    assert a.shape == (224, 224, 3) and (a == b).all()


def test_perspective_coefficients_map_the_corners():
    source = [(0, 0), (100, 0), (100, 80), (0, 80)]
    target = [(5, -3), (97, 4), (103, 77), (-2, 83)]
    a, b, c, d, e, f, g, h = perspective_coefficients(source, target)
    for (sx, sy), (tx, ty) in zip(source, target):
        w = g * tx + h * ty + 1
        assert (a * tx + b * ty + c) / w == pytest.approx(sx, abs=1e-6)
        assert (d * tx + e * ty + f) / w == pytest.approx(sy, abs=1e-6)


# --- refusals ---


def _tiny_dataset(root: Path, duplicate: bool = False) -> Path:
    """Two classes, two images per split and class; duplicate=True copies a train image into test."""
    for s, split in enumerate(evaluation.SPLITS):
        for c, name in enumerate(("dress", "hat")):
            (root / split / name).mkdir(parents=True)
            for n in range(2):
                _garment_picture(100 * s + 10 * c + n).save(root / split / name / f"{n}.jpg")
    if duplicate:
        shutil.copyfile(root / "train" / "hat" / "1.jpg", root / "test" / "hat" / "copy.jpg")
    return root


def test_a_test_image_in_the_gallery_is_refused(tmp_path):
    data = _tiny_dataset(tmp_path / "data", duplicate=True)
    dataset = evaluation.load_dataset(data)
    gallery = dataset["train"] + dataset["validation"]
    with pytest.raises(EvaluationError, match="1 test image.*also in the gallery.*copy.jpg"):
        check_disjoint(dataset["test"], gallery)
    with pytest.raises(EvaluationError, match="also in the gallery"):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, cache_dir=None)
    clean = _tiny_dataset(tmp_path / "clean")
    clean_set = evaluation.load_dataset(clean)
    check_disjoint(clean_set["test"], clean_set["train"] + clean_set["validation"])


def test_check_disjoint_goes_by_content_not_name(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    digest = hashlib.sha256(b"same bytes").hexdigest()
    with pytest.raises(EvaluationError):
        check_disjoint([Item(a, "hat", digest)], [Item(b, "dress", digest)])
    check_disjoint([Item(a, "hat", digest)], [Item(b, "hat", "0" * 64)])


def _manifest(tmp_path: Path, sha256: str) -> Path:
    (tmp_path / "fake.tflite").write_bytes(b"not the model the manifest describes")
    manifest = json.loads((MODELS / "garment_v5.json").read_text())
    manifest.update({"name": "fake", "file": "fake.tflite", "sha256": sha256})
    path = tmp_path / "fake.json"
    path.write_text(json.dumps(manifest))
    return path


def test_an_unreadable_image_is_named(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    (data / "test" / "hat" / "zz-bad.jpg").write_bytes(b"not a picture")
    with pytest.raises(EvaluationError, match=r"test/hat/zz-bad\.jpg: "):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, cache_dir=None, timing_images=0)


def test_a_model_file_unlike_its_manifest_is_refused(tmp_path, capsys):
    path = _manifest(tmp_path, "0" * 64)
    with pytest.raises(EvaluationError, match="does not match its manifest"):
        verify_manifest(path)
    data = _tiny_dataset(tmp_path / "data")
    with pytest.raises(EvaluationError, match="does not match its manifest"):
        evaluation.run_evaluation(data, path, robustness=0)
    # The command says so and exits 2, for the evaluated model and for the baseline alike.
    assert cli.main(["--data-dir", str(tmp_path / "dd"), "eval", "--data", str(data), "--model", str(path)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err
    assert cli.main(["--data-dir", str(tmp_path / "dd"), "eval", "--data", str(data), "--baseline", str(path)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_a_manifest_without_a_checksum_or_file_is_refused(tmp_path):
    path = _manifest(tmp_path, "")
    with pytest.raises(EvaluationError, match="no model file and sha256"):
        verify_manifest(path)
    with pytest.raises(EvaluationError, match="no model manifest"):
        verify_manifest(tmp_path / "absent.json")
    missing = json.loads(path.read_text())
    missing.update({"file": "absent.tflite", "sha256": "0" * 64})
    path.write_text(json.dumps(missing))
    with pytest.raises(EvaluationError, match="no model file at"):
        verify_manifest(path)


def test_the_committed_models_match_their_manifests():
    for name in ("garment_v0", "garment_v5"):
        assert verify_manifest(MODELS / f"{name}.json")["name"] == name


def test_a_class_folder_the_model_does_not_classify_is_refused_up_front(tmp_path, monkeypatch):
    """A folder name no model classifies used to fail in the confusion matrix, after all the embedding."""
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before refusing")

    monkeypatch.setattr(evaluation, "embed_items", no_embedding)
    data = _tiny_dataset(tmp_path / "data")
    for split, name in (("test", "jacket"), ("train", "Dress")):
        (data / split / name).mkdir()
        _garment_picture(7).save(data / split / name / "0.jpg")
    with pytest.raises(EvaluationError, match=r"not the model's categories: Dress, jacket \(it classifies dress, hat, "):
        evaluation.load_dataset(data, ["dress", "hat", "shoes"])
    with pytest.raises(EvaluationError, match="not the model's categories: Dress, jacket"):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", MODELS / "garment_v0.json", robustness=0, cache_dir=None)
    assert set(evaluation.load_dataset(data)) == set(evaluation.SPLITS)  # no categories given: any name


def test_an_out_or_cache_folder_that_cannot_be_made_is_refused_before_measuring(tmp_path, monkeypatch, capsys):
    """It used to fail at the end, in writing there, and print none of the report."""
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before refusing")

    monkeypatch.setattr(evaluation, "embed_items", no_embedding)
    data = _tiny_dataset(tmp_path / "data")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for option, keyword in (("--out", "out_dir"), ("--cache", "cache_dir")):
        with pytest.raises(EvaluationError, match=f"^{option} .*a-file/eval: cannot make that folder"):
            evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, **{"cache_dir": None, keyword: a_file / "eval"})
        assert cli.main(["--data-dir", str(tmp_path / "dd"), "eval", "--data", str(data), option, str(a_file / "eval")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"shazzam eval: {option} ") and err.count("\n") == 1
    with pytest.raises(EvaluationError, match="^--out .*a-file: cannot make that folder"):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, cache_dir=None, out_dir=a_file)
    assert evaluation.writable_folder(tmp_path / "new" / "out", "--out").is_dir()


def test_missing_split_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "hat").mkdir(parents=True)
    with pytest.raises(EvaluationError, match="no train split|holds no images"):
        evaluation.load_dataset(tmp_path)


# --- the whole core on a handful of real images ---


@pytest.fixture
def handful(shared_data, tmp_path) -> Path:
    """Three train, one validation and one test image of every class, linked from the shared data."""
    source = shared_data / "clothing-dataset-small"
    per_split = {"train": 3, "validation": 1, "test": 1}
    for split, count in per_split.items():
        for class_dir in sorted((source / split).iterdir()):
            target = tmp_path / "handful" / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.glob("*.jpg"))[:count]:
                (target / image.name).symlink_to(image)
    return tmp_path / "handful"


@pytest.mark.shared_data
def test_the_eval_core_on_a_handful_of_real_images(handful, tmp_path):
    cache = tmp_path / "cache"
    report = evaluation.run_evaluation(
        handful, MODELS / "garment_v5.json", MODELS / "garment_v0.json", robustness=6, seed=3,
        cache_dir=cache, vgg16=tmp_path / "no-vgg16.tflite", timing_images=2, out_dir=tmp_path / "out",
    )
    assert report["data"]["images"] == {"train": 30, "validation": 10, "test": 10}
    assert report["data"]["gallery_size"] == 40
    for role, name, dim in (("model", "garment_v5", 192), ("baseline", "garment_v0", 1280)):
        figures = report[role]
        assert figures["model"] == name and figures["embedding_dim"] == dim
        assert dim <= figures["bytes_per_vector"] <= dim * 1.25  # the codes, and any re-rank bits
        for key in ("precision_at_1", "precision_at_5", "precision_at_10", "map_at_10", "classifier_accuracy_test",
                    "rephotographed_recall_at_1", "rephotographed_recall_at_10"):
            assert 0.0 <= figures[key] <= 1.0, (role, key)
        assert figures["rephotographed_recall_at_1"] <= figures["rephotographed_recall_at_10"]
        assert figures["rephotographed_queries"] == 6
        assert figures["ms_per_image_1_thread"] > 0
        confusion = np.array(figures["confusion_test"]["rows_true_columns_predicted"])
        assert confusion.sum() == 10 and confusion.trace() / 10 == pytest.approx(figures["classifier_accuracy_test"])
        assert {row["figure"] for row in figures["targets"]} == {t.key for t in evaluation.TARGETS}
    # Far from chance (0.1 per class here) even on ten queries, for the fine-tuned model.
    assert report["model"]["precision_at_1"] >= 0.5
    # garment_v5 was trained on the validation split: it gets no validation figure, the baseline does.
    assert report["model"]["trained_on_validation"] and report["model"]["classifier_accuracy_validation"] is None
    assert not report["baseline"]["trained_on_validation"]
    assert 0.0 <= report["baseline"]["classifier_accuracy_validation"] <= 1.0
    assert report["vgg16_fc7"]["measured"] is False
    text = evaluation.format_report(report)
    assert "VGG16 fc7 ratio not measured" in text and "make vgg16-baseline" in text
    assert "precision@10" in text and "confusion matrix, garment_v5" in text
    assert "garment_v5 was trained on train + validation: no validation figure" in text
    assert "garment_v0 was trained on" not in text
    json.dumps(report)  # the --json form
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        assert "tsne_skipped" in report
    else:
        png = Path(report["tsne"]["garment_v5"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for role, name in (("model", "garment_v5"), ("baseline", "garment_v0")):
        sheet = report["misclassified"][name]
        confusion = np.array(report[role]["confusion_test"]["rows_true_columns_predicted"])
        assert sheet["test_images"] == confusion.sum() - confusion.trace()
        assert Image.open(sheet["picture"]).format == "PNG"
    assert "misclassified test images, most confident first" in text
    # The rerun reads the embeddings from the cache: same figures.
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 4  # the data set and the re-photographed queries, for each model
    again = evaluation.run_evaluation(handful, MODELS / "garment_v5.json", None, robustness=6, seed=3,
                                      cache_dir=cache, vgg16=None, timing_images=1, out_dir=None)
    assert sorted(p.name for p in cache.iterdir()) == cached
    for key in ("precision_at_10", "map_at_10", "rephotographed_recall_at_1", "classifier_accuracy_test"):
        assert again["model"][key] == report["model"][key]
    assert "baseline" not in again


class BoxesDetector:
    """Shows the same boxes on every photo."""

    name = "fixed-boxes"

    def __init__(self, *found):
        self.found = list(found)

    def detect(self, image, masks=True):
        return self.found


class DressLeaningModel:
    """Every crop: dress 0.6, pants 0.3, skirt 0.1."""

    name, embedding_dim, views = "dress-leaning", 4, ("centre",)
    categories = taxonomy.CATEGORIES

    def infer(self, image):
        scores = {"dress": 0.6, "pants": 0.3, "skirt": 0.1}
        return np.ones(4, np.float32), np.array([scores.get(c, 0.0) for c in self.categories], np.float32)


def test_street_garments_found_by_the_detector_and_named_within_its_class(tmp_path):
    from shazzam.detector import Detection
    from shazzam.images import Box

    photo = Image.new("RGB", (300, 400), (90, 90, 90))
    mask = np.zeros((400, 300), dtype=np.uint8)
    mask[20:180, 20:140] = 1  # a dress
    mask[180:380, 160:260] = 2  # jeans: pants
    street = evaluation.StreetCrops(write_ccp(tmp_path / "ccp", ["null", "dress", "jeans"], {701: (photo, mask)}))
    assert street.boxes == [[20, 20, 140, 180], [160, 180, 260, 380]] and list(street.labels) == ["dress", "pants"]

    def figures(*found):
        detected = evaluation.DetectedGarments(street, BoxesDetector(*found))
        return evaluation.street_look_figures(DressLeaningModel(), street, detected)

    # The dress seen as a skirt: found, but searched among skirts; the pants box too low (IoU 0.4).
    seen = figures(Detection(Box(20, 20, 140, 180), "skirt", 0.9), Detection(Box(160, 300, 260, 380), "pants", 0.8))
    assert seen == {"street_look_detector": "fixed-boxes", "street_look_found": 0.5, "street_look_named": 0.0}
    # A bag over the dress is no search's box; the dress box is. Pants are named within pants, shorts.
    seen = figures(Detection(Box(20, 20, 140, 180), "bag", 0.9), Detection(Box(22, 22, 140, 180), "dress", 0.7),
                   Detection(Box(160, 190, 260, 380), "pants", 0.8))
    assert seen["street_look_found"] == 1.0 and seen["street_look_named"] == 1.0
    assert figures()["street_look_found"] == 0.0  # nothing found: nothing to name, no error


def test_street_garments_with_the_whole_image_detector(tmp_path):
    """The service's fallback (no detector model): one box, the whole photo, and no class to search in."""
    from shazzam.detector import WholeImageDetector

    mask = np.ones((400, 300), dtype=np.uint8)  # a dress filling the photo
    street = evaluation.StreetCrops(write_ccp(tmp_path / "ccp", ["null", "dress"], {701: (Image.new("RGB", (300, 400)), mask)}))
    detected = evaluation.DetectedGarments(street, WholeImageDetector())
    seen = evaluation.street_look_figures(DressLeaningModel(), street, detected)
    assert seen == {"street_look_detector": "whole-image-v0", "street_look_found": 1.0, "street_look_named": 1.0}


def test_a_ccp_folder_without_held_out_photos_is_refused_before_embedding(tmp_path, monkeypatch):
    """labels.json alone, or photos without their masks: no street crop to search, said before
    minutes of embedding (it used to fail after them, in a stack of no arrays)."""
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before refusing")

    monkeypatch.setattr(evaluation, "embed_items", no_embedding)
    data = _tiny_dataset(tmp_path / "data")
    photo, mask = Image.new("RGB", (300, 400)), np.ones((400, 300), dtype=np.uint8)
    ccp = write_ccp(tmp_path / "ccp", ["null", "dress"], {701: (photo, mask), 702: (photo, mask)})
    for number in (701, 702):
        (ccp / "masks" / f"{number:04d}.png").unlink()
    with pytest.raises(EvaluationError, match="no CCP photos 0701-0800 under .*ccp"):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, cache_dir=None, ccp_dir=ccp)
    # Garments none of which names a catalogue category: no crop either.
    skin = write_ccp(tmp_path / "skin", ["null", "skin"], {701: (photo, mask)})
    with pytest.raises(EvaluationError, match="no garment of a catalogue category"):
        evaluation.run_evaluation(data, MODELS / "garment_v5.json", robustness=0, cache_dir=None, ccp_dir=skin)


def test_the_report_says_how_many_held_out_photos_were_skipped(tmp_path):
    photo, mask = Image.new("RGB", (300, 400)), np.ones((400, 300), dtype=np.uint8)
    street = evaluation.StreetCrops(write_ccp(tmp_path / "ccp", ["null", "dress"], {701: (photo, mask), 702: (photo, mask)}))
    assert street.skipped == 98  # 0703-0800: no photo, no mask
    figures = {"model": "m", "sha256": "0" * 64, "street_crops": 2, "street_photos": street.photos, "street_photos_skipped": 98,
               "confusion_test": {"categories": ["dress"], "rows_true_columns_predicted": [[1]]}}
    report = {"model": {**figures, "targets": evaluation.targets_report(figures)},
              "data": {"path": "d", "images": {"test": 1}, "gallery_size": 1, "metric": "L1"},
              "timing": {"statistic": "median", "images": 1, "threads": 1},
              "vgg16_fc7": {"measured": False, "file": None, "how": "make vgg16-baseline"}, "seconds": 0}
    assert "street crops: 98 of the CCP photos 0701-0800 skipped (no photo or no mask)" in evaluation.format_report(report)


@pytest.mark.shared_data
def test_street_crops_are_searched_and_classified(handful, tmp_path):
    """Garments cut out of CCP's held-out photos (0701-0800) by their masks, searched against the
    gallery and classified; photos outside that range are not used."""
    dress = Image.open(next((handful / "test" / "dress").iterdir())).convert("RGB").resize((120, 160))
    pants = Image.open(next((handful / "test" / "pants").iterdir())).convert("RGB").resize((100, 200))
    photo = Image.new("RGB", (300, 400), (90, 90, 90))
    photo.paste(dress, (20, 20))
    photo.paste(pants, (160, 180))
    mask = np.zeros((400, 300), dtype=np.uint8)
    mask[20:180, 20:140] = 1
    mask[180:380, 160:260] = 2
    ccp = write_ccp(tmp_path / "ccp", ["null", "dress", "jeans"], {701: (photo, mask), 702: (photo, mask), 5: (photo, mask)})
    cache = tmp_path / "cache"
    report = evaluation.run_evaluation(handful, MODELS / "garment_v5.json", None, robustness=0, cache_dir=cache,
                                       vgg16=None, timing_images=1, out_dir=None, ccp_dir=ccp)
    figures = report["model"]
    assert figures["street_crops"] == 4 and figures["street_photos"] == "0701-0800"
    for key in ("street_precision_at_1", "street_precision_at_10", "street_map_at_10", "street_accuracy"):
        assert 0.0 <= figures[key] <= 1.0
    # the same two garments twice: every figure is a multiple of a half
    assert (figures["street_precision_at_1"] * 2).is_integer() and (figures["street_accuracy"] * 2).is_integer()
    assert "street crops: precision@10" in evaluation.format_report(report)
    assert figures["street_look_detector"] == "detector_v2" and 0.0 <= figures["street_look_named"] <= figures["street_look_found"] <= 1.0
    assert "street garments found, then named right" in evaluation.format_report(report)
    assert len(list(cache.iterdir())) == 2  # the data set and the street crops
    # --model-dir names where the detector is: a folder without one leaves the whole-image fallback
    elsewhere = evaluation.run_evaluation(handful, MODELS / "garment_v5.json", None, robustness=0, cache_dir=cache,
                                          vgg16=None, timing_images=1, out_dir=None, ccp_dir=ccp, model_dir=tmp_path)
    assert elsewhere["model"]["street_look_detector"] == "whole-image-v0"
    without = evaluation.run_evaluation(handful, MODELS / "garment_v5.json", None, robustness=0, cache_dir=cache,
                                        vgg16=None, timing_images=1, out_dir=None)
    assert "street_crops" not in without["model"] and "street crops" not in evaluation.format_report(without)
    with pytest.raises(EvaluationError, match="no CCP data set"):
        evaluation.run_evaluation(handful, MODELS / "garment_v5.json", None, robustness=0, cache_dir=cache,
                                  vgg16=None, timing_images=1, out_dir=None, ccp_dir=tmp_path / "nowhere")


def test_a_damaged_cache_file_is_a_miss_not_a_failure(tmp_path):
    cache = EmbeddingCache(tmp_path)
    arrays = {"embeddings": np.arange(1000, dtype=np.float32)}
    cache.store("k", arrays)
    path = tmp_path / "shazzam-eval-k.npz"
    whole = path.read_bytes()
    assert np.array_equal(cache.load("k")["embeddings"], arrays["embeddings"])
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # inside the array: the zip's CRC says so
    header = bytearray(whole)
    header[whole.index(b"{'descr'")] ^= 0xFF  # the .npy header's dictionary: a TokenError from its parser
    # each failed `shazzam eval` (BadZipFile, then TokenError)
    for damaged in (whole[: len(whole) // 2], whole[:30], bytes(flipped), bytes(header)):
        path.write_bytes(damaged)
        assert cache.load("k") is None
