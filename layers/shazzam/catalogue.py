"""The catalogue's reads and writes: shops, products, images, detections (one place for the SQL)."""

from __future__ import annotations

from typing import Iterable, Sequence

import sqlalchemy as sa

from shazzam import ids
from shazzam.db import Database, detections, images, products, shops, upsert, utcnow


def add_shop(db: Database, base_url: str, name: str | None = None) -> str:
    shop_id = ids.shop_id(base_url)
    with db.transaction() as connection:
        connection.execute(
            upsert(
                connection,
                shops,
                {"id": shop_id, "base_url": base_url, "name": name or base_url, "active": True, "created_at": utcnow()},
                update=("name", "active"),
            )
        )
    return shop_id


def active_shops(db: Database) -> list[dict]:
    with db.transaction() as connection:
        rows = connection.execute(sa.select(shops).where(shops.c.active.is_(True)).order_by(shops.c.base_url))
        return [dict(row) for row in rows.mappings()]


def mark_shop_scraped(db: Database, shop_id: str) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(shops).where(shops.c.id == shop_id).values(last_scraped_at=utcnow()))


def save_product(db: Database, shop_id: str, product) -> str:
    """Insert or refresh a scraped product (it is alive again if it was dead)."""
    product_id = ids.product_id(product.url)
    now = utcnow()
    values = {
        "id": product_id,
        "shop_id": shop_id,
        "url": product.url,
        "title": product.title[:512],
        "price": product.price,
        "currency": product.currency,
        "category": product.category,
        "brand": (product.brand or None) and product.brand[:255],
        "sku": (product.sku or None) and product.sku[:255],
        "is_dead": False,
        "created_at": now,
        "last_seen_at": now,
    }
    with db.transaction() as connection:
        connection.execute(upsert(connection, products, values, update=[k for k in values if k not in ("id", "created_at")]))
    return product_id


def get_image(db: Database, image_id: str) -> dict | None:
    with db.transaction() as connection:
        row = connection.execute(sa.select(images).where(images.c.id == image_id)).mappings().first()
        return dict(row) if row else None


def save_image(db: Database, image_id: str, src_link: str, product_id: str | None) -> None:
    """Make sure the image row exists (keeps its status and hash if it does)."""
    now = utcnow()
    values = {
        "id": image_id,
        "product_id": product_id,
        "src_link": src_link,
        "status": "new",
        "is_dead": False,
        "created_at": now,
        "updated_at": now,
    }
    with db.transaction() as connection:
        connection.execute(upsert(connection, images, values, update=("is_dead", "updated_at")))


def update_image(db: Database, image_id: str, **values) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(images).where(images.c.id == image_id).values(updated_at=utcnow(), **values))


def product_category_of_image(db: Database, image_id: str) -> str | None:
    with db.transaction() as connection:
        return connection.execute(
            sa.select(products.c.category).join(images, images.c.product_id == products.c.id).where(images.c.id == image_id)
        ).scalar()


def save_detections(db: Database, image_id: str, found: Sequence[dict]) -> None:
    """Replace the image's detections with `found` (dicts: id, box, label, score)."""
    now = utcnow()
    with db.transaction() as connection:
        keep = [d["id"] for d in found]
        connection.execute(sa.delete(detections).where(detections.c.image_id == image_id, detections.c.id.not_in(keep)))
        for detection in found:
            left, top, right, bottom = detection["box"]
            values = {
                "id": detection["id"],
                "image_id": image_id,
                "box_left": left,
                "box_top": top,
                "box_right": right,
                "box_bottom": bottom,
                "label": detection["label"],
                "score": detection["score"],
                "embedding_status": "pending",
                "created_at": now,
                "updated_at": now,
            }
            connection.execute(
                upsert(connection, detections, values, update=("box_left", "box_top", "box_right", "box_bottom", "label", "score", "updated_at"))
            )


def get_detection(db: Database, detection_id: str) -> dict | None:
    with db.transaction() as connection:
        row = connection.execute(sa.select(detections).where(detections.c.id == detection_id)).mappings().first()
        return dict(row) if row else None


def update_detection(db: Database, detection_id: str, **values) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(detections).where(detections.c.id == detection_id).values(updated_at=utcnow(), **values))


def mark_indexed(db: Database, detection_ids: Iterable[str]) -> None:
    detection_ids = list(detection_ids)
    with db.transaction() as connection:
        for start in range(0, len(detection_ids), 500):
            chunk = detection_ids[start : start + 500]
            connection.execute(
                sa.update(detections)
                .where(detections.c.id.in_(chunk), detections.c.embedding_status == "embedded")
                .values(embedding_status="indexed", updated_at=utcnow())
            )


def live_products(db: Database) -> list[dict]:
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(products.c.id, products.c.url).where(products.c.is_dead.is_(False)).order_by(products.c.url)
        )
        return [dict(row) for row in rows.mappings()]


def live_images(db: Database) -> list[dict]:
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(images.c.id, images.c.src_link)
            .join(products, images.c.product_id == products.c.id)
            .where(images.c.is_dead.is_(False), products.c.is_dead.is_(False))
            .order_by(images.c.id)
        )
        return [dict(row) for row in rows.mappings()]


def mark_product_dead(db: Database, product_id: str) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(is_dead=True))
        connection.execute(sa.update(images).where(images.c.product_id == product_id).values(is_dead=True, updated_at=utcnow()))


def dead_indexed_detections(db: Database) -> dict[str, set[str]]:
    """Detections still in a shard whose image or product is dead, by category."""
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(detections.c.id, detections.c.category)
            .join(images, detections.c.image_id == images.c.id)
            .outerjoin(products, images.c.product_id == products.c.id)
            .where(
                detections.c.embedding_status == "indexed",
                sa.or_(images.c.is_dead.is_(True), products.c.is_dead.is_(True)),
            )
        )
        grouped: dict[str, set[str]] = {}
        for row in rows:
            grouped.setdefault(row.category, set()).add(row.id)
        return grouped


def mark_unindexed(db: Database, detection_ids: Iterable[str]) -> None:
    detection_ids = list(detection_ids)
    with db.transaction() as connection:
        for start in range(0, len(detection_ids), 500):
            connection.execute(
                sa.update(detections)
                .where(detections.c.id.in_(detection_ids[start : start + 500]))
                .values(embedding_status="removed", updated_at=utcnow())
            )


def items_for_detections(db: Database, detection_ids: Sequence[str]) -> dict[str, dict]:
    """The live catalogue item behind each detection id: product, price, shop, picture."""
    if not detection_ids:
        return {}
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(
                detections.c.id.label("detection_id"),
                products.c.id.label("product_id"),
                products.c.title,
                products.c.url,
                products.c.price,
                products.c.currency,
                products.c.brand,
                products.c.category,
                images.c.src_link.label("image_url"),
                shops.c.name.label("shop"),
            )
            .join(images, detections.c.image_id == images.c.id)
            .join(products, images.c.product_id == products.c.id)
            .join(shops, products.c.shop_id == shops.c.id)
            .where(detections.c.id.in_(list(detection_ids)), products.c.is_dead.is_(False), images.c.is_dead.is_(False))
        )
        return {row["detection_id"]: dict(row) for row in rows.mappings()}


def counts(db: Database) -> dict[str, int]:
    with db.transaction() as connection:
        scalar = lambda statement: connection.execute(statement).scalar() or 0  # noqa: E731
        return {
            "shops": scalar(sa.select(sa.func.count()).select_from(shops)),
            "products": scalar(sa.select(sa.func.count()).select_from(products).where(products.c.is_dead.is_(False))),
            "images": scalar(sa.select(sa.func.count()).select_from(images)),
            "images_failed": scalar(sa.select(sa.func.count()).select_from(images).where(images.c.status == "failed")),
            "detections": scalar(sa.select(sa.func.count()).select_from(detections)),
            "indexed": scalar(sa.select(sa.func.count()).select_from(detections).where(detections.c.embedding_status == "indexed")),
        }
