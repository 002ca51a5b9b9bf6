"""Stable ids derived from URLs and content, so every replayed event addresses the same rows and keys."""

from __future__ import annotations

import hashlib
import re


def _digest(kind: str, value: str) -> str:
    return hashlib.sha1(f"{kind}:{value}".encode(), usedforsecurity=False).hexdigest()


def shop_id(base_url: str) -> str:
    return _digest("shop", base_url)


def product_id(url: str) -> str:
    return _digest("product", url)


def image_id(src_link: str) -> str:
    return _digest("image", src_link)


def detection_id(image_id: str, index: int) -> str:
    return f"{image_id}-{index:03d}"


# Object keys of the ingest flow: each stage's output is the next stage's trigger.
MAX_ID_LENGTH = 40  # the id columns' width (a SHA-1 in hex)


def image_id_of_name(name: str) -> str:
    """An image id for a file put into incoming/ by hand: its name when a key's stem can hold it;
    else its first 23 characters in lower case with what a stem cannot hold (dots, slashes, spaces)
    turned into "_", and a digest of the whole name, so that names alike but for those ("look 1.jpg",
    "look_1.jpg", "look/1.jpg") stay three photos ("street-1.jpg" -> "street-1_jpg_" + 16 hex digits).
    Capitals take the digest too: MySQL compares ids case-blind, and "IMG_1" and "img_1" are two photos."""
    cleaned = re.sub(r"[^a-z0-9_-]", "_", name.lower()) or "_"
    if cleaned == name and len(name) <= MAX_ID_LENGTH:
        return name
    return f"{cleaned[:23]}_{_digest('name', name)[:16]}"


def incoming_key(image_id: str) -> str:
    return f"incoming/{image_id}"


def detections_key(image_id: str) -> str:
    return f"detections/{image_id}.json"


def standard_key(detection_id: str) -> str:
    return f"standard/{detection_id}.png"


def pending_vector_key(category: str, detection_id: str) -> str:
    return f"vectors/pending/{category}/{detection_id}.npy"


def removed_vector_key(category: str, detection_id: str) -> str:
    """An empty marker: drop this detection from the category's shard at the next index run."""
    return f"vectors/removed/{category}/{detection_id}"


def key_stem(key: str) -> str:
    """`prefix/.../name.ext` -> `name`."""
    name = key.rsplit("/", 1)[-1]
    return name.split(".", 1)[0]
