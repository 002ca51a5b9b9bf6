"""The scrape function: EventBridge schedule -> shazzam.pipeline.scrape.

A scheduled event scrapes every active shop; a manual event may name one in its detail:
{"shop_url": "https://shop.example/", "limit": 50}, or a source by name: {"source": "Example", "force": true}.
"""

from shazzam import pipeline
from shazzam.handlers import scheduled_handler

lambda_handler = scheduled_handler(pipeline.scrape, service="scrape", options=("shop_url", "limit", "source", "force"),
                                   check=pipeline.check_scrape)
