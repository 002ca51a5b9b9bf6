"""One Lambda per entry of shazzam.wiring.FUNCTIONS, with its logs, failure queue and alarms."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from shazzam_cdk.alarms import PERIOD, alarm
from shazzam.wiring import Function as WiredFunction
from shazzam.wiring import Route

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = lambda_.Runtime.PYTHON_3_12  # the deps layer is built for it (cdk/build_layers.py)
MODEL_DIR = "/opt/models"  # the models layer's models/ folder
ASYNC_RETRIES = 2  # S3 and EventBridge invoke asynchronously: 2 retries, then the failure queue
MAX_EVENT_AGE = Duration.hours(6)


class Layers(Construct):
    """The three layers, from the folders cdk/build_layers.py writes."""

    def __init__(self, scope: Construct, id: str, *, layers_dir: Path):
        super().__init__(scope, id)

        def layer(name: str, description: str) -> lambda_.LayerVersion:
            return lambda_.LayerVersion(
                self,
                name.capitalize(),
                code=lambda_.Code.from_asset(str(layers_dir / name)),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[lambda_.Architecture.X86_64],
                description=description,
            )

        self.library = layer("shazzam", "The shazzam library (layers/shazzam)")
        self.dependencies = layer("deps", "Third-party runtime dependencies of shazzam (manylinux x86_64, Python 3.12)")
        self.models = layer("models", "The garment models (layers/models), at /opt/models")

    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.library, self.dependencies, self.models]


class FailureQueue(Construct):
    """Where an event lands after its retries: kept 14 days, alarmed on the first message."""

    def __init__(self, scope: Construct, id: str):
        super().__init__(scope, id)
        self.queue = sqs.Queue(
            self,
            "Queue",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )


class ShazzamFunction(Construct):
    """A wiring entry as a Lambda: code from functions/<name>/, the three layers, X-Ray, powertools
    settings, a log group with retention, and (for asynchronous triggers) a failure queue."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        wired: WiredFunction,
        layers: Layers,
        environment: dict[str, str],
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        reserved_concurrency: int | None = None,
    ):
        super().__init__(scope, id)
        self.wired = wired
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY)
        self.asynchronous = not any(isinstance(t, Route) for t in wired.triggers)
        self.failures = FailureQueue(self, "Failures") if self.asynchronous else None
        self.function = lambda_.Function(
            self,
            "Function",
            description=wired.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler="handler.lambda_handler",
            code=lambda_.Code.from_asset(str(ROOT / "functions" / wired.name), exclude=["__pycache__", "*.pyc"]),
            layers=layers.all(),
            memory_size=wired.memory_mb,
            timeout=Duration.seconds(wired.timeout_s),
            environment={
                "POWERTOOLS_SERVICE_NAME": f"shazzam-{wired.name}",
                "POWERTOOLS_METRICS_NAMESPACE": "Shazzam",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                "SHAZZAM_MODEL_DIR": MODEL_DIR,
                **environment,
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security_group],
            reserved_concurrent_executions=reserved_concurrency,
        )
        if self.failures is not None:
            self.function.configure_async_invoke(
                retry_attempts=ASYNC_RETRIES,
                max_event_age=MAX_EVENT_AGE,
                on_failure=destinations.SqsDestination(self.failures.queue),
            )

    def add_alarms(self, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        name = self.wired.name
        alarms = [
            alarm(self, "Errors", f"{name}: invocations failed", self.function.metric_errors(period=PERIOD, statistic="Sum"), 1, topic),
            alarm(self, "Throttles", f"{name}: invocations throttled", self.function.metric_throttles(period=PERIOD, statistic="Sum"), 1, topic),
        ]
        if self.failures is not None:
            queued = self.failures.queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            alarms.append(alarm(self, "FailedEvents", f"{name}: events in the failure queue (retries exhausted)", queued, 1, topic))
        return alarms

    def add_log_alarm(self, topic: sns.ITopic, construct_id: str, description: str, pattern: logs.IFilterPattern) -> cloudwatch.Alarm:
        """Alarm on the first log line matching `pattern` in five minutes: for what a run goes on
        past, and succeeds, but an operator must hear of (counted as `construct_id` in Shazzam/)."""
        lines = self.log_group.add_metric_filter(
            f"{construct_id}Lines", filter_pattern=pattern, metric_namespace="Shazzam", metric_name=construct_id, metric_value="1"
        )
        return alarm(self, construct_id, f"{self.wired.name}: {description}", lines.metric(period=PERIOD, statistic="Sum"), 1, topic)
