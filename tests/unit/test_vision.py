"""The committed garment model through shazzam.vision: outputs, determinism, integrity checks."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shazzam.images import load_image
from shazzam.vision import GarmentModel, ModelError, default_model_dir, load_garment_model, manifest_path

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "samples" / "shop"


def sample(sku: str) -> Image.Image:
    return load_image((SHOP / "images" / f"{sku}.jpg").read_bytes())


def test_prediction_is_a_unit_embedding_and_a_known_category():
    model = load_garment_model()
    prediction = model.predict(sample("shoes-01"))
    assert prediction.embedding.shape == (model.embedding_dim,) and prediction.embedding.dtype == np.float32
    assert np.linalg.norm(prediction.embedding) == pytest.approx(1.0, abs=1e-5)
    assert prediction.category in model.categories and len(model.categories) == 10
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.confidence == max(prediction.probabilities.values())


def test_the_classifier_knows_obvious_items():
    model = load_garment_model()
    right = sum(model.predict(sample(f"{cls}-{n:02d}")).category == cls for cls in ("shoes", "hat", "pants", "dress") for n in (1, 2, 3))
    assert right >= 10  # of 12: measured test accuracy is about 0.9


def test_predictions_are_deterministic_across_threads():
    model = load_garment_model()
    images = [sample(f"t-shirt-{n:02d}") for n in range(1, 7)]
    serial = [model.predict(image).embedding for image in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda image: model.predict(image).embedding, images))
    for one, other in zip(serial, parallel):
        np.testing.assert_array_equal(one, other)


def test_a_model_file_that_does_not_match_its_manifest_is_refused(tmp_path):
    served = manifest_path()
    manifest = json.loads(served.read_text())
    for name in (served.name, manifest["file"]):
        shutil.copy(default_model_dir() / name, tmp_path / name)
    manifest["sha256"] = "0" * 64
    (tmp_path / served.name).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="sha256"):
        GarmentModel.from_manifest(tmp_path / served.name)
    with pytest.raises(ModelError, match="no model manifest"):
        GarmentModel.from_manifest(tmp_path / "missing.json")


def _served_copy(tmp_path: Path, **input_fields) -> Path:
    """The serving model's manifest and file in tmp_path, with input fields replaced."""
    served = manifest_path()
    manifest = json.loads(served.read_text())
    shutil.copy(default_model_dir() / manifest["file"], tmp_path / manifest["file"])
    manifest["input"].update(input_fields)
    (tmp_path / served.name).write_text(json.dumps(manifest))
    return tmp_path / served.name


def test_the_served_outputs_are_the_mean_over_the_manifest_views(tmp_path):
    from shazzam.images import model_views, standardise_img

    model = load_garment_model()
    assert model.views == ("centre", "whole")
    image = sample("dress-02")
    embedding, probabilities = model.infer(image)
    per_view = model.outputs(model_views(standardise_img(image), ("centre", "whole")))
    np.testing.assert_allclose(embedding, per_view[0].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(probabilities, per_view[1].mean(axis=0), rtol=1e-6)
    assert not np.allclose(per_view[0][0], per_view[0][1])  # two views, two different inputs
    one_view = GarmentModel.from_manifest(_served_copy(tmp_path, views=["centre"]))
    np.testing.assert_allclose(one_view.infer(image)[0], per_view[0][0], rtol=1e-6)
    # the standardised image the pipeline stores gives the same as the photo it came from
    np.testing.assert_array_equal(model.infer(standardise_img(image), standardised=True)[0], embedding)


def test_a_manifest_naming_an_unknown_view_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"unknown views \['mirror'\]"):
        GarmentModel.from_manifest(_served_copy(tmp_path, views=["centre", "mirror"]))


def test_a_manifest_is_refused_under_another_name_than_its_models(tmp_path):
    import json
    import shutil

    from shazzam.vision import ModelError, default_model_dir, read_manifest

    models = default_model_dir()
    manifest = json.loads((models / "garment_v0.json").read_text())
    shutil.copy(models / manifest["file"], tmp_path / manifest["file"])
    (tmp_path / "garment_v6.json").write_text(json.dumps(manifest))  # garment_v0's, copied under another name
    with pytest.raises(ModelError, match="its file must be garment_v0.json"):
        read_manifest(tmp_path / "garment_v6.json")


def test_a_manifest_whose_input_shape_is_not_the_models_is_refused(tmp_path):
    # The manifest is what the views are cut to; a model file swapped under it (another input size)
    # must stop the service at load, not serve embeddings of inputs it was not trained on.
    with pytest.raises(ModelError, match=r"disagrees with the manifest \[1, 256, 256, 3\]"):
        GarmentModel.from_manifest(_served_copy(tmp_path, shape=[1, 256, 256, 3]))
