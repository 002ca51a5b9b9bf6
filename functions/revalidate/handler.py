"""The revalidate function: EventBridge schedule -> shazzam.pipeline.revalidate (drop dead items)."""

from shazzam import pipeline
from shazzam.handlers import scheduled_handler

lambda_handler = scheduled_handler(pipeline.revalidate, service="revalidate")
