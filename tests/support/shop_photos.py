"""A shop's picture as the scraper leaves it, for tests that drive the ingest stages by hand."""

from __future__ import annotations

from shazzam import catalogue, ids
from shazzam.scrape import ScrapedProduct


def put_shop_photo(target, image: bytes, number: int = 1, category: str | None = None, image_id: str | None = None,
                   shop_id: str | None = None) -> str:
    """Product `number` of a shop (https://shop.example/ unless `shop_id`) with one picture: its rows,
    then the photo in incoming/ (under `image_id` if given). `target` is a LocalRuntime or an App.
    Returns the image id. A photo no shop sells is reported, not indexed: tests of the index need this."""
    shop_id = shop_id or catalogue.add_shop(target.db, "https://shop.example/")
    base_url = catalogue.shops_by_id(target.db)[shop_id]["base_url"]
    product = ScrapedProduct(
        url=f"{base_url}p/{number}", title="A product", price=None, currency=None, category=category,
        brand=None, sku=str(number), image_urls=(f"{base_url}i/{number}.jpg",),
    )
    product_id = catalogue.save_product(target.db, shop_id, product)
    image_id = image_id or ids.image_id(product.image_urls[0])
    catalogue.save_image(target.db, image_id, product.image_urls[0], product_id)
    target.store.put(ids.incoming_key(image_id), image)
    return image_id
