"""The use cases: each ingest stage, and search. Handlers call these; they know no event shapes.

Every stage is idempotent: its inputs are addressed by stable ids, its outputs are keyed by
those ids, and re-running it on the same input rewrites the same rows and objects.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterator

from PIL import Image

from shazzam import catalogue, ids, lease, wiring
from shazzam.app import App
from shazzam.db import utcnow
from shazzam.images import Box, ImageError, encode_png, get_subsection_of_image, load_catalogue_image, load_image, standardise_img
from shazzam.money import price_text
from shazzam.index import PUBLISH_ATTEMPTS, CorruptShard, Hidden, ShardMoved, StaleShard, compact, encode_vector, publish, read_manifest, removal_marker
from shazzam.storage import ObjectNotFound, delete_if_unchanged, validate_key
from shazzam.taxonomy import DETECTOR_CLASS_OF, SEARCHABLE, category_within

log = logging.getLogger(__name__)

DEFAULT_K = 10
MAX_K = 50


# Shard rows a filtered search joins with the catalogue at first, and any search at most (see
# nearest_items): past that, a filter that only far items pass gets fewer than k results.
FILTERED_CANDIDATES = 1000
MAX_CANDIDATES = 16_000
# A shop taken off keeps its vectors in the shards (`shops add` brings it back at once), and search
# skips their rows, which would otherwise crowd the others out of its MAX_CANDIDATES (hidden_rows).
# Which they are is read again when a shop is taken off or brought back, and at least this often:
# a shop not taken off may have linked one of their pictures meanwhile.
HIDDEN_ROWS_READ_S = 300


class BadRequest(ValueError):
    """The caller's input is wrong; the message says how, `status` is the HTTP status that fits
    (400 malformed, 413 too large, 415 not an image we read, 422 a bad parameter)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class GarmentNotFound(BadRequest):
    """The garment picked by index is not among those found in the photo."""

    def __init__(self, index: int, found: int):
        where = f"{found} garment(s) found, indices 0 to {found - 1}" if found else "no garment was found in it"
        super().__init__(f"garment {index} is not in this photo: {where}")
        self.index, self.found = index, found


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


# A scrape visits pages for this much of its function's timeout, leaving the rest for the page in
# hand (its images are fetched as it is saved, until 90 %: scrape.passes.PAGE_IN_HAND_SHARE); the
# next run goes on where it stopped.
SCRAPE_BUDGET_S = wiring.by_name("scrape").timeout_s * 0.6
# A crawler with a time budget waits for another to finish for up to this share of its budget, and
# the wait is taken out of it; then it fails (LeaseBusy), and Lambda runs it again a minute later,
# then two minutes after that.
CRAWLER_WAIT_SHARE = 0.5


@contextmanager
def crawler_turn(app: App, who: str, budget_s: float | None, wait: bool = True) -> Iterator[float | None]:
    """Hold the crawler lease (shazzam.lease) for the block; yields what is left of `budget_s`
    (None: no limit, and the wait is as long as the other crawler's). Without `wait`, raises
    LeaseBusy at once when another crawler is fetching."""
    wait_s = 0.0 if not wait else None if budget_s is None else budget_s * CRAWLER_WAIT_SHARE
    with lease.held(app.db, lease.CRAWLER, who, wait_s=wait_s) as waited_s:
        yield None if budget_s is None else budget_s - waited_s


def scrape(
    app: App,
    shop_url: str | None = None,
    limit: int | None = None,
    progress=None,
    source: str | None = None,
    force: bool = False,
    budget_s: float | None = SCRAPE_BUDGET_S,
) -> dict:
    """One scrape pass over every due source (or one shop URL, or the source named): save new and
    changed products, tombstone gone ones, upload each new image to incoming/ once. Within
    ``budget_s`` seconds (None: no limit, as `shazzam scrape` runs): the next pass goes on where
    this one stopped.

    ``progress(done, total)`` is called after each page. Returns the summary's counts, errors by
    kind as ``errors.<kind>`` (see shazzam.scrape.passes)."""
    from shazzam.scrape.passes import scrape_pass

    check_scrape_options(shop_url, limit, source, force)
    force = bool(force)
    with crawler_turn(app, "scrape", budget_s) as left_s:
        return scrape_pass(app, shop_url=shop_url, limit=limit, progress=progress, source_name=source, force=force, budget_s=left_s)


# --- detect -> standardise -> embed -----------------------------------------------------------


def detect(app: App, key: str) -> StageResult:
    """incoming/<image_id> -> detection rows and detections/<image_id>.json.

    A catalogue image (one a product shows) is a product shot: one garment of it is indexed, the
    detection of the product's category's detector class (the dress, not the shoes, of a dress
    worn by a model); when the detector found none of that class the photo is taken whole as the
    product, and when the product has no category, its largest searchable garment. Any other
    image (put straight into incoming/) keeps a row for every garment found; those of classes the
    catalogue has no category for (bag, eyewear, belt) are recorded but not embedded."""
    image_id = ids.key_stem(key)
    try:
        validate_key(key)
    except ValueError:  # the console's "Create folder" puts incoming/<name>/; a retry would fail alike
        return StageResult(key, "skipped", "not a photo's key (a folder, or an empty or dot path segment)")
    try:
        data, etag = app.store.get_with_etag(key)
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    if key != ids.incoming_key(image_id) or ids.image_id_of_name(image_id) != image_id:
        # A name with a dot or a folder ("incoming/street-1.jpg"), capitals, or longer than an id:
        # the later stages find a photo by its id alone, so it moves to incoming/<an id made of its
        # name>, whose own event detects it.
        moved = ids.incoming_key(ids.image_id_of_name(key[len("incoming/"):]))
        app.store.put(moved, data)
        delete_if_unchanged(app.store, key, etag)
        return StageResult(key, "done", f"moved to {moved}, which is detected under that name", [moved])
    row = catalogue.get_image(app.db, image_id)
    if row is None:
        # Uploaded straight into incoming/ rather than by the scraper: keep a row to report on.
        catalogue.save_image(app.db, image_id, f"{app.store.bucket}/{key}", None)
    try:
        image = load_catalogue_image(data)  # as standardise loads it: the boxes are in its pixels
    except ImageError as exc:
        catalogue.update_image(app.db, image_id, status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    detections = app.detector.detect(image)
    current = app.store.head(key)
    if current is None or current.etag != etag:
        # Replaced while the detector ran: the newer version's own event detects it, and this run's
        # rows and document, written after that run's, would put the old photo's boxes in its place.
        return StageResult(key, "skipped", "the photo was replaced while it was detected; its own detection follows")
    if row is not None and row.get("product_id"):
        detections = [product_garment(detections, catalogue.product_category_of_image(app.db, image_id), image)]
    found, skipped = [], []
    for index, detection in enumerate(detections):
        entry = {
            "id": ids.detection_id(image_id, index),
            "box": detection.box.as_list(),
            "label": detection.label,
            "score": round(float(detection.score), 4),
        }
        (found if searchable(detection.label) else skipped).append(entry)
    catalogue.save_detections(app.db, image_id, found + skipped)
    for entry in skipped:
        catalogue.update_detection(app.db, entry["id"], embedding_status="skipped", error=f"no catalogue category for a {entry['label']}")
    catalogue.update_image(app.db, image_id, status="detected", error=None, width=image.width, height=image.height)
    # image_etag: which version of incoming/<image_id> the boxes belong to (the shop may replace it).
    document = {"image_id": image_id, "image_etag": etag, "width": image.width, "height": image.height, "detections": found}
    output = ids.detections_key(image_id)
    app.store.put(output, json.dumps(document, sort_keys=True).encode(), content_type="application/json")
    return StageResult(key, "done", outputs=[output])


def searchable(label: str | None) -> bool:
    """Whether a garment of this detector class has catalogue categories (None: unknown, any)."""
    return label is None or bool(SEARCHABLE.get(label, ()))


def product_garment(detections: list, product_category: str | None, image: Image.Image):
    """The garment a product image shows (see detect): a Detection."""
    from shazzam.detector import Detection

    wanted = DETECTOR_CLASS_OF.get(product_category) if product_category else None
    if wanted is not None:
        matching = [d for d in detections if d.label == wanted]
        if matching:
            return max(matching, key=lambda d: d.score)
    elif detections:
        candidates = [d for d in detections if searchable(d.label)]
        if candidates:
            return max(candidates, key=lambda d: d.box.area)
    return Detection(box=Box.whole(image), label=None, score=0.0)


def detections_document(raw: bytes) -> dict:
    """detect's document, checked: {"image_id": str, "detections": [{"id": str, "box": [4 ints]}, ...]};
    ValueError says what is wrong."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("image_id"), str):
        raise ValueError("no image_id")
    garments = document.get("detections")
    if not isinstance(garments, list) or not all(
        isinstance(garment, dict) and isinstance(garment.get("id"), str) and isinstance(garment.get("box"), list)
        and len(garment["box"]) == 4 and all(isinstance(n, int) and not isinstance(n, bool) for n in garment["box"])
        for garment in garments
    ):
        raise ValueError("detections is not a list of garments, each with an id and a box of four whole numbers")
    return document


def standardise(app: App, key: str) -> StageResult:
    """detections/<image_id>.json -> standard/<detection_id>.png for each garment."""
    try:
        raw_document, document_etag = app.store.get_with_etag(key)
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    try:
        document = detections_document(raw_document)
    except ValueError as exc:
        # Not detect's writing: no retry reads it better. It stays for a look until the bucket's
        # lifecycle takes it, and a scrape fetches the photo again (catalogue.UNFINISHED_AFTER).
        return StageResult(key, "failed", f"unreadable detections document: {exc}")
    try:
        data, image_etag = app.store.get_with_etag(ids.incoming_key(document["image_id"]))
    except ObjectNotFound:
        # Its crops were written and the photo deleted, and the run stopped before this document
        # went too (or the photo expired): nothing is left to crop it from.
        delete_if_unchanged(app.store, key, document_etag)
        return StageResult(key, "skipped", "its photo no longer exists")
    if document.get("image_etag", image_etag) != image_etag:
        delete_if_unchanged(app.store, key, document_etag)
        return StageResult(key, "skipped", "the photo was replaced after it was detected; its own detection follows")
    try:
        image = load_catalogue_image(data)  # as detect loaded it: the boxes are in its pixels
    except ImageError as exc:
        catalogue.update_image(app.db, document["image_id"], status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    crops = {}
    for detection in document["detections"]:
        try:
            crops[ids.standard_key(detection["id"])] = encode_png(standardise_img(get_subsection_of_image(image, detection["box"])))
        except ImageError as exc:
            catalogue.update_detection(app.db, detection["id"], embedding_status="failed", error=str(exc))
    current = app.store.head(ids.incoming_key(document["image_id"]))
    if current is None or current.etag != image_etag:
        # Replaced while it was cropped (its newer crops may be written already: these must not
        # overwrite them), or cropped and deleted by a run of the same event that finished first.
        delete_if_unchanged(app.store, key, document_etag)
        return StageResult(key, "skipped", "the photo was replaced or cropped meanwhile; its own run writes its crops")
    for output, png in crops.items():
        app.store.put(output, png, content_type="image/png")
    outputs = list(crops)
    # Transient images are not kept: the catalogue holds the link, boxes and vectors. Only the
    # versions read are deleted: a changed photo uploaded meanwhile is detected in its turn.
    delete_if_unchanged(app.store, ids.incoming_key(document["image_id"]), image_etag)
    delete_if_unchanged(app.store, key, document_etag)
    return StageResult(key, "done", outputs=outputs)


def embed(app: App, key: str) -> StageResult:
    """standard/<detection_id>.png -> vectors/pending/<category>/<detection_id>.npy."""
    detection_id = ids.key_stem(key)
    detection = catalogue.get_detection(app.db, detection_id)
    if detection is None:
        return StageResult(key, "skipped", "no such detection (the image was re-detected)")
    try:
        data, crop_etag = app.store.get_with_etag(key)
        image = load_image(data)
    except ObjectNotFound:
        return StageResult(key, "skipped", "object no longer exists")
    except ImageError as exc:
        catalogue.update_detection(app.db, detection_id, embedding_status="failed", error=str(exc))
        return StageResult(key, "failed", str(exc))
    prediction = app.garment_model.predict(image, standardised=True)  # standardise made it
    current = app.store.head(key)
    if current is None or current.etag != crop_etag:
        # A newer crop was written while this one was embedded (its vector may be written already:
        # this one must not overwrite it), or a run of the same event finished first.
        return StageResult(key, "skipped", "the crop was replaced or embedded meanwhile; its own run embeds it")
    # The product's category when the shop gives one we know; else the classifier's choice among
    # the detector class's categories (a "pants" garment is pants or shorts).
    product_category = catalogue.product_category_of_image(app.db, detection["image_id"])
    confidence = prediction.confidence
    if product_category in app.garment_model.categories:
        category = product_category
    elif detection["label"] in SEARCHABLE:
        category, confidence = category_within(prediction.probabilities, SEARCHABLE[detection["label"]])
    elif detection["label"] in app.garment_model.categories:
        category = detection["label"]  # a row from before the detector: its label was the category
    else:
        category = prediction.category
    if product_category is None and (catalogue.get_image(app.db, detection["image_id"]) or {}).get("product_id") is None:
        # A photo put into incoming/ by hand: no shop sells it, so no search could show it. Its
        # garments are reported (box, category) but not indexed, where they would only take room.
        catalogue.update_detection(app.db, detection_id, category=category, category_confidence=confidence,
                                   embedding_status="skipped", error="not a shop's picture: reported, not indexed")
        delete_if_unchanged(app.store, key, crop_etag)
        return StageResult(key, "skipped", "not a shop's picture (no product): reported, not indexed")
    previous = detection["category"]
    if previous and previous != category and detection["embedding_status"] in ("indexed", "embedded"):
        # The item changed category: its vector must not stay behind in the old one, merged or not.
        app.store.delete(ids.pending_vector_key(previous, detection_id))
        app.store.put(ids.removed_vector_key(previous, detection_id), removal_marker())
    # The row before the vector: an index run that merges the vector then finds the row it marks
    # indexed (in the other order, a run in between would leave it "embedded" for good).
    catalogue.update_detection(
        app.db,
        detection_id,
        category=category,
        category_confidence=confidence,
        embedding_status="embedded",
        embedded_by=app.garment_model.name,
        error=None,
    )
    output = ids.pending_vector_key(category, detection_id)
    try:
        app.store.put(output, encode_vector(prediction.embedding, app.garment_model.name))
    except Exception:
        # The row must not claim a vector that was never written: no index run would merge it.
        # Pending, it is embedded again by a retry, or fetched again once its crop has expired.
        catalogue.update_detection(app.db, detection_id, embedding_status="pending")
        raise
    delete_if_unchanged(app.store, key, crop_etag)  # a newer crop written meanwhile is its own event's
    return StageResult(key, "done", outputs=[output])


# --- index and revalidate ---------------------------------------------------------------------


# Images fetched again per index run after a model change: bounded in number and in time (polite
# fetches take a second or more each), so one run ends well inside the index function's timeout.
REEMBED_BATCH = 500
REEMBED_BUDGET_S = wiring.by_name("index").timeout_s * 0.4
# Revalidate visits what it can in this much of its function's timeout; the next run goes on.
REVALIDATE_BUDGET_S = wiring.by_name("revalidate").timeout_s * 0.6


def index(app: App) -> dict:
    """Merge pending vectors into their category shards (shazzam.index.compact); record them as
    indexed. Then, while the catalogue still holds vectors of an older model, fetch a batch of
    those images again so that the pipeline embeds them with the current one."""
    merged_by_category = compact(app.store, model=app.garment_model.name,
                                 on_merged=lambda _category, added: catalogue.mark_indexed(app.db, added),
                                 on_unmerged=lambda category, held, not_held: catalogue.vectors_not_merged(app.db, category, held, not_held),
                                 on_shard_replaced=lambda category: catalogue.forget_embedders_in_category(app.db, category))
    report = {category: {"added": len(merged["added"]), "removed": len(merged["removed"]), "total": merged["total"]}
              for category, merged in merged_by_category.items()}
    # Items that died while their vectors were pending were merged all the same, and scrapes mark
    # items dead too: out of the shards now rather than at the next revalidate.
    dropped = drop_dead_vectors(app)
    if dropped:
        report["vectors_dropped"] = dropped
    stale = catalogue.images_embedded_by_other_models(app.db, app.garment_model.name, REEMBED_BATCH)
    if stale:
        try:
            # A scrape or revalidate fetching now has the shops' patience: the next run tries again.
            with crawler_turn(app, "re-embedding", REEMBED_BUDGET_S, wait=False) as left_s:
                # All that is stale, not the batch: `shazzam ingest` goes on while it grows fewer.
                report["reembedding"] = {**reembed(app, stale, budget_s=left_s),
                                         "stale": catalogue.count_images_embedded_by_other_models(app.db, app.garment_model.name)}
        except lease.LeaseBusy as busy:
            report["reembedding"] = {"waiting_for": busy.holder}
    return report


def reembed(app: App, stale: list[dict], budget_s: float | None = None) -> dict:
    """Queue the images embedded by another model than the current one (`stale`, see
    scrape.passes.reembed_pass)."""
    from shazzam.scrape.passes import reembed_pass

    return reembed_pass(app, stale, budget_s)


def revalidate(app: App) -> dict:
    """Re-check products and images: 404/410, soft 404s and out-of-stock offers are tombstoned (is_dead,
    with a reason and time), products that came back are revived; dead items leave the shards."""
    from shazzam.scrape.passes import Summary, revalidate_products

    summary = Summary()
    # Dead items leave the shards first too: a run cut short by its timeout still removes them.
    dropped = drop_dead_vectors(app)
    with crawler_turn(app, "revalidate", REVALIDATE_BUDGET_S) as left_s:
        report = {**revalidate_products(app, summary, budget_s=left_s), "vectors_dropped": dropped}
        # Under the crawler lease: no scrape pass holds a tombstone it is about to revive.
        report.update(catalogue.prune_dead_products(app.db, utcnow() - catalogue.PRUNE_DEAD_AFTER))
    report["images_queued"] = summary.counts["images_uploaded"]
    report.update({f"errors.{kind}": n for kind, n in sorted(summary.errors.items())})
    report["vectors_dropped"] += drop_dead_vectors(app)
    return report


def drop_dead_vectors(app: App) -> int:
    """Take the detections of dead products and images out of their shards; returns how many.

    The dead are read after the shards' versions, and dropped from those versions only: an index
    run may merge one of them again meanwhile (its product came back and was embedded anew), and
    then the shard has moved and the dead are read again, rather than a live item dropped."""
    dropped = 0
    for _attempt in range(PUBLISH_ATTEMPTS):
        manifest, _etag = read_manifest(app.store)
        versions = {category: entry.get("version") for category, entry in manifest["shards"].items()}
        moved = False
        for category, dead in catalogue.dead_indexed_detections(app.db).items():
            try:
                try:
                    publish(app.store, category, drop=dead, expect_version=versions.get(category))
                except CorruptShard as exc:
                    # As an index run does (index.compact): else every index and revalidate run fails here.
                    log.error("the %s shard is unreadable (%s): replaced, and its items embedded again", category, exc)
                    catalogue.forget_embedders_in_category(app.db, category)
                    publish(app.store, category, model=manifest["shards"][category].get("model"),
                            expect_version=versions.get(category), replace=True)
            except ShardMoved:
                moved = True
                continue
            catalogue.mark_unindexed(app.db, dead)
            dropped += len(dead)
        if not moved:
            break
    else:
        log.warning("shards kept moving while dead vectors were dropped: the next run drops the rest")
    return dropped


class ScrapeFailed(RuntimeError):
    """No shop a scrape set out to read could be read; `report` is the pass's."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def check_scrape_options(shop_url, limit, source, force) -> None:
    """Raise ValueError, before any work, for options a scrape event's detail got wrong (JSON says
    "2" for 2 and "false" for false as easily): a string "false" would force a new round."""
    for name, value in (("shop_url", shop_url), ("source", source)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number of product pages, 1 or more, not {limit!r}")
    if force is not None and not isinstance(force, bool):  # null reads as false, as the other options' null as absent
        raise ValueError(f"force must be true or false, not {force!r}")


def check_scrape(report: dict) -> None:
    """Raise ScrapeFailed when every shop the pass started on could not be read (the network is
    down, or each shop refuses us): the run failed, though each shop's error is counted."""
    if report.get("shops") and report.get("shops_failed") == report["shops"]:
        errors = ", ".join(f"{name.split('.', 1)[1]} {n}" for name, n in sorted(report.items()) if name.startswith("errors."))
        raise ScrapeFailed(f"none of the {report['shops']} shop(s) could be read ({errors or 'no error counted'})", report)


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


def check_search_parameters(
    app: App,
    category: str | None,
    k: int,
    filters: SearchFilters,
    garment: int | None = None,
    box: list[int] | None = None,
) -> None:
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
    if filters.shop is not None and not catalogue.shop_exists(app.db, filters.shop):
        raise BadRequest(f"unknown shop {filters.shop!r}; shops: {', '.join(catalogue.shop_names(app.db)) or 'none yet'}")
    if garment is not None and (isinstance(garment, bool) or not isinstance(garment, int) or garment < 0):
        raise BadRequest("garment must be an integer of at least 0 (the garment's index in an earlier answer)")
    if box is not None:
        if garment is not None:
            raise BadRequest("give garment or box, not both")
        if (
            not isinstance(box, (list, tuple))
            or len(box) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) for v in box)
            or box[2] <= box[0]
            or box[3] <= box[1]
        ):
            raise BadRequest("box must be four integers left, top, right, bottom in the photo's pixels, right > left and bottom > top")


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
    garment: int | None = None,
    box: list[int] | None = None,
) -> dict:
    """Find the garments in a photo and, for each, the k most similar live catalogue items.

    `garments` lists every garment found, those the catalogue has categories for first, then the
    rest (bag, eyewear, belt: reported with their box, no category and no results), each by
    detector score; `index` is a garment's place in that list. `garment` searches only that one
    (an index from an earlier answer for the same photo); `box` skips the detector and searches
    that part of the photo. `category` overrides the classifier for every garment searched.
    The top-level `results` are the first garment's, for clients that show one list."""
    from shazzam.detector import Detection

    started = time.perf_counter()
    check_search_parameters(app, category, k, filters, garment, box)
    image = load_photo(image_bytes)
    model = app.garment_model
    if box is not None:
        clipped = Box(max(0, box[0]), max(0, box[1]), min(image.width, box[2]), min(image.height, box[3]))
        if clipped.right <= clipped.left or clipped.bottom <= clipped.top:
            raise BadRequest(f"box {list(box)} is outside the {image.width}x{image.height} photo")
        detections = [Detection(box=clipped, label=None, score=1.0)]
    else:
        found = app.detector.detect(image)
        detections = [d for d in found if searchable(d.label)] + [d for d in found if not searchable(d.label)]
    chosen_ones = list(enumerate(detections))
    if garment is not None:
        if garment >= len(detections):
            raise GarmentNotFound(garment, len(detections))
        chosen_ones = [chosen_ones[garment]]
    garments = []
    hidden = hidden_rows(app)  # once for every garment of the photo
    for index, detection in chosen_ones:
        entry = {
            "index": index,
            "box": detection.box.as_list(),
            "label": detection.label,
            "score": round(float(detection.score), 4),
        }
        allowed = SEARCHABLE.get(detection.label) if detection.label is not None else None
        if detection.label is not None and not allowed and not (category and garment is not None):
            # Nothing in the catalogue to search (yet); a garment picked by index with a category is.
            garments.append({**entry, "searchable": False, "category": None, "category_source": None, "predicted_category": None, "confidence": None, "results": []})
            continue
        prediction = model.predict(get_subsection_of_image(image, detection.box))
        # A bag picked with a category has no categories of its own: the classifier has no say.
        predicted, confidence = category_within(prediction.probabilities, allowed) if detection.label is None or allowed else (None, None)
        chosen = category or predicted
        try:
            results = nearest_items(app, chosen, prediction.embedding, k, filters, hidden)
        except StaleShard:
            # The category is still indexed by an older model and is being embedded again.
            log.warning("the %s shard predates model %s: no results until it is re-indexed", chosen, model.name)
            results = []
        garments.append(
            {
                **entry,
                "searchable": True,
                "category": chosen,
                "category_source": "request" if category else "classifier",
                "predicted_category": predicted,
                "confidence": None if confidence is None else round(confidence, 4),
                "results": results,
            }
        )
    return {
        "image": {"width": image.width, "height": image.height},
        "garments": garments,
        "results": garments[0]["results"] if garments else [],
        "model": {"name": model.name, "detector": app.detector.name},
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def nearest_items(app: App, category: str, embedding, k: int, filters: SearchFilters, hidden: Hidden | None = None) -> list[dict]:
    """The k nearest live catalogue items passing the filters, each once (at its nearest picture).

    The shard holds pictures, not items: an item with several pictures has several rows, items
    revalidate has just marked dead are still there (those of shops taken off are too, but the
    search skips them: hidden_rows), and filters drop more. So the search asks
    for more rows than k, and for four times as many again, up to MAX_CANDIDATES, while the
    catalogue join leaves fewer than k items."""
    wanted = FILTERED_CANDIDATES if filters.any() else k + 10
    hidden = hidden if hidden is not None else hidden_rows(app)
    while True:
        hits = app.shards.search(category, embedding, wanted, model=app.garment_model.name, hidden=hidden)
        items = catalogue.items_for_detections(app.db, [detection_id for detection_id, _ in hits], filters)
        results, shown = [], set()
        for detection_id, distance in hits:
            for item in items.get(detection_id, ()):
                if item["product_id"] not in shown:
                    shown.add(item["product_id"])
                    results.append(_result(item, distance))
        if len(results) >= k or len(hits) < wanted or wanted >= MAX_CANDIDATES:
            return results[:k]
        wanted = min(wanted * 4, MAX_CANDIDATES)


def hidden_rows(app: App) -> Hidden:
    """The shard rows of shops taken off (catalogue.detections_only_shops_taken_off_show), which no
    search reads; the shard reader reads them again when the key changes."""
    taken_off = catalogue.shops_taken_off(app.db)
    if not taken_off:
        return Hidden(taken_off, frozenset)
    return Hidden((taken_off, int(time.time() // HIDDEN_ROWS_READ_S)), lambda: catalogue.detections_only_shops_taken_off_show(app.db))


def _result(item: dict, distance: float) -> dict:
    return {
        "item_id": item["product_id"],
        "title": item["title"],
        "shop": item["shop"],
        "brand": item["brand"],
        "price": price_text(item["price"], item["currency"]),
        "currency": item["currency"],
        "url": item["url"],
        "image_url": item["image_url"],
        "distance": round(distance, 4),
    }
