"""One shape of alarm for the whole stack: a metric over five minutes, sent to the alarm topic."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

PERIOD = Duration.minutes(5)


def alarm(
    scope: Construct,
    construct_id: str,
    description: str,
    metric: cloudwatch.IMetric,
    threshold: float,
    topic: sns.ITopic,
    *,
    periods: int = 1,
    strictly_above: bool = False,
) -> cloudwatch.Alarm:
    """Alarm when `metric` reaches `threshold` (or exceeds it) in `periods` five-minute periods."""
    created = cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric,
        threshold=threshold,
        evaluation_periods=periods,
        comparison_operator=(
            cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
            if strictly_above
            else cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        ),
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    created.add_alarm_action(cw_actions.SnsAction(topic))
    return created
