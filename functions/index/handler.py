"""The index function: EventBridge schedule -> shazzam.pipeline.index (merge pending vectors into shards)."""

from shazzam import pipeline
from shazzam.handlers import scheduled_handler

lambda_handler = scheduled_handler(pipeline.index, service="index")
