"""The synthesized template against the wiring table and the security requirements."""

from __future__ import annotations

import logging
import re
import uuid

import pytest
from aws_cdk.assertions import Match
from shazzam import index, wiring
from shazzam.scrape import passes
from shazzam.storage import LocalFolderStore
from shazzam.wiring import ObjectCreated, Route
from shazzam_cdk.access import ACCESS, TRANSIENT_PREFIXES


def of_type(resources: dict, kind: str) -> dict:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def function_id(resources: dict, name: str) -> str:
    description = wiring.by_name(name).description
    (found,) = [
        i for i, r in of_type(resources, "AWS::Lambda::Function").items() if r["Properties"].get("Description") == description
    ]
    return found


def role_statements(resources: dict, function: str) -> list[dict]:
    role = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def bucket_id(resources: dict) -> str:
    (found,) = [i for i in of_type(resources, "AWS::S3::Bucket") if i.startswith("StorageObjects")]
    return found


def object_prefix(resource, bucket: str) -> str | None:
    """`incoming/` for `<bucket ARN>/incoming/*`; None for anything else."""
    parts = resource.get("Fn::Join", [None, []])[1] if isinstance(resource, dict) else []
    if len(parts) == 2 and parts[0] == {"Fn::GetAtt": [bucket, "Arn"]} and parts[1].endswith("*"):
        return parts[1][1:-1]
    return None


def s3_grants(resources: dict, name: str) -> dict[str, set[str]]:
    """action -> prefixes granted to the function's role (bucket-level actions as "<bucket>")."""
    bucket = bucket_id(resources)
    grants: dict[str, set[str]] = {}
    for statement in role_statements(resources, function_id(resources, name)):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in (a for a in actions if a.startswith("s3:")):
            assert statement["Effect"] == "Allow"
            for target in targets:
                if target == {"Fn::GetAtt": [bucket, "Arn"]}:
                    grants.setdefault(action, set()).add("<bucket>")
                else:
                    prefix = object_prefix(target, bucket)
                    assert prefix, f"{name}: {action} on {target}, not on one of its prefixes"
                    grants.setdefault(action, set()).add(prefix)
    return grants


# --- the bucket ------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_versioned(template, resources):
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "objects/"}),
        },
    )
    for bucket in of_type(resources, "AWS::S3::Bucket").values():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
        assert "BucketEncryption" in bucket["Properties"]


def test_every_bucket_policy_denies_plain_http(resources):
    policies = of_type(resources, "AWS::S3::BucketPolicy")
    assert len(policies) == len(of_type(resources, "AWS::S3::Bucket"))
    for policy in policies.values():
        denies = [
            s
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies and denies[0]["Action"] == "s3:*"


def test_transient_prefixes_expire_after_a_day(resources):
    rules = resources[bucket_id(resources)]["Properties"]["LifecycleConfiguration"]["Rules"]
    by_prefix = {r.get("Prefix"): r for r in rules}
    for prefix in ("incoming/", "detections/", "standard/", "uploads/"):
        assert prefix in TRANSIENT_PREFIXES
        assert by_prefix[prefix]["ExpirationInDays"] == 1
        assert by_prefix[prefix]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
        assert by_prefix[prefix]["Status"] == "Enabled"
    assert "ExpirationInDays" not in by_prefix["index/"]  # the index is kept
    # but not every shard it replaced: each index run that changes a category writes a whole new
    # one, and 30 days of them came to about 200 GB a category of 100,000 items.
    assert by_prefix["index/"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 2
    assert by_prefix["vectors/unreadable/"]["ExpirationInDays"] == 14  # set aside for a look, not for ever


def test_object_created_notifications_follow_the_wiring(resources):
    (notifications,) = of_type(resources, "Custom::S3BucketNotifications").values()
    assert notifications["Properties"]["BucketName"] == {"Ref": bucket_id(resources)}
    configured = {
        (
            c["LambdaFunctionArn"]["Fn::GetAtt"][0],
            tuple(sorted((r["Name"], r["Value"]) for r in c["Filter"]["Key"]["FilterRules"])),
        )
        for c in notifications["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
        if c["Events"] == ["s3:ObjectCreated:*"]
    }
    expected = set()
    for function in wiring.FUNCTIONS:
        for trigger in function.triggers:
            if isinstance(trigger, ObjectCreated):
                rules = [("prefix", trigger.prefix)] + ([("suffix", trigger.suffix)] if trigger.suffix else [])
                expected.add((function_id(resources, function.name), tuple(sorted(rules))))
    assert configured == expected
    assert len(expected) == 3


# --- the functions ---------------------------------------------------------------------------


def test_one_function_per_wiring_entry(resources):
    for function in wiring.FUNCTIONS:
        properties = resources[function_id(resources, function.name)]["Properties"]
        assert properties["Runtime"] == "python3.12"
        assert properties["Handler"] == "handler.lambda_handler"
        assert properties["MemorySize"] == function.memory_mb
        assert properties["Timeout"] == function.timeout_s
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert len(properties["Layers"]) == 3
        assert properties["VpcConfig"]["SubnetIds"] and properties["VpcConfig"]["SecurityGroupIds"]
        environment = properties["Environment"]["Variables"]
        assert environment["POWERTOOLS_SERVICE_NAME"] == f"shazzam-{function.name}"
        assert environment["SHAZZAM_MODEL_DIR"] == "/opt/models"
        assert environment["SHAZZAM_BUCKET"] == {"Ref": bucket_id(resources)}
        assert "SHAZZAM_DB_SECRET_ARN" in environment and "SHAZZAM_DB_HOST" in environment
        assert "SHAZZAM_DB_URL" not in environment  # no secret in configuration
    wired = {f.description for f in wiring.FUNCTIONS}
    assert sum(r["Properties"].get("Description") in wired for r in of_type(resources, "AWS::Lambda::Function").values()) == len(
        wiring.FUNCTIONS
    )


def test_only_scrape_has_reserved_concurrency(resources):
    for function in wiring.FUNCTIONS:
        reserved = resources[function_id(resources, function.name)]["Properties"].get("ReservedConcurrentExecutions")
        assert reserved == (1 if function.name == "scrape" else None)


def test_every_lambdas_logs_expire(resources):
    # Lambda makes /aws/lambda/<name> on a function's first run, kept forever, unless the function
    # names a log group of its own or one of that name is made first: CDK's own handlers (bucket
    # notifications, log retention, triggers) and the secret's rotation function (from the
    # Serverless Application Repository) get neither from CDK.
    groups = of_type(resources, "AWS::Logs::LogGroup")
    # A retention set on a group by name (CDK's custom resource), for a function whose group may exist already.
    groups |= {i: {"Properties": {"LogGroupName": r["Properties"]["LogGroupName"], "RetentionInDays": r["Properties"]["RetentionInDays"]}}
               for i, r in of_type(resources, "Custom::LogRetention").items()}
    by_name = {}
    for group_id, group in groups.items():
        name = group["Properties"].get("LogGroupName")
        joined = name.get("Fn::Join", [None, []])[1] if isinstance(name, dict) else []
        if joined and joined[0] == "/aws/lambda/":
            by_name[joined[1]["Ref"]] = group_id
        elif isinstance(name, str):
            by_name[name] = group_id
    functions = {i: {"Ref": i} for i in of_type(resources, "AWS::Lambda::Function")}
    for i, application in of_type(resources, "AWS::Serverless::Application").items():
        functions[i] = application["Properties"]["Parameters"]["functionName"]
    for function_id_, name in functions.items():
        logging_config = resources[function_id_]["Properties"].get("LoggingConfig", {})
        if "LogGroup" in logging_config:
            group_id = logging_config["LogGroup"]["Ref"]
        else:
            group_id = by_name.get(name["Ref"] if isinstance(name, dict) else f"/aws/lambda/{name}")
        assert group_id, f"{function_id_}: no log group of its own, so one that never expires"
        assert groups[group_id]["Properties"].get("RetentionInDays"), f"{function_id_}: its log group never expires"
    # The rotation function's group is named after it, so its retention must be set before the
    # schedule's first rotation runs it; and set, not created: a stack deployed before may hold it.
    (application_id,) = of_type(resources, "AWS::Serverless::Application")
    (schedule,) = of_type(resources, "AWS::SecretsManager::RotationSchedule").values()
    rotation_group = by_name[f"/aws/lambda/{functions[application_id]}"]
    assert rotation_group in schedule["DependsOn"]
    assert resources[rotation_group]["Type"] == "Custom::LogRetention"


def test_no_lambda_can_run_before_its_log_group_exists(resources):
    # A group named /aws/lambda/<function> is made after its function, and a custom resource that
    # runs the function during the same deploy (the migration's trigger, the page copy) may run it
    # first: Lambda makes the group, and the stack's own then fails as one that already exists.
    # A function that names its group in its LoggingConfig is made after the group.
    for i, function in of_type(resources, "AWS::Lambda::Function").items():
        assert "LogGroup" in function["Properties"].get("LoggingConfig", {}), f"{i} does not wait for its log group"


def test_layers_ship_the_library_dependencies_and_models(resources):
    # Besides CDK's own AWS CLI layer (for its BucketDeployment handler, which has no runtime list).
    layers = {i: r for i, r in of_type(resources, "AWS::Lambda::LayerVersion").items() if i.startswith("Layers")}
    assert len(layers) == 3
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]


def test_schedules_follow_the_wiring(resources):
    rules = of_type(resources, "AWS::Events::Rule")
    scheduled = {
        (r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0], r["Properties"]["ScheduleExpression"]) for r in rules.values()
    }
    expected = {(function_id(resources, f.name), s.expression) for f, s in wiring.scheduled_functions()}
    assert scheduled == expected
    for rule in rules.values():
        target = rule["Properties"]["Targets"][0]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
        assert "DeadLetterConfig" in target


def test_a_throwaway_stack_without_proxy_and_with_other_schedules(tmp_path_factory):
    from aws_cdk.assertions import Annotations, Match, Template

    from tests.infrastructure.conftest import synthesize

    certificate = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
    stack = synthesize(
        tmp_path_factory,
        schedules={"index": "rate(15 minutes)"},
        rdsProxy=False,
        retainData=False,
        siteDomain="shazzam.example.com",
        siteCertificateArn=certificate,
    )
    template = Template.from_stack(stack)
    # The page on a domain of one's own: TLS 1.2 or later only (and no CFR4 suppression needed).
    template.has_resource_properties(
        "AWS::CloudFront::Distribution",
        {
            "DistributionConfig": Match.object_like(
                {
                    "Aliases": ["shazzam.example.com"],
                    "ViewerCertificate": {
                        "AcmCertificateArn": certificate,
                        "MinimumProtocolVersion": "TLSv1.2_2021",
                        "SslSupportMethod": "sni-only",
                    },
                }
            )
        },
    )
    (distribution,) = template.find_resources("AWS::CloudFront::Distribution").values()
    suppressed = {s["id"] for s in distribution["Metadata"]["cdk_nag"]["rules_to_suppress"]}
    assert "AwsSolutions-CFR4" not in suppressed
    expressions = {r["Properties"]["ScheduleExpression"] for r in template.find_resources("AWS::Events::Rule").values()}
    assert "rate(15 minutes)" in expressions and "rate(5 minutes)" not in expressions
    assert {"cron(0 2 * * ? *)", "cron(0 14 * * ? *)"} <= expressions  # scrape's and revalidate's, twelve hours apart
    template.resource_count_is("AWS::RDS::DBProxy", 0)
    template.has_resource_properties("AWS::RDS::DBCluster", {"DeletionProtection": False})
    template.has_resource("AWS::RDS::DBCluster", {"DeletionPolicy": "Delete"})
    errors = Annotations.from_stack(stack).find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [e.entry.data for e in errors] == []


# --- failure handling ------------------------------------------------------------------------


def asynchronous() -> list[wiring.Function]:
    return [f for f in wiring.FUNCTIONS if not any(isinstance(t, Route) for t in f.triggers)]


def test_async_invocations_retry_twice_then_go_to_a_queue(resources):
    configs = of_type(resources, "AWS::Lambda::EventInvokeConfig")
    by_function = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"] for c in configs.values()}
    queues = of_type(resources, "AWS::SQS::Queue")
    for function in asynchronous():
        config = by_function[function_id(resources, function.name)]
        assert config["MaximumRetryAttempts"] == 2
        queue = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        assert queues[queue]["Properties"]["SqsManagedSseEnabled"] is True
        assert queues[queue]["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    assert len(by_function) == len(asynchronous())


def test_alarms_on_errors_throttles_failure_queues_and_latency(resources):
    alarms = of_type(resources, "AWS::CloudWatch::Alarm").values()
    metrics = [(a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) for a in alarms]
    assert metrics.count(("AWS/Lambda", "Errors")) == len(wiring.FUNCTIONS)
    assert metrics.count(("AWS/Lambda", "Throttles")) == len(wiring.FUNCTIONS)
    assert metrics.count(("AWS/SQS", "ApproximateNumberOfMessagesVisible")) == len(asynchronous())
    assert ("AWS/ApiGateway", "Latency") in metrics and ("AWS/ApiGateway", "5xx") in metrics
    (server_errors,) = [a["Properties"] for a in alarms if a["Properties"].get("MetricName") == "5xx"]
    assert server_errors["Threshold"] == 1  # a fault is answered with a 500: Lambda's Errors never sees it
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"], "every alarm notifies the alarm topic"


def lambda_log_line(record: logging.LogRecord) -> str:
    """A standard-library log record as the Lambda Python runtime writes it to CloudWatch (text format)."""
    return f"[{record.levelname}]\t2026-12-01T02:00:00.000Z\t{uuid.uuid4()}\t{record.getMessage()}"


def filter_matches(pattern: str, line: str) -> bool:
    """CloudWatch Logs' term matching on an unstructured line: every term in it, no -term."""
    terms = re.findall(r'(-?)(?:"([^"]+)"|(\S+))', pattern)
    assert terms, f"no terms in {pattern!r}"
    return all(((quoted or bare) in line) != bool(minus) for minus, quoted, bare in terms)


def log_alarm(resources: dict, function: str) -> tuple[str, dict]:
    """The filter pattern on `function`'s log group and the alarm on the metric it counts."""
    log_group = resources[function_id(resources, function)]["Properties"]["LoggingConfig"]["LogGroup"]
    (metric_filter,) = [f["Properties"] for f in of_type(resources, "AWS::Logs::MetricFilter").values()
                        if f["Properties"]["LogGroupName"] == log_group]
    (transformation,) = metric_filter["MetricTransformations"]
    (found,) = [a["Properties"] for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
                if (a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) == (transformation["MetricNamespace"], transformation["MetricName"])]
    assert found["Threshold"] == 1 and found["Statistic"] == "Sum" and found["AlarmActions"]
    return metric_filter["FilterPattern"], found


def test_a_shop_left_out_of_the_scrape_alarms(resources, caplog):
    # A shop whose saved settings no scrape can use is left out, logged at ERROR, and the run succeeds.
    pattern, _ = log_alarm(resources, "scrape")
    with caplog.at_level(logging.ERROR, logger=passes.__name__):
        assert passes._usable_source({"base_url": "https://shop.example/", "name": "Shop", "strategy": "nonsense"}) is None
    (record,) = caplog.records
    assert filter_matches(pattern, lambda_log_line(record)), f"{pattern} misses {lambda_log_line(record)!r}"


def test_what_an_index_run_goes_on_past_alarms(resources, caplog, tmp_path):
    # An unusable pending vector is set aside (its item unsearchable; vectors/unreadable/ expires in
    # two weeks), logged at ERROR, and the run succeeds: only its log says so.
    pattern, _ = log_alarm(resources, "index")
    with caplog.at_level(logging.ERROR, logger=index.__name__):
        index.set_aside(LocalFolderStore(tmp_path), f"{index.PENDING_PREFIX}tops/abc.npy", b"junk", ValueError("not a vector"))
    (record,) = caplog.records
    assert filter_matches(pattern, lambda_log_line(record)), f"{pattern} misses {lambda_log_line(record)!r}"
    # A run that fails is Lambda's Errors, alarmed already: its line (with the traceback) is not counted twice.
    failed = "[ERROR] CorruptShard: unreadable shard\rTraceback (most recent call last):\r  File \"/var/task/handler.py\""
    assert not filter_matches(pattern, failed)


def test_cloudwatch_may_use_the_alarm_topics_key(resources):
    # An alarm publishes to its encrypted topic only if CloudWatch may use the topic's key, and the
    # policy of the AWS-managed key (alias/aws/sns) cannot say so: the topic needs a key of its own.
    (topic,) = of_type(resources, "AWS::SNS::Topic").values()
    key_ref = topic["Properties"]["KmsMasterKeyId"]
    assert isinstance(key_ref, dict), f"the alarm topic uses {key_ref}, not a key of the stack's own"
    key = resources[key_ref["Fn::GetAtt"][0]]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    granted = set()
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        if statement["Effect"] == "Allow" and statement["Principal"].get("Service") == "cloudwatch.amazonaws.com":
            actions = statement["Action"]
            granted |= {actions} if isinstance(actions, str) else set(actions)
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= granted


# --- the API ---------------------------------------------------------------------------------


def test_routes_follow_the_wiring(resources):
    keys = {r["Properties"]["RouteKey"] for r in of_type(resources, "AWS::ApiGatewayV2::Route").values()}
    assert keys == {f"{route.method} {route.path}" for _, route in wiring.routes()}
    (integration,) = of_type(resources, "AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    search = function_id(resources, "search")
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [search, "Arn"]}


def test_api_is_throttled_logged_and_allows_cors(template):
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "AutoDeploy": True,
            "DefaultRouteSettings": {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100},
            "AccessLogSettings": Match.object_like({"DestinationArn": Match.any_value()}),
        },
    )
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Api",
        {
            "ProtocolType": "HTTP",
            "CorsConfiguration": Match.object_like({"AllowOrigins": ["*"], "AllowMethods": Match.array_with(["POST"]), "ExposeHeaders": ["retry-after"]}),
        },
    )


# --- the database ----------------------------------------------------------------------------


def test_database_is_aurora_serverless_v2_in_isolated_subnets(template, resources):
    template.has_resource_properties(
        "AWS::RDS::DBCluster",
        {
            "Engine": "aurora-mysql",
            "StorageEncrypted": True,
            "DeletionProtection": True,
            "EnableIAMDatabaseAuthentication": True,
            "BackupRetentionPeriod": 7,
            "ServerlessV2ScalingConfiguration": {"MinCapacity": 0.5, "MaxCapacity": 4},
            "DatabaseName": "shazzam",
            "MasterUserPassword": Match.object_like({"Fn::Join": Match.any_value()}),  # resolved from the secret
        },
    )
    template.has_resource_properties("AWS::RDS::DBInstance", {"DBInstanceClass": "db.serverless"})
    (subnet_group,) = of_type(resources, "AWS::RDS::DBSubnetGroup").values()
    subnets = {s["Ref"] for s in subnet_group["Properties"]["SubnetIds"]}
    assert subnets and all("database" in s for s in subnets)
    public = [n for n, r in of_type(resources, "AWS::EC2::Subnet").items() if r["Properties"].get("MapPublicIpOnLaunch")]
    assert not subnets & set(public)


def test_credentials_rotate_and_the_proxy_requires_tls(template):
    template.resource_count_is("AWS::SecretsManager::Secret", 1)
    template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule", {"RotationRules": {"ScheduleExpression": "rate(30 days)"}}
    )
    template.has_resource_properties("AWS::RDS::DBProxy", {"EngineFamily": "MYSQL", "RequireTLS": True})


def test_functions_reach_the_database_through_the_proxy_only_on_3306(resources):
    ingress = of_type(resources, "AWS::EC2::SecurityGroupIngress").values()
    for rule in ingress:
        port = rule["Properties"]["FromPort"]
        # 3306, or the cluster's own port (the rotation function's rule, which CDK writes so).
        assert port == rule["Properties"]["ToPort"]
        assert port == 3306 or port["Fn::GetAtt"][1] == "Endpoint.Port"
        assert "SourceSecurityGroupId" in rule["Properties"]  # never a CIDR
    for function in wiring.FUNCTIONS:
        environment = resources[function_id(resources, function.name)]["Properties"]["Environment"]["Variables"]
        assert environment["SHAZZAM_DB_HOST"]["Fn::GetAtt"][1] == "Endpoint"
        assert environment["SHAZZAM_DB_TLS"] == "verify"


def test_schema_is_migrated_on_deploy(resources):
    (trigger,) = of_type(resources, "Custom::Trigger").values()
    assert "DependsOn" in trigger and any("Database" in d for d in trigger["DependsOn"])


# --- least privilege -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f.name for f in wiring.FUNCTIONS])
def test_each_function_gets_only_its_prefixes(resources, name):
    access = ACCESS[name]
    expected = {}
    if access.read:
        expected["s3:GetObject"] = set(access.read)
        expected["s3:ListBucket"] = {"<bucket>"}
    if access.write:
        expected["s3:PutObject"] = set(access.write)
    if access.delete:
        expected["s3:DeleteObject"] = set(access.delete)
    assert s3_grants(resources, name) == expected


def test_each_stage_reads_its_trigger_and_writes_the_next_trigger():
    s3_triggers = {f.name: t.prefix for f in wiring.FUNCTIONS for t in f.triggers if isinstance(t, ObjectCreated)}
    for name, prefix in s3_triggers.items():
        assert prefix in ACCESS[name].read
    assert "incoming/" in ACCESS["scrape"].write
    assert "detections/" in ACCESS["detect"].write
    assert "standard/" in ACCESS["standardise"].write
    assert "vectors/pending/" in ACCESS["embed"].write
    assert "index/" in ACCESS["index"].write


@pytest.mark.parametrize("name", [f.name for f in wiring.FUNCTIONS])
def test_each_function_reads_only_the_database_secret(resources, name):
    statements = role_statements(resources, function_id(resources, name))
    secret_reads = [s for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
    assert len(secret_reads) == 1 and secret_reads[0]["Resource"]["Ref"].startswith("DatabaseClusterSecretAttachment")
    actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert not {a for a in actions if a.endswith(":*") or a == "*"}
    allowed_services = {"s3", "secretsmanager", "xray", "sqs", "lambda"}
    assert {a.split(":")[0] for a in actions} <= allowed_services


def test_api_function_has_no_failure_queue_but_pipeline_functions_do(resources):
    for function in wiring.FUNCTIONS:
        statements = role_statements(resources, function_id(resources, function.name))
        sends = [s for s in statements if "sqs:SendMessage" in s["Action"]]
        assert bool(sends) == any(not isinstance(t, Route) for t in function.triggers)
        for statement in sends:
            assert statement["Resource"]["Fn::GetAtt"][1] == "Arn"  # its own queue, not "*"
