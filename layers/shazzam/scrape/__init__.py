"""The scraper: shop sources, polite fetching, discovery, extraction, deduplication.

    fetch.py       Fetcher: robots.txt, politeness, retries, caps, address guard, conditional GET
    sources.py     ShopSource: what to scrape and how politely (TOML file or `shops` rows)
    crawl.py       Crawl: one pass over a source (sitemaps, listing pages, Shopify feed)
    extract.py     products out of JSON-LD, microdata, OpenGraph and Shopify feeds
    categories.py  the ten categories and the mapping of shop wording onto them
    dedup.py       image content checks and the perceptual hash
"""

from shazzam.scrape.categories import CATEGORIES, normalise_category
from shazzam.scrape.crawl import CachedPage, Crawl, PageOutcome, discover_product_urls, scrape_shop
from shazzam.scrape.extract import ScrapedProduct, extract_products, shopify_products
from shazzam.scrape.fetch import USER_AGENT, FetchError, Fetcher, FetchPolicy, FetchResult, RobotsDisallowed
from shazzam.scrape.sources import ShopSource, load_sources

__all__ = [
    "CATEGORIES",
    "USER_AGENT",
    "CachedPage",
    "Crawl",
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "Fetcher",
    "PageOutcome",
    "RobotsDisallowed",
    "ScrapedProduct",
    "ShopSource",
    "discover_product_urls",
    "extract_products",
    "load_sources",
    "normalise_category",
    "scrape_shop",
    "shopify_products",
]
