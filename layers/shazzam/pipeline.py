"""The use cases: each ingest stage, and search. Handlers call these; they know no event shapes.

Every stage is idempotent: its inputs are addressed by stable ids, its outputs are keyed by
those ids, and re-running it on the same input rewrites the same rows and objects.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal

from PIL import Image

from shazzam import catalogue, ids
from shazzam.app import App
from shazzam.images import ImageError, encode_png, get_subsection_of_image, load_image, standardise_img
from shazzam.index import StaleShard, compact, encode_vector, publish
from shazzam.storage import ObjectNotFound

log = logging.getLogger(__name__)

DEFAULT_K = 10
MAX_K = 50


# When filters narrow the results, this many nearest candidates are joined with the catalogue.
FILTERED_CANDIDATES = 1000


class BadRequest(ValueError):
    """The caller's input is wrong; the message says how, `status` is the HTTP status that fits
    (400 malformed, 413 too large, 415 not an image we read, 422 a bad parameter)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class StageResult:
    """What one stage did with one input: `done`, `skipped` (nothing to do) or `failed`."""

    key: str
    status: str
    reason: str = ""
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"key": self.key, "status": self.status, "reason": self.reason, "outputs": self.outputs}


# --- scrape -----------------------------------------------------------------------------------


def scrape(
    app: App,
    shop_url: str | None = None,
    limit: int | None = None,
    progress=None,
    source: str | None = None,
    force: bool = False,
) -> dict:
    """One scrape pass over every due source (or one shop URL, or the source named): save new and
    changed products, tombstone gone ones, upload each new image to incoming/ once.

    ``progress(done, total)`` is called after each page. Returns the summary's counts, errors by
    kind as ``errors.<kind>`` (see shazzam.scrape.passes)."""
    from shazzam.scrape.passes import scrape_pass

    return scrape_pass(app, shop_url=shop_url, limit=limit, progress=progress, source_name=source, force=force)


# --- detect -> standardise -> embed -----------------------------------------------------------


def detect(app: App, key: str) -> StageResult:
    """incoming/<image_id> -> detection rows and detections/<image_id>.json."""
    image_id = ids.key_stem(key)
    try:
        data = app.store.get(key)
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    if catalogue.get_image(app.db, image_id) is None:
        # Uploaded straight into incoming/ rather than by the scraper: keep a row to report on.
        catalogue.save_image(app.db, image_id, f"{app.store.bucket}/{key}", None)
    try:
        image = load_image(data)
    except ImageError as exc:
        catalogue.update_image(app.db, image_id, status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    product_category = catalogue.product_category_of_image(app.db, image_id)
    found = []
    for index, detection in enumerate(app.detector.detect(image)):
        found.append(
            {
                "id": ids.detection_id(image_id, index),
                "box": detection.box.as_list(),
                "label": detection.label or product_category,
                "score": round(float(detection.score), 4),
            }
        )
    catalogue.save_detections(app.db, image_id, found)
    catalogue.update_image(app.db, image_id, status="detected", error=None, width=image.width, height=image.height)
    document = {"image_id": image_id, "width": image.width, "height": image.height, "detections": found}
    output = ids.detections_key(image_id)
    app.store.put(output, json.dumps(document, sort_keys=True).encode(), content_type="application/json")
    return StageResult(key, "done", outputs=[output])


def standardise(app: App, key: str) -> StageResult:
    """detections/<image_id>.json -> standard/<detection_id>.png for each garment."""
    try:
        document = json.loads(app.store.get(key))
        data = app.store.get(ids.incoming_key(document["image_id"]))
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    try:
        image = load_image(data)
    except ImageError as exc:
        catalogue.update_image(app.db, document["image_id"], status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    outputs = []
    for detection in document["detections"]:
        try:
            crop = standardise_img(get_subsection_of_image(image, detection["box"]))
        except ImageError as exc:
            catalogue.update_detection(app.db, detection["id"], embedding_status="failed", error=str(exc))
            continue
        output = ids.standard_key(detection["id"])
        app.store.put(output, encode_png(crop), content_type="image/png")
        outputs.append(output)
    # Transient images are not kept: the catalogue holds the link, boxes and vectors.
    app.store.delete(ids.incoming_key(document["image_id"]))
    app.store.delete(key)
    return StageResult(key, "done", outputs=outputs)


def embed(app: App, key: str) -> StageResult:
    """standard/<detection_id>.png -> vectors/pending/<category>/<detection_id>.npy."""
    detection_id = ids.key_stem(key)
    detection = catalogue.get_detection(app.db, detection_id)
    if detection is None:
        return StageResult(key, "skipped", "no such detection (the image was re-detected)")
    try:
        image = load_image(app.store.get(key))
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    except ImageError as exc:
        catalogue.update_detection(app.db, detection_id, embedding_status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    prediction = app.garment_model.predict(image, standardised=True)  # standardise made it
    category = detection["label"] if detection["label"] in app.garment_model.categories else prediction.category
    output = ids.pending_vector_key(category, detection_id)
    app.store.put(output, encode_vector(prediction.embedding, app.garment_model.name))
    previous = detection["category"]
    if detection["embedding_status"] == "indexed" and previous and previous != category:
        # The item changed category: the next index run takes it out of its old shard.
        app.store.put(ids.removed_vector_key(previous, detection_id), b"")
    catalogue.update_detection(
        app.db,
        detection_id,
        category=category,
        category_confidence=prediction.confidence,
        embedding_status="embedded",
        embedded_by=app.garment_model.name,
        error=None,
    )
    app.store.delete(key)
    return StageResult(key, "done", outputs=[output])


# --- index and revalidate ---------------------------------------------------------------------


# Images fetched again per index run after a model change: bounded, so one run stays short.
REEMBED_BATCH = 500


def index(app: App) -> dict:
    """Merge pending vectors into their category shards (shazzam.index.compact); record them as
    indexed. Then, while the catalogue still holds vectors of an older model, fetch a batch of
    those images again so that the pipeline embeds them with the current one."""
    report = {}
    for category, merged in compact(app.store, model=app.garment_model.name).items():
        catalogue.mark_indexed(app.db, merged["added"])
        report[category] = {"added": len(merged["added"]), "removed": len(merged["removed"]), "total": merged["total"]}
    reembedding = reembed(app, limit=REEMBED_BATCH)
    if reembedding["stale"]:
        report["reembedding"] = reembedding
    return report


def reembed(app: App, limit: int | None = None) -> dict:
    """Queue the images embedded by another model than the current one (see scrape.passes.reembed_pass)."""
    from shazzam.scrape.passes import reembed_pass

    return reembed_pass(app, app.garment_model.name, limit)


def revalidate(app: App) -> dict:
    """Re-check products and images: 404/410, soft 404s and out-of-stock offers are tombstoned (is_dead,
    with a reason and time), products that came back are revived; dead items leave the shards."""
    from shazzam.scrape.passes import Summary, revalidate_products

    summary = Summary()
    report = {**revalidate_products(app, summary), "vectors_dropped": 0}
    report["images_queued"] = summary.counts["images_uploaded"]
    report.update({f"errors.{kind}": n for kind, n in sorted(summary.errors.items())})
    for category, dead in catalogue.dead_indexed_detections(app.db).items():
        publish(app.store, category, drop=dead)
        catalogue.mark_unindexed(app.db, dead)
        report["vectors_dropped"] += len(dead)
    return report


# --- search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchFilters:
    """What a searcher narrows the results to; None means no limit."""

    min_price: Decimal | None = None
    max_price: Decimal | None = None
    currency: str | None = None
    shop: str | None = None

    def any(self) -> bool:
        return any(value is not None for value in (self.min_price, self.max_price, self.currency, self.shop))


def check_search_parameters(app: App, category: str | None, k: int, filters: SearchFilters) -> None:
    """Raise BadRequest (422) for a parameter no search could satisfy, before any image work."""
    categories = app.garment_model.categories
    if category is not None and category not in categories:
        raise BadRequest(f"unknown category {category!r}; known: {', '.join(categories)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be an integer from 1 to {MAX_K}")
    for name in ("min_price", "max_price"):
        value = getattr(filters, name)
        if value is not None and (not value.is_finite() or value < 0):
            raise BadRequest(f"{name} must be a number of at least 0")
    if filters.min_price is not None and filters.max_price is not None and filters.min_price > filters.max_price:
        raise BadRequest("min_price is more than max_price")
    if filters.currency is not None and not re.fullmatch(r"[A-Z]{3}", filters.currency):
        raise BadRequest("currency must be a three-letter ISO 4217 code such as EUR")


# How each way a photo can be refused maps to HTTP (see shazzam.images.ImageError).
STATUS_OF_IMAGE_ERROR = {"empty": 400, "corrupt": 400, "too_large": 413, "unsupported": 415}


def load_photo(data: bytes) -> Image.Image:
    """Decode the searcher's photo, or raise BadRequest with the HTTP status its fault calls for."""
    try:
        return load_image(data)
    except ImageError as exc:
        raise BadRequest(f"image rejected: {exc}", status=STATUS_OF_IMAGE_ERROR[exc.kind]) from exc


def search(
    app: App,
    image_bytes: bytes,
    category: str | None = None,
    k: int = DEFAULT_K,
    filters: SearchFilters = SearchFilters(),
) -> dict:
    """Find the garments in a photo and, for each, the k most similar live catalogue items."""
    started = time.perf_counter()
    check_search_parameters(app, category, k, filters)
    image = load_photo(image_bytes)
    model = app.garment_model
    garments = []
    for detection in app.detector.detect(image):
        prediction = model.predict(get_subsection_of_image(image, detection.box))
        chosen = category or prediction.category
        # Over-fetch: a shard may still hold items revalidate has just marked dead, and filters
        # drop more; the catalogue join below keeps the k best that pass.
        try:
            hits = app.shards.search(chosen, prediction.embedding, FILTERED_CANDIDATES if filters.any() else k + 10, model=model.name)
        except StaleShard:
            # The category is still indexed by an older model and is being embedded again.
            log.warning("the %s shard predates model %s: no results until it is re-indexed", chosen, model.name)
            hits = []
        items = catalogue.items_for_detections(app.db, [detection_id for detection_id, _ in hits], filters)
        results = [_result(items[detection_id], distance) for detection_id, distance in hits if detection_id in items][:k]
        garments.append(
            {
                "box": detection.box.as_list(),
                "score": round(float(detection.score), 4),
                "category": chosen,
                "category_source": "request" if category else "classifier",
                "predicted_category": prediction.category,
                "confidence": round(prediction.confidence, 4),
                "results": results,
            }
        )
    return {
        "image": {"width": image.width, "height": image.height},
        "garments": garments,
        "model": {"name": model.name, "detector": app.detector.name},
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _result(item: dict, distance: float) -> dict:
    return {
        "item_id": item["product_id"],
        "title": item["title"],
        "shop": item["shop"],
        "brand": item["brand"],
        "price": None if item["price"] is None else f"{item['price']:.2f}",
        "currency": item["currency"],
        "url": item["url"],
        "image_url": item["image_url"],
        "distance": round(distance, 4),
    }
