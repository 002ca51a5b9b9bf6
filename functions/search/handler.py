"""The search function: API Gateway HTTP API routes (POST /search, GET /categories, GET /health)."""

from shazzam.api import lambda_handler  # noqa: F401  (the routes live in shazzam.api)
