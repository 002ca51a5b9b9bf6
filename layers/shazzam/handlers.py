"""Lambda entry points built from pipeline stages: event parsing with powertools, nothing else.

Each `functions/<name>/handler.py` is one line over these, so the event plumbing lives once.
A stage that rejects its input (a corrupt image, say) records why and returns normally; an
unexpected exception propagates so Lambda retries and then dead-letters the event.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import IO, Callable, Iterator
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event

from shazzam import app as app_module
from shazzam.pipeline import StageResult

class _LogStream:
    """Where the functions' log lines go: stdout, which Lambda sends on to CloudWatch, unless the
    `shazzam` command sets `to_stderr`, so that its stdout holds only results. Looked up at each
    write, so a logger made before the command set it, or a stream swapped since, is followed."""

    to_stderr = False

    def _stream(self) -> IO[str]:
        return sys.stderr if self.to_stderr else sys.stdout

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()


LOG_STREAM = _LogStream()
LOG_LEVEL_ENV = "POWERTOOLS_LOG_LEVEL"
# A logger of each service made so far. Powertools reads the level from the environment only when
# the first logger of a service is made (later ones share its level), so a command that sets the
# level sets it on these too.
_LOGGERS: dict[str, Logger] = {}


def function_logger(service: str) -> Logger:
    logger = _LOGGERS[service] = Logger(service=f"shazzam-{service}", stream=LOG_STREAM)
    return logger


@contextmanager
def log_level(level: str) -> Iterator[None]:
    """The functions' loggers at `level` while the `shazzam` command runs (at $POWERTOOLS_LOG_LEVEL
    where the user set it): those made before and those made meanwhile; the standard library's (the
    root logger) at `level`. The environment, and the loggers' levels, are as they were after, so a
    second command in the process has its own (basicConfig's level holds only for the first)."""
    before = os.environ.get(LOG_LEVEL_ENV)
    root = logging.getLogger()
    root_before = root.level
    os.environ[LOG_LEVEL_ENV] = before or level
    root.setLevel(level)
    _reread_levels()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LOG_LEVEL_ENV, None)
        else:
            os.environ[LOG_LEVEL_ENV] = before
        root.setLevel(root_before)
        _reread_levels()


def _reread_levels() -> None:
    for logger in _LOGGERS.values():
        logger.setLevel(None)  # the environment's level, as powertools reads it when it makes a logger


def s3_stage_handler(stage: Callable[[app_module.App, str], StageResult], service: str):
    logger = function_logger(service)

    @logger.inject_lambda_context
    def lambda_handler(event: dict, context) -> dict:
        event = redriven_event(event)
        check_s3_notification(event, service)
        app = app_module.current()
        results = []
        for record in S3Event(event).records:
            # S3 URL-encodes keys in notifications, and powertools' get_object.key returns them raw.
            result = stage(app, unquote_plus(record.s3.get_object.key))
            if result.status == "failed":
                logger.warning("input rejected", extra=result.as_dict())
            elif result.status == "skipped":  # a redrive of an expired object reads so, for one
                logger.info("nothing to do", extra=result.as_dict())
            results.append(result.as_dict())
        return {"results": results}

    return lambda_handler


def redriven_event(event):
    """The event itself, also when what arrives is the record of Lambda's on-failure destination
    that the failure queue holds (the event under `requestPayload`, beside why it failed): a
    message of that queue given back to its function is a redrive of the event it names."""
    if (isinstance(event, dict) and isinstance(event.get("requestPayload"), dict)
            and isinstance(event.get("requestContext"), dict) and "condition" in event["requestContext"]):
        return event["requestPayload"]
    return event


def check_s3_notification(event, service: str) -> None:
    """Raise ValueError naming what arrived when it is not an S3 notification: a wiring mistake
    (a rule or a test invoke aimed at the wrong function) reads as such, not as KeyError 'Records'."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not all(isinstance(record, dict) and isinstance(record.get("s3"), dict) for record in records):
        what = f"source {event.get('source')!r}, detail-type {event.get('detail-type')!r}" if isinstance(event, dict) else type(event).__name__
        raise ValueError(f"{service} takes S3 ObjectCreated notifications; this event is not one ({what})")


def scheduled_handler(job: Callable[..., dict], service: str, options: tuple[str, ...] = (),
                      check: Callable[[dict], None] | None = None):
    """A job run by an EventBridge schedule; `options` may be passed in the event's detail, and
    anything else there is a ValueError before any work. `check` raises for a report that says the
    run failed, once it is logged: the invocation then fails (retried, then sent to the failure
    queue, which alarms) instead of reading as a success."""
    logger = function_logger(service)

    @logger.inject_lambda_context
    def lambda_handler(event: dict, context) -> dict:
        event = redriven_event(event)
        if not isinstance(event, dict) or "detail-type" not in event:
            # A misaimed invoke (an S3 notification, the console's test event) must not start a crawl of every shop.
            raise ValueError("not an EventBridge event (it has no detail-type)")
        detail = event.get("detail")
        detail = {} if detail is None else detail  # a hand-made event may have none
        if not isinstance(detail, dict):
            raise ValueError(f"detail must be a JSON object of options, not {detail!r}")
        # A misspelt option would otherwise be dropped, and the run do what it does without one.
        unknown = sorted(set(detail) - set(options))
        if unknown:
            taken = ", ".join(sorted(options)) or "none"
            raise ValueError(f"unknown detail option {', '.join(map(repr, unknown))} ({service} takes {taken})")
        report = job(app_module.current(), **{name: detail[name] for name in options if name in detail})
        logger.info("done", extra={"report": report})
        if check is not None:
            check(report)
        return report

    return lambda_handler
