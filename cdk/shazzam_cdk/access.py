"""Which object-store prefixes each function touches: its IAM grants (least privilege).

Read from the code paths in shazzam.pipeline, shazzam.index, shazzam.api and shazzam.scrape;
tests/infrastructure checks it agrees with the wiring table (each stage reads its trigger prefix
and writes the next stage's).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrefixAccess:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


ACCESS: dict[str, PrefixAccess] = {
    # Downloads product images into incoming/ (the start of the ingest flow).
    "scrape": PrefixAccess(write=("incoming/",)),
    # A photo put under a file name (incoming/street-1.jpg) is moved to its id-shaped key first.
    "detect": PrefixAccess(read=("incoming/",), write=("detections/", "incoming/"), delete=("incoming/",)),
    # Consumes its inputs: the image and its detections document go once the crops are written.
    "standardise": PrefixAccess(read=("detections/", "incoming/"), write=("standard/",), delete=("detections/", "incoming/")),
    # Deletes its input; an item re-filed before it was indexed loses its pending vector of the old category.
    "embed": PrefixAccess(read=("standard/",), write=("vectors/pending/", "vectors/removed/"), delete=("standard/", "vectors/pending/")),
    # Lists, merges and deletes pending vectors into new shard versions, swaps the manifest, prunes old versions;
    # sets an unreadable pending vector aside; after a model change, puts images embedded by the old model back
    # into incoming/ (pipeline.reembed).
    "index": PrefixAccess(read=("vectors/", "index/"), write=("index/", "incoming/", "vectors/unreadable/"), delete=("vectors/", "index/")),
    # Re-queues changed images and drops dead items from the shards.
    "revalidate": PrefixAccess(read=("index/",), write=("incoming/", "index/"), delete=("index/",)),
    # Reads shards; presigns uploads/ posts (signed with its role) and deletes each after its search.
    "search": PrefixAccess(read=("index/", "uploads/"), write=("uploads/",), delete=("uploads/",)),
}

# Transient prefixes: whatever the pipeline fails to consume is gone a day later anyway.
TRANSIENT_PREFIXES = ("incoming/", "detections/", "standard/", "uploads/")
