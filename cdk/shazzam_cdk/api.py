"""The public HTTP API: the search function's routes (from the wiring table), throttled, CORS."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from shazzam_cdk.alarms import PERIOD, alarm
from shazzam.wiring import Route

ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","time":"$context.requestTime",'
    '"method":"$context.httpMethod","route":"$context.routeKey","status":"$context.status",'
    '"latencyMs":"$context.responseLatency","integrationError":"$context.integrationErrorMessage",'
    '"lambdaRequestId":"$context.integration.requestId"}'
)


class SearchApi(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        handler: lambda_.IFunction,
        routes: list[Route],
        rate_limit: int,
        burst_limit: int,
        cors_origins: tuple[str, ...],
    ):
        super().__init__(scope, id)
        self.api = apigw.HttpApi(
            self,
            "Api",
            description="Shazzam for Clothes: search by photo",
            create_default_stage=False,
            cors_preflight=apigw.CorsPreflightOptions(
                allow_origins=list(cors_origins),
                allow_methods=[apigw.CorsHttpMethod.GET, apigw.CorsHttpMethod.POST, apigw.CorsHttpMethod.OPTIONS],
                allow_headers=["content-type"],
                expose_headers=["retry-after"],  # a throttled page reads how long to wait
                max_age=Duration.days(1),
            ),
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=rate_limit, burst_limit=burst_limit),
        )
        # The L2 stage takes access-log settings only as an interface; the L1 property says it plainly.
        self.stage.node.default_child.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=ACCESS_LOG_FORMAT
        )
        integration = integrations.HttpLambdaIntegration(
            "Search", handler, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0
        )
        for route in routes:
            self.api.add_routes(path=route.path, methods=[apigw.HttpMethod(route.method)], integration=integration)

    @property
    def url(self) -> str:
        return self.stage.url

    def add_alarms(self, topic: sns.ITopic, p99_ms: int) -> list[cloudwatch.Alarm]:
        return [
            alarm(
                self, "Latency", f"API p99 latency above {p99_ms} ms",
                self.api.metric_latency(period=PERIOD, statistic="p99"), p99_ms, topic, periods=3, strictly_above=True,
            ),
            # The search function answers a fault with a 500 instead of failing its invocation,
            # so Lambda's Errors never counts it: one 5xx is the alarm.
            alarm(self, "ServerErrors", "API answered 5xx", self.api.metric_server_error(period=PERIOD, statistic="Sum"), 1, topic),
        ]
