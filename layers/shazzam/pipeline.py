"""The use cases: each ingest stage, and search. Handlers call these; they know no event shapes.

Every stage is idempotent: its inputs are addressed by stable ids, its outputs are keyed by
those ids, and re-running it on the same input rewrites the same rows and objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from shazzam import catalogue, ids
from shazzam.app import App
from shazzam.images import ImageError, encode_png, get_subsection_of_image, load_image, standardise_img
from shazzam.index import compact, encode_vector, publish
from shazzam.storage import ObjectNotFound

log = logging.getLogger(__name__)

DEFAULT_K = 10
MAX_K = 50


class BadRequest(ValueError):
    """The caller's input is wrong; the message says how."""


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


def scrape(app: App, shop_url: str | None = None, limit: int | None = None, progress=None) -> dict:
    """Scrape one shop (or every active one): save products, upload new or changed images."""
    from shazzam.scrape import FetchError, scrape_shop

    shops = [{"id": catalogue.add_shop(app.db, shop_url), "base_url": shop_url}] if shop_url else catalogue.active_shops(app.db)
    report = {"shops": 0, "products": 0, "images_uploaded": 0, "images_unchanged": 0, "images_failed": 0}
    fetcher = app.fetcher()
    for shop in shops:
        report["shops"] += 1
        for product in scrape_shop(shop["base_url"], fetcher, limit=limit):
            product_id = catalogue.save_product(app.db, shop["id"], product)
            report["products"] += 1
            for src_link in product.image_urls:
                image_id = ids.image_id(src_link)
                catalogue.save_image(app.db, image_id, src_link, product_id)
                try:
                    fetched = fetcher.get(src_link)
                except FetchError as exc:
                    catalogue.update_image(app.db, image_id, status="failed", error=f"fetch failed: {exc}")
                    report["images_failed"] += 1
                    continue
                if fetched.status != 200:
                    catalogue.update_image(app.db, image_id, status="failed", error=f"fetch failed: HTTP {fetched.status}")
                    report["images_failed"] += 1
                    continue
                digest = hashlib.sha256(fetched.body).hexdigest()
                if (catalogue.get_image(app.db, image_id) or {}).get("content_sha256") == digest:
                    report["images_unchanged"] += 1
                    continue
                catalogue.update_image(app.db, image_id, content_sha256=digest, status="new", error=None)
                app.store.put(ids.incoming_key(image_id), fetched.body, content_type=fetched.content_type or "application/octet-stream")
                report["images_uploaded"] += 1
            if progress is not None:
                progress(product)
        catalogue.mark_shop_scraped(app.db, shop["id"])
    return report


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
        app.db, detection_id, category=category, category_confidence=prediction.confidence, embedding_status="embedded", error=None
    )
    app.store.delete(key)
    return StageResult(key, "done", outputs=[output])


# --- index and revalidate ---------------------------------------------------------------------


def index(app: App) -> dict:
    """Merge pending vectors into their category shards (shazzam.index.compact); record them as indexed."""
    report = {}
    for category, merged in compact(app.store, model=app.garment_model.name).items():
        catalogue.mark_indexed(app.db, merged["added"])
        report[category] = {"added": len(merged["added"]), "removed": len(merged["removed"]), "total": merged["total"]}
    return report


def revalidate(app: App) -> dict:
    """Mark products whose page is gone (HTTP 404/410) and images that are gone as dead; drop them from the shards."""
    from shazzam.scrape import FetchError

    fetcher = app.fetcher()
    report = {"products_checked": 0, "products_dead": 0, "images_checked": 0, "images_dead": 0, "vectors_dropped": 0}

    def gone(url: str) -> bool:
        """Only an explicit 404/410 kills an item; a network error or a 5xx may pass."""
        try:
            return fetcher.get(url).status in (404, 410)
        except FetchError as exc:
            log.warning("could not revalidate %s: %s", url, exc)
            return False

    for product in catalogue.live_products(app.db):
        report["products_checked"] += 1
        if gone(product["url"]):
            catalogue.mark_product_dead(app.db, product["id"])
            report["products_dead"] += 1
    for image in catalogue.live_images(app.db):
        report["images_checked"] += 1
        if gone(image["src_link"]):
            catalogue.update_image(app.db, image["id"], is_dead=True)
            report["images_dead"] += 1
    for category, dead in catalogue.dead_indexed_detections(app.db).items():
        publish(app.store, category, drop=dead)
        catalogue.mark_unindexed(app.db, dead)
        report["vectors_dropped"] += len(dead)
    return report


# --- search -----------------------------------------------------------------------------------


def search(app: App, image_bytes: bytes, category: str | None = None, k: int = DEFAULT_K) -> dict:
    """Find the garments in a photo and, for each, the k most similar live catalogue items."""
    model = app.garment_model
    if category is not None and category not in model.categories:
        raise BadRequest(f"unknown category {category!r}; known: {', '.join(model.categories)}")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be an integer from 1 to {MAX_K}")
    try:
        image = load_image(image_bytes)
    except ImageError as exc:
        raise BadRequest(f"image rejected: {exc}") from exc
    garments = []
    for detection in app.detector.detect(image):
        prediction = model.predict(get_subsection_of_image(image, detection.box))
        chosen = category or prediction.category
        # Over-fetch a little: a shard may still hold an item revalidate has just marked dead.
        hits = app.shards.search(chosen, prediction.embedding, k + 10)
        items = catalogue.items_for_detections(app.db, [detection_id for detection_id, _ in hits])
        results = []
        for detection_id, distance in hits:
            item = items.get(detection_id)
            if item is None:
                continue
            results.append(
                {
                    "title": item["title"],
                    "url": item["url"],
                    "price": None if item["price"] is None else f"{item['price']:.2f}",
                    "currency": item["currency"],
                    "brand": item["brand"],
                    "shop": item["shop"],
                    "image_url": item["image_url"],
                    "product_id": item["product_id"],
                    "detection_id": detection_id,
                    "distance": round(distance, 4),
                }
            )
            if len(results) == k:
                break
        garments.append(
            {
                "box": detection.box.as_list(),
                "category": chosen,
                "category_source": "request" if category else "classifier",
                "predicted_category": prediction.category,
                "confidence": round(prediction.confidence, 4),
                "results": results,
            }
        )
    return {"image": {"width": image.width, "height": image.height}, "garments": garments}
