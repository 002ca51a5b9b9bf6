"""The Shazzam stack: bucket, network, database, one function per wiring entry, their triggers."""

from __future__ import annotations

from aws_cdk import App, Aspects, CfnOutput, CfnResource, Duration, RemovalPolicy, Stack, triggers
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from cdk_nag import AwsSolutionsChecks
from constructs import Construct
from shazzam import wiring
from shazzam.wiring import ObjectCreated, Schedule

from .access import ACCESS
from .api import SearchApi
from .database import CatalogueDatabase, Network
from .functions import ASYNC_RETRIES, MAX_EVENT_AGE, ROOT, Layers, ShazzamFunction
from .nag import suppress_accepted_findings
from .settings import Settings, context_flag
from .site import WebSite
from .storage import CatalogueBucket

# The line shazzam.scrape.passes logs, at ERROR, for each active shop whose saved settings no scrape
# can use (it is then left out of every scrape and revalidate): the run goes on with the other
# shops and succeeds, so Lambda's Errors never counts it. Scrape reads every active shop's settings
# at each run, so a shop left out alarms daily until it is fixed or taken off.
SKIPPED_SHOP_LOG = logs.FilterPattern.all_terms("ERROR", "is skipped:")
# What an index run goes on past, logged at ERROR by shazzam.index and shazzam.pipeline: a pending
# vector set aside as unusable (its item unsearchable; vectors/unreadable/ expires in two weeks), a
# shard or manifest unreadable and replaced (its items out of the results until embedded again).
# A run that fails is Lambda's Errors, alarmed already: its line, with the traceback, is left out.
INDEX_ERROR_LOG = logs.FilterPattern.literal('"[ERROR]" -Traceback')


class ShazzamStack(Stack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings, **kwargs):
        super().__init__(scope, id, description="Shazzam for Clothes: visual fashion search", **kwargs)
        self.settings = settings
        self.storage = CatalogueBucket(self, "Storage", retain=settings.retain_data, cors_origins=settings.cors_origins)
        self.network = Network(self, "Network", nat_gateways=settings.nat_gateways)
        self.database = CatalogueDatabase(
            self,
            "Database",
            network=self.network,
            min_acu=settings.db_min_acu,
            max_acu=settings.db_max_acu,
            use_proxy=settings.rds_proxy,
            retain=settings.retain_data,
        )
        self.layers = Layers(self, "Layers", layers_dir=settings.layers_dir)
        # The topic's own key: an alarm can publish to an encrypted topic only if CloudWatch may use
        # its key, and the policy of the AWS-managed alias/aws/sns cannot be changed to say so.
        alarm_key = kms.Key(self, "AlarmKey", description="Shazzam alarm topic", enable_key_rotation=True,
                            removal_policy=RemovalPolicy.DESTROY, pending_window=Duration.days(7))
        alarm_key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.alarm_topic = sns.Topic(
            self, "Alarms", display_name="Shazzam alarms", enforce_ssl=True, master_key=alarm_key
        )
        if settings.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))

        self.functions: dict[str, ShazzamFunction] = {}
        for wired in wiring.FUNCTIONS:
            self.functions[wired.name] = self._function(wired)
        self.api = self._api()
        self.migration = self._migration()
        self.site = WebSite(
            self,
            "Site",
            web_dir=ROOT / "web",
            api_url=self.api.url,
            api_origin=self.api.api.api_endpoint,
            upload_bucket=self.storage.bucket,
            access_logs=self.storage.access_logs,
            retain_logs=settings.retain_data,
            domain_name=settings.site_domain,
            certificate_arn=settings.site_certificate_arn,
        )
        CfnOutput(self, "SiteUrl", value=self.site.url, description="The web page (CloudFront)")
        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        CfnOutput(self, "AlarmTopic", value=self.alarm_topic.topic_arn)
        self._keep_cdk_handler_logs_a_month()

    def _keep_cdk_handler_logs_a_month(self) -> None:
        """The Lambdas CDK adds on its own (bucket notifications, log retention, triggers) name no
        log group, so Lambda would make one on their first run that never expires: each gets one
        kept a month, as the stack's own functions' logs are. (Functions of the lambda.Function
        construct get theirs from CDK: @aws-cdk/aws-lambda:useCdkManagedLogGroup.)"""
        handlers = [node for node in self.node.find_all() if isinstance(node, CfnResource)
                    and node.cfn_resource_type == "AWS::Lambda::Function" and not isinstance(node, lambda_.CfnFunction)]
        for handler in handlers:
            group = logs.LogGroup(handler.node.scope, f"{handler.node.id}Logs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
            handler.add_property_override("LoggingConfig.LogGroup", group.log_group_name)

    def _environment(self) -> dict[str, str]:
        return {"SHAZZAM_BUCKET": self.storage.bucket.bucket_name, **self.database.environment()}

    def _function(self, wired: wiring.Function) -> ShazzamFunction:
        name = wired.name
        function = ShazzamFunction(
            self,
            f"{name.capitalize()}",
            wired=wired,
            layers=self.layers,
            environment=self._environment(),
            vpc=self.network.vpc,
            subnets=self.network.function_subnets,
            security_group=self.network.functions_sg,
            reserved_concurrency=self.settings.scrape_concurrency if name == "scrape" else None,
        )
        self.storage.grant(function.function, ACCESS[name])
        self.database.grant_connect(function.function)
        function.add_alarms(self.alarm_topic)
        if name == "scrape":
            function.add_log_alarm(self.alarm_topic, "ShopsSkipped", "a shop left out for settings no scrape can use", SKIPPED_SHOP_LOG)
        if name == "index":
            function.add_log_alarm(self.alarm_topic, "IndexErrorsLogged", "a run logged an ERROR it went on past", INDEX_ERROR_LOG)
        for trigger in wired.triggers:
            if isinstance(trigger, ObjectCreated):
                self.storage.bucket.add_event_notification(
                    s3.EventType.OBJECT_CREATED,
                    s3n.LambdaDestination(function.function),
                    s3.NotificationKeyFilter(prefix=trigger.prefix, suffix=trigger.suffix or None),
                )
            elif isinstance(trigger, Schedule):
                expression = self.settings.schedules.get(name, trigger.expression)
                events.Rule(
                    function,
                    "Schedule",
                    description=f"Run {name} on {expression}",
                    schedule=events.Schedule.expression(expression),
                    targets=[
                        targets.LambdaFunction(
                            function.function,
                            retry_attempts=ASYNC_RETRIES,
                            max_event_age=MAX_EVENT_AGE,
                            dead_letter_queue=function.failures.queue,
                        )
                    ],
                )
        return function

    def _api(self) -> SearchApi:
        routes = [route for function, route in wiring.routes()]
        handlers = {function.name for function, _ in wiring.routes()}
        assert len(handlers) == 1, "one function answers the API (the search function routes internally)"
        api = SearchApi(
            self,
            "SearchApi",
            handler=self.functions[handlers.pop()].function,
            routes=routes,
            rate_limit=self.settings.api_rate_limit,
            burst_limit=self.settings.api_burst_limit,
            cors_origins=self.settings.cors_origins,
        )
        api.add_alarms(self.alarm_topic, self.settings.search_p99_ms)
        return api

    def _migration(self) -> triggers.TriggerFunction:
        """Apply the schema (shazzam.db.migrate) once the database is up, and again whenever the
        function's version changes (a new library layer brings new migrations)."""
        migration = triggers.TriggerFunction(
            self,
            "Migrate",
            description="Apply the catalogue's pending schema migrations (shazzam.db.migrate)",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(ROOT / "cdk" / "migrate"), exclude=["__pycache__"]),
            layers=[self.layers.library, self.layers.dependencies],
            timeout=Duration.minutes(5),
            memory_size=512,
            environment=self.database.environment(),
            tracing=lambda_.Tracing.ACTIVE,
            # A group of its own, named in its configuration, is made before it: the trigger runs it
            # in this same deploy, and would otherwise race CDK's /aws/lambda/<name> group to make it.
            log_group=logs.LogGroup(self, "MigrateLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY),
            vpc=self.network.vpc,
            vpc_subnets=self.network.function_subnets,
            security_groups=[self.network.functions_sg],
            execute_after=[self.database],
        )
        self.database.grant_connect(migration)
        return migration


def build_app(app: App, *, nag: bool | None = None) -> ShazzamStack:
    """The stack, checked by cdk-nag's AWS Solutions pack unless `nag` (or context nag=false) says not."""
    settings = Settings.from_context(app.node)
    stack = ShazzamStack(app, app.node.try_get_context("stackName") or "Shazzam", settings=settings)
    suppress_accepted_findings(stack)
    if nag is None:
        nag = context_flag(app.node, "nag", True)
    if nag:
        Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return stack
