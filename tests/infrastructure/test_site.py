"""The web page's static site: a private bucket read by CloudFront alone (origin access control),
the files of web/ deployed into it, and the page told the API's URL at deploy time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aws_cdk.assertions import Match
from shazzam_cdk.site import page_with_api

ROOT = Path(__file__).resolve().parents[2]


def of_type(resources: dict, kind: str) -> dict:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def one(resources: dict, kind: str, prefix: str = "") -> tuple[str, dict]:
    (found,) = [(i, r) for i, r in of_type(resources, kind).items() if i.startswith(prefix)]
    return found


def test_site_bucket_is_private_encrypted_ssl_only_and_logged(resources):
    _, bucket = one(resources, "AWS::S3::Bucket", "SiteFiles")
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert properties["LoggingConfiguration"]["LogFilePrefix"] == "site/"
    assert "WebsiteConfiguration" not in properties  # not an S3 website endpoint: CloudFront reads it over the S3 API


def test_only_this_distribution_may_read_the_site_bucket(resources):
    bucket, _ = one(resources, "AWS::S3::Bucket", "SiteFiles")
    distribution, _ = one(resources, "AWS::CloudFront::Distribution")
    (policy,) = [p for p in of_type(resources, "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket}]
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    source_arn = allow["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Join"][1]
    assert {"Ref": distribution} in source_arn  # this distribution only, not any CloudFront
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert denies and denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_distribution_uses_origin_access_control_https_and_logs(template, resources):
    template.has_resource_properties(
        "AWS::CloudFront::OriginAccessControl",
        {
            "OriginAccessControlConfig": Match.object_like(
                {"OriginAccessControlOriginType": "s3", "SigningBehavior": "always", "SigningProtocol": "sigv4"}
            )
        },
    )
    bucket, _ = one(resources, "AWS::S3::Bucket", "SiteFiles")
    logs, _ = one(resources, "AWS::S3::Bucket", "SiteCdnLogs")
    _, distribution = one(resources, "AWS::CloudFront::Distribution")
    config = distribution["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": [bucket, "RegionalDomainName"]}
    assert "OriginAccessControlId" in origin
    assert origin["S3OriginConfig"].get("OriginAccessIdentity", "") == ""  # no legacy OAI
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
    assert "ResponseHeadersPolicyId" in behaviour
    assert config["DefaultRootObject"] == "index.html"
    assert config["Logging"]["Bucket"] == {"Fn::GetAtt": [logs, "RegionalDomainName"]}


def test_security_headers_allow_the_api_and_the_upload_bucket_only(resources):
    api, _ = one(resources, "AWS::ApiGatewayV2::Api")
    objects, _ = one(resources, "AWS::S3::Bucket", "StorageObjects")
    _, policy = one(resources, "AWS::CloudFront::ResponseHeadersPolicy")
    headers = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["ContentTypeOptions"]["Override"] is True
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    parts = headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "<ref>" for p in parts)
    assert "default-src 'none'" in text and "script-src 'self'" in text and "frame-ancestors 'none'" in text
    assert {"Fn::GetAtt": [api, "ApiEndpoint"]} in parts
    assert {"Fn::GetAtt": [objects, "DomainName"]} in parts and {"Fn::GetAtt": [objects, "RegionalDomainName"]} in parts
    connect = re.search(r"connect-src ([^;]*)", text).group(1)
    assert "*" not in connect


def test_page_is_deployed_with_the_api_url_written_in(stack, resources):
    _, deployment = one(resources, "Custom::CDKBucketDeployment")
    properties = deployment["Properties"]
    site_bucket, _ = one(resources, "AWS::S3::Bucket", "SiteFiles")
    distribution, _ = one(resources, "AWS::CloudFront::Distribution")
    assert properties["DestinationBucketName"] == {"Ref": site_bucket}
    assert properties["DistributionId"] == {"Ref": distribution} and properties["DistributionPaths"] == ["/*"]
    assert properties["Prune"] is True
    outdir = Path(stack.node.root.outdir)
    files, page = (outdir / f"asset.{key.removesuffix('.zip')}" for key in properties["SourceObjectKeys"])
    # web/ as it is, but for index.html, which is written with the API's URL.
    assert sorted(p.name for p in files.iterdir()) == sorted(p.name for p in (ROOT / "web").iterdir() if p.name != "index.html")
    html = (page / "index.html").read_text()
    meta = re.search(r'<meta name="shazzam-api" content="([^"]*)">', html).group(1)
    markers = properties["SourceMarkers"][1]
    api, _ = one(resources, "AWS::ApiGatewayV2::Api")
    assert meta.startswith("https://<<marker:") and meta.endswith("/")
    used = re.findall(r"<<marker:0x[0-9a-f]+:\d+>>", meta)
    assert used and set(used) <= set(markers)
    assert {"Ref": api} in [markers[m] for m in used]  # the HTTP API's id: its stage URL at deploy time
    # the rest of the page is the page
    assert html == page_with_api((ROOT / "web" / "index.html").read_text(), meta)


def test_page_with_api_sets_the_one_meta():
    html = '<head><meta name="shazzam-api" content=""><title>x</title></head>'
    assert page_with_api(html, "https://api.example/") == (
        '<head><meta name="shazzam-api" content="https://api.example/"><title>x</title></head>'
    )
    with pytest.raises(ValueError):
        page_with_api("<head></head>", "https://api.example/")


def test_site_url_is_an_output(template):
    outputs = template.to_json()["Outputs"]
    assert "SiteUrl" in outputs and "ApiUrl" in outputs
    distribution = one(template.to_json()["Resources"], "AWS::CloudFront::Distribution")[0]
    assert {"Fn::GetAtt": [distribution, "DomainName"]} in outputs["SiteUrl"]["Value"]["Fn::Join"][1]
