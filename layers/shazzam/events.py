"""Builders for the event shapes AWS delivers, used by the embedded runtime to call handlers."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote_plus

ACCOUNT = "000000000000"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def s3_object_created(bucket: str, key: str, size: int, etag: str, region: str = "local") -> dict:
    """The notification S3 sends for a PUT, with the key URL-encoded as S3 does."""
    now = _now()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "local", "x-amz-id-2": "local"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "shazzam-local",
                    "bucket": {"name": bucket, "ownerIdentity": {"principalId": "local"}, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag.strip('"'),
                        "sequencer": f"{time.time_ns():X}",
                    },
                },
            }
        ]
    }


def scheduled(rule: str, detail: dict | None = None, region: str = "local") -> dict:
    """The event an EventBridge schedule rule delivers (its detail is empty unless set by hand)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule}"],
        "detail": detail or {},
    }


def query_string_parameters(query: str) -> dict[str, str] | None:
    """As API Gateway's payload 2.0 gives them: a parameter sent twice arrives comma-joined."""
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(query):
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters or None


def http_api_request(method: str, path: str, query: str = "", headers: dict | None = None, body: bytes = b"", source_ip: str = "127.0.0.1") -> dict:
    """An API Gateway HTTP API (payload format 2.0) request; bodies travel base64-encoded."""
    headers = {name.lower(): value for name, value in (headers or {}).items()}
    now = _now()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "queryStringParameters": query_string_parameters(query),
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }
