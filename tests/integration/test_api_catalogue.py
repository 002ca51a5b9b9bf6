"""The API's catalogue reads on SQLite and MariaDB: search filters in SQL, one item, the shops."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from shazzam import catalogue, ids
from shazzam.db import Database
from shazzam.pipeline import SearchFilters


def add_item(db, shop_id: str, n: int, price: str | None, currency: str | None = "EUR") -> str:
    url = f"https://shop.example/p/{n}"
    product = SimpleNamespace(
        url=url, title=f"Item {n}", price=price and Decimal(price), currency=currency, category="dress", brand=None, sku=str(n), image_urls=()
    )
    product_id = catalogue.save_product(db, shop_id, product)
    image_id = ids.image_id(f"{url}.jpg")
    catalogue.save_image(db, image_id, f"{url}.jpg", product_id)
    catalogue.save_detections(db, image_id, [{"id": f"d{n}", "box": [0, 0, 1, 1], "label": "dress", "score": 1.0}])
    return product_id


def test_filters_and_items(db_url):
    db = Database(db_url).open_connection()
    try:
        north = catalogue.add_shop(db, "https://north.example/", name="North")
        south = catalogue.add_shop(db, "https://south.example/", name="South")
        first = add_item(db, north, 1, "19.99")
        add_item(db, north, 2, "45.00")
        add_item(db, south, 3, "80.50", currency="USD")
        add_item(db, south, 4, None)
        every = ["d1", "d2", "d3", "d4"]

        def found(**filters) -> set[str]:
            return set(catalogue.items_for_detections(db, every, SearchFilters(**filters)))

        assert found() == set(every)
        assert found(min_price=Decimal("20"), max_price=Decimal("80.50")) == {"d2", "d3"}  # no price never passes a limit
        assert found(max_price=Decimal("19.99")) == {"d1"}
        # Limits between two cents, exactly, on either database (SQLite compares the nearest float)
        assert found(max_price=Decimal("45.009999999999999")) == {"d1", "d2"}
        assert found(max_price=Decimal("44.999999999999999")) == {"d1"}
        assert found(min_price=Decimal("45.00000000000001")) == {"d3"}
        assert found(min_price=Decimal("1e-400"), max_price=Decimal("1e400")) == {"d1", "d2", "d3"}
        # MySQL's driver writes a Decimal out digit by digit: a gigabyte of query, or MemoryError
        assert found(max_price=Decimal("1e999999999999999999")) == {"d1", "d2", "d3"}
        assert found(min_price=Decimal("1e999999999999999999")) == set()
        assert found(currency="USD") == {"d3"}
        assert found(shop="South") == {"d3", "d4"} and found(shop=north) == {"d1", "d2"}
        assert catalogue.items_for_detections(db, []) == {}

        item = catalogue.get_item(db, first)
        assert item["title"] == "Item 1" and item["price"] == Decimal("19.99") and item["shop"] == "North"
        assert item["image_urls"] == ["https://shop.example/p/1.jpg"] and not item["is_dead"]
        assert catalogue.get_item(db, "unknown") is None
        assert catalogue.shop_names(db) == ["North", "South"]
        # A name is trimmed as the search's value is; a shop taken off is one a search cannot name.
        padded = catalogue.add_shop(db, "https://padded.example/", name=" Padded Shop ")
        assert catalogue.shop_ids(db, " Padded Shop ") == [padded] and "Padded Shop" in catalogue.shop_names(db)
        catalogue.take_shop_off(db, "https://south.example/")
        assert not catalogue.shop_exists(db, "South") and not catalogue.shop_exists(db, south)
    finally:
        db.close()
