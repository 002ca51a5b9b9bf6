"""The standardise function: S3 ObjectCreated -> shazzam.pipeline.standardise (see shazzam.wiring for its trigger)."""

from shazzam import pipeline
from shazzam.handlers import s3_stage_handler

lambda_handler = s3_stage_handler(pipeline.standardise, service="standardise")
