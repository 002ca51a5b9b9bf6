"""cdk-nag (AwsSolutions) suppressions: each names the rule, what it covers and why it is accepted.

Everything else cdk-nag reports is an error: tests/infrastructure/test_nag.py fails on any.
"""

from __future__ import annotations

from aws_cdk import Stack
from cdk_nag import NagPackSuppression, NagSuppressions

# Object ARNs of the one bucket, scoped to a prefix: `<bucket ARN>/incoming/*` and the like.
PREFIX_OBJECTS = {"regex": "/^Resource::<StorageObjects[0-9A-F]+\\.Arn>\\/[a-z/]+\\/\\*$/g"}

LAMBDA_ROLE = [
    NagPackSuppression(
        id="AwsSolutions-IAM4",
        reason="AWSLambdaBasicExecutionRole (write its own logs) and AWSLambdaVPCAccessExecutionRole (manage its "
        "ENIs) are the minimal AWS-maintained policies for a Lambda in a VPC; ENI actions take no resource scope.",
        applies_to=[
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
        ],
    ),
    NagPackSuppression(
        id="AwsSolutions-IAM5",
        reason="xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) support no resource scope.",
        applies_to=["Resource::*"],
    ),
    NagPackSuppression(
        id="AwsSolutions-L1",
        reason="Python 3.12 on purpose: the dependencies layer is built for it (cdk/build_layers.py) and every "
        "wheel it needs (ai-edge-litert, pillow-heif, h5py) exists for it; move runtime and layer together.",
    ),
]

OBJECT_PREFIXES = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason="Object actions are scoped to the function's own key prefixes (shazzam_cdk.access); keys under a prefix "
    "are content-derived ids, so a prefix wildcard is the narrowest scope that exists.",
    applies_to=[PREFIX_OBJECTS],
)


def suppress_accepted_findings(stack: Stack) -> None:
    for function in stack.functions.values():
        NagSuppressions.add_resource_suppressions(function.function, [*LAMBDA_ROLE, OBJECT_PREFIXES], apply_to_children=True)
        if function.failures is not None:
            NagSuppressions.add_resource_suppressions(
                function.failures.queue,
                [
                    NagPackSuppression(
                        id="AwsSolutions-SQS3",
                        reason="This queue is the dead-letter queue of its function's asynchronous invocations.",
                    )
                ],
            )
    NagSuppressions.add_resource_suppressions(stack.migration, LAMBDA_ROLE, apply_to_children=True)
    NagSuppressions.add_resource_suppressions(
        stack.api.api,
        [
            NagPackSuppression(
                id="AwsSolutions-APIG4",
                reason="A public search API by design (the web page calls it anonymously, as the product requires); "
                "abuse is bounded by stage throttling and the handler's own size and pixel limits.",
            )
        ],
        apply_to_children=True,
    )
    NagSuppressions.add_resource_suppressions(
        stack.database.cluster,
        [
            NagPackSuppression(
                id="AwsSolutions-RDS11",
                reason="Port 3306 kept: RDS Proxy listens on 3306 whatever the cluster's port, and the cluster sits in "
                "isolated subnets reachable only from the proxy's and the functions' security groups.",
            ),
            *(
                []
                if stack.settings.retain_data
                else [
                    NagPackSuppression(
                        id="AwsSolutions-RDS10",
                        reason="Deletion protection is off only in a throwaway stack (context retainData=false), "
                        "which is meant to be destroyed with its data; the default keeps it on.",
                    )
                ]
            ),
            NagPackSuppression(
                id="AwsSolutions-RDS14",
                reason="Recovery is point-in-time restore from the 7-day continuous backups; the catalogue can also be "
                "rebuilt by scraping, so Backtrack's per-change-record cost buys nothing here.",
            ),
        ],
        apply_to_children=True,
    )
    suppress_site_findings(stack)
    # Singletons CDK adds on its own: S3 notification wiring and log-retention setting.
    for child in stack.node.children:
        if child.node.id.startswith(("BucketNotificationsHandler", "LogRetention")):
            NagSuppressions.add_resource_suppressions(
                child,
                [
                    NagPackSuppression(
                        id="AwsSolutions-IAM4",
                        reason="CDK's own deployment-time handler (bucket notifications / log retention): AWSLambdaBasicExecutionRole "
                        "only lets it write its logs.",
                        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
                    ),
                    NagPackSuppression(
                        id="AwsSolutions-IAM5",
                        reason="CDK's log-retention handler sets retention on log groups whose names it learns at deploy time.",
                        applies_to=["Resource::*"],
                    ),
                ],
                apply_to_children=True,
            )


def suppress_site_findings(stack: Stack) -> None:
    """The static page (shazzam_cdk.site): CloudFront in front of a private bucket, and CDK's
    BucketDeployment handler that copies web/ into it at deploy time."""
    site = stack.site
    NagSuppressions.add_resource_suppressions(
        site.distribution,
        [
            NagPackSuppression(
                id="AwsSolutions-CFR1",
                reason="No geo restriction: the page is a public storefront search meant for shoppers anywhere; "
                "nothing it serves is subject to regional restrictions.",
            ),
            NagPackSuppression(
                id="AwsSolutions-CFR2",
                reason="No WAF on the page: it serves three static files (GET/HEAD only, cached, no server logic); "
                "the API it calls is throttled at its stage and validates every request itself.",
            ),
            *(
                []
                if site.custom_domain
                else [
                    NagPackSuppression(
                        id="AwsSolutions-CFR4",
                        reason="The default *.cloudfront.net certificate cannot be held to a minimum TLS version; "
                        "with context siteDomain + siteCertificateArn the distribution requires TLS 1.2 (2021 policy).",
                    )
                ]
            ),
        ],
    )
    for child in stack.node.children:
        if child.node.id.startswith("Custom::CDKBucketDeployment"):
            NagSuppressions.add_resource_suppressions(
                child,
                [
                    NagPackSuppression(
                        id="AwsSolutions-IAM4",
                        reason="CDK's BucketDeployment handler (runs at deploy time only): AWSLambdaBasicExecutionRole "
                        "only lets it write its own logs.",
                        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
                    ),
                    NagPackSuppression(
                        id="AwsSolutions-IAM5",
                        reason="CDK's BucketDeployment grants: read the CDK asset bucket's objects, write/prune the page "
                        "bucket's objects (only that bucket), and create CloudFront invalidations, an action that takes "
                        "no resource scope.",
                        applies_to=[
                            "Action::s3:GetBucket*",
                            "Action::s3:GetObject*",
                            "Action::s3:List*",
                            "Action::s3:Abort*",
                            "Action::s3:DeleteObject*",
                            "Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*",
                            {"regex": "/^Resource::<SiteFiles[0-9A-F]+\\.Arn>\\/\\*$/g"},
                            "Resource::*",
                        ],
                    ),
                    NagPackSuppression(
                        id="AwsSolutions-L1",
                        reason="The runtime of CDK's own BucketDeployment handler is chosen by aws-cdk-lib (updated with "
                        "it); it runs only during deploys and never sees a request.",
                    ),
                ],
                apply_to_children=True,
            )
