"""The object store: one private bucket holding the transient ingest objects and the index."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .access import TRANSIENT_PREFIXES, PrefixAccess


# Every bucket of the stack: no public access, encrypted, reachable over TLS only.
PRIVATE = dict(block_public_access=s3.BlockPublicAccess.BLOCK_ALL, encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True)
# How long the index's replaced shards and manifests are kept as old versions, to roll a bad index run back.
INDEX_ROLLBACK_DAYS = 2


class CatalogueBucket(Construct):
    def __init__(self, scope: Construct, id: str, *, retain: bool, cors_origins: tuple[str, ...]):
        super().__init__(scope, id)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            **PRIVATE,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # log delivery is granted by bucket policy
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(90))],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        transient = [
            # Versioning keeps a deleted object as a noncurrent version: expire those too, or the
            # pipeline's own deletes would keep every transient image forever.
            s3.LifecycleRule(
                id=f"expire-{prefix.rstrip('/')}",
                prefix=prefix,
                expiration=Duration.days(1),
                noncurrent_version_expiration=Duration.days(1),
            )
            for prefix in TRANSIENT_PREFIXES
        ]
        self.bucket = s3.Bucket(
            self,
            "Objects",
            **PRIVATE,
            # The index (shards and the manifest swapped by conditional writes) is the one thing
            # worth keeping: versioning lets a bad index run be rolled back.
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="objects/",
            lifecycle_rules=[
                *transient,
                # Each index run that changes a category writes a whole new shard, and the one it
                # replaces stays as an old version (the index deletes it after 15 minutes, which in a
                # versioned bucket only hides it): kept long enough to roll a bad run back, as up
                # to 288 copies a day of the shard are billed.
                s3.LifecycleRule(id="old-index-versions", prefix="index/", noncurrent_version_expiration=Duration.days(INDEX_ROLLBACK_DAYS)),
                s3.LifecycleRule(id="old-vector-versions", prefix="vectors/", noncurrent_version_expiration=Duration.days(1)),
                # Pending vectors an index run set aside as unreadable: kept two weeks for a look.
                s3.LifecycleRule(id="expire-unreadable-vectors", prefix="vectors/unreadable/", expiration=Duration.days(14)),
                s3.LifecycleRule(id="delete-markers", expired_object_delete_marker=True),
                s3.LifecycleRule(id="incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            # The page posts large photos straight to the bucket (presigned POST under uploads/).
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.POST],
                    allowed_origins=list(cors_origins),
                    allowed_headers=["*"],
                    max_age=3000,
                )
            ],
            removal_policy=removal,
        )

    def grant(self, grantee: iam.IGrantable, access: PrefixAccess) -> None:
        """Object actions on the function's prefixes only."""
        bucket = self.bucket

        def objects(prefixes):
            return [bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]

        statements = []
        if access.read:
            statements.append(iam.PolicyStatement(actions=["s3:GetObject"], resources=objects(access.read)))
            # Without ListBucket S3 answers a missing key with 403, not 404, and a replayed event
            # (whose input another stage already consumed) would fail instead of being skipped.
            statements.append(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        if access.write:
            statements.append(iam.PolicyStatement(actions=["s3:PutObject"], resources=objects(access.write)))
        if access.delete:
            statements.append(iam.PolicyStatement(actions=["s3:DeleteObject"], resources=objects(access.delete)))
        for statement in statements:
            grantee.grant_principal.add_to_principal_policy(statement)
