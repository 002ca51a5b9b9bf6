"""The web page (web/) as a static site: a private bucket that only CloudFront may read (origin
access control), served over HTTPS with security headers, its files put there at deploy time.

The page finds the API through `<meta name="shazzam-api">` (empty locally: the page's own origin).
The deployed index.html is web/index.html with that meta's content set to the API's URL, a
deploy-time value BucketDeployment writes in (Source.data markers); the other files go as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from .storage import PRIVATE

API_META = re.compile(r'(<meta name="shazzam-api" content=")[^"]*(")')


def page_with_api(index_html: str, api_url: str) -> str:
    """index.html whose shazzam-api meta names `api_url` (a token here, the URL once deployed)."""
    page, count = API_META.subn(lambda m: m.group(1) + api_url + m.group(2), index_html)
    if count != 1:
        raise ValueError('web/index.html must hold exactly one <meta name="shazzam-api" content="...">')
    return page


def content_security_policy(api_origin: str, upload_hosts: list[str]) -> str:
    """The page's own files only; photos and results' pictures from anywhere over HTTPS (shops' CDNs);
    fetches to the API and to the upload bucket (the presigned POST of photos over 4 MB)."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob: https:",
            "connect-src 'self' " + " ".join([api_origin, *(f"https://{host}" for host in upload_hosts)]),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ]
    )


class WebSite(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        web_dir: Path,
        api_url: str,
        api_origin: str,
        upload_bucket: s3.IBucket,
        access_logs: s3.IBucket,
        retain_logs: bool = True,
        domain_name: str | None = None,
        certificate_arn: str | None = None,
    ):
        super().__init__(scope, id)
        # The files come from the repository on every deploy: nothing here is worth keeping, so the
        # bucket goes with the stack (BucketDeployment empties it first: retain_on_delete=False).
        self.bucket = s3.Bucket(
            self,
            "Files",
            **PRIVATE,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="site/",
            removal_policy=RemovalPolicy.DESTROY,
        )
        # CloudFront's standard logs are written with ACLs, which the access-log bucket (owner
        # enforced) refuses: they get a bucket of their own, itself access-logged.
        self.cdn_logs = s3.Bucket(
            self,
            "CdnLogs",
            **PRIVATE,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="cdn-logs/",
            lifecycle_rules=[s3.LifecycleRule(id="expire-cdn-logs", expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN if retain_logs else RemovalPolicy.DESTROY,
        )
        stack = Stack.of(self)
        upload_hosts = [upload_bucket.bucket_domain_name, upload_bucket.bucket_regional_domain_name]
        self.headers = cloudfront.ResponseHeadersPolicy(
            self,
            "Headers",
            comment=f"{stack.stack_name}: the page's security headers",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(api_origin, upload_hosts), override=True
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.days(365), include_subdomains=True, override=True
                ),
            ),
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Cdn",
            comment="Shazzam for Clothes: the web page",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers,
                compress=True,
            ),
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            **self._viewer_certificate(domain_name, certificate_arn),
            enable_logging=True,
            log_bucket=self.cdn_logs,
            log_file_prefix="cdn/",
        )
        page = page_with_api((web_dir / "index.html").read_text(), api_url)
        self.deployment = s3deploy.BucketDeployment(
            self,
            "Deploy",
            sources=[
                s3deploy.Source.asset(str(web_dir), exclude=["index.html", ".*"]),
                s3deploy.Source.data("index.html", page),
            ],
            destination_bucket=self.bucket,
            prune=True,
            retain_on_delete=False,
            # A deploy shows at once: CloudFront drops its cached copies of every file.
            distribution=self.distribution,
            distribution_paths=["/*"],
            memory_limit=256,
            # A group of its own, named in the handler's configuration, is made before the handler:
            # the copy runs it in this same deploy, and would otherwise race CDK's /aws/lambda/<name>
            # group to make it.
            log_group=logs.LogGroup(self, "DeployLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY),
        )

    def _viewer_certificate(self, domain_name: str | None, certificate_arn: str | None) -> dict:
        """A domain of one's own (its ACM certificate in us-east-1) allows TLS 1.2+ only; the default
        *.cloudfront.net certificate cannot be held to a minimum TLS version (CloudFront's choice)."""
        self.custom_domain = domain_name
        if not domain_name and not certificate_arn:
            return {}
        if not (domain_name and certificate_arn):
            raise ValueError("siteDomain and siteCertificateArn go together")
        return dict(
            domain_names=[domain_name],
            certificate=acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn),
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
        )

    @property
    def url(self) -> str:
        return f"https://{self.custom_domain or self.distribution.distribution_domain_name}/"
