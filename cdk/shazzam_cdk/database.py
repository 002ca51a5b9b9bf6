"""The network and the catalogue database: Aurora MySQL Serverless v2 behind RDS Proxy."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

DATABASE_NAME = "shazzam"
MYSQL_PORT = 3306


class Network(Construct):
    """Two AZs: public subnets (the NAT), private subnets with egress (the Lambdas: scrape and
    revalidate fetch shop pages), isolated subnets (the database: no route out at all)."""

    def __init__(self, scope: Construct, id: str, *, nat_gateways: int):
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="functions", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            # S3 traffic (every pipeline stage) skips the NAT: free, and no NAT data charges.
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY)
        self.vpc.add_flow_log(
            "Rejected",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.function_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.functions_sg = ec2.SecurityGroup(
            self, "Functions", vpc=self.vpc, description="Shazzam Lambdas: out to the database, S3, AWS APIs and shops"
        )


class CatalogueDatabase(Construct):
    def __init__(
        self, scope: Construct, id: str, *, network: Network, min_acu: float, max_acu: float, use_proxy: bool, retain: bool
    ):
        super().__init__(scope, id)
        vpc = network.vpc
        self.cluster_sg = ec2.SecurityGroup(
            self,
            "ClusterSg",
            vpc=vpc,
            description="Aurora: MySQL from the proxy and the functions only",
            allow_all_outbound=False,
        )
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=rds.DatabaseClusterEngine.aurora_mysql(version=rds.AuroraMysqlEngineVersion.VER_3_08_2),
            writer=rds.ClusterInstance.serverless_v2("writer"),
            serverless_v2_min_capacity=min_acu,
            serverless_v2_max_capacity=max_acu,
            vpc=vpc,
            vpc_subnets=network.database_subnets,
            security_groups=[self.cluster_sg],
            credentials=rds.Credentials.from_generated_secret("shazzam"),
            default_database_name=DATABASE_NAME,
            storage_encrypted=True,
            iam_authentication=True,
            deletion_protection=retain,
            backup=rds.BackupProps(retention=Duration.days(7)),
            cloudwatch_logs_exports=["error", "general", "slowquery", "audit"],
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.SNAPSHOT if retain else RemovalPolicy.DESTROY,
        )
        self.secret = self.cluster.secret
        # Monthly single-user rotation; the functions re-read the secret when a login is refused
        # (shazzam.app), so a rotation costs warm containers one retried connection.
        rotation = self.cluster.add_rotation_single_user(
            automatically_after=Duration.days(30),
            vpc_subnets=network.function_subnets,
            exclude_characters=" %+~`#$&*()|[]{}:;<>?!'/@\"\\",
        )
        # The rotation function comes from the Serverless Application Repository, under the name CDK
        # gives it, with no log group: Lambda would make one on its first run that never expires.
        # A retention setting (CDK's custom resource) sets it on that group, making the group if the
        # function has not run yet. Not a LogGroup resource of that name: on a stack deployed before,
        # whose rotation has run, the group already exists and creating it would fail the update.
        # It is set before the schedule's first (immediate) rotation runs the function.
        function_name = rotation.node.default_child.parameters["functionName"]
        rotation_logs = logs.LogRetention(self, "RotationLogRetention", log_group_name=f"/aws/lambda/{function_name}",
                                          retention=logs.RetentionDays.ONE_MONTH)
        for schedule in self.secret.node.find_all():
            if isinstance(schedule, secretsmanager.CfnRotationSchedule):
                schedule.node.add_dependency(rotation_logs)
        self.proxy = None
        self.endpoint = self.cluster.cluster_endpoint.hostname
        if use_proxy:
            self.proxy_sg = ec2.SecurityGroup(
                self, "ProxySg", vpc=vpc, description="RDS Proxy: MySQL from the functions", allow_all_outbound=False
            )
            self.proxy = self.cluster.add_proxy(
                "Proxy",
                secrets=[self.secret],
                vpc=vpc,
                vpc_subnets=network.database_subnets,
                security_groups=[self.proxy_sg],
                require_tls=True,
                debug_logging=False,
            )
            self.proxy_sg.add_ingress_rule(network.functions_sg, ec2.Port.tcp(MYSQL_PORT), "functions to the proxy")
            self.proxy_sg.add_egress_rule(self.cluster_sg, ec2.Port.tcp(MYSQL_PORT), "proxy to the cluster")
            self.cluster_sg.add_ingress_rule(self.proxy_sg, ec2.Port.tcp(MYSQL_PORT), "proxy to the cluster")
            self.endpoint = self.proxy.endpoint
        # The rotation function and (without the proxy) the functions connect to the cluster itself.
        self.cluster_sg.add_ingress_rule(network.functions_sg, ec2.Port.tcp(MYSQL_PORT), "functions and rotation to the cluster")

    def grant_connect(self, grantee: iam.IGrantable) -> None:
        self.secret.grant_read(grantee)

    def environment(self) -> dict[str, str]:
        """How shazzam.app finds the database: credentials from the secret, host from here."""
        return {
            "SHAZZAM_DB_SECRET_ARN": self.secret.secret_arn,
            "SHAZZAM_DB_HOST": self.endpoint,
            # The proxy's certificate is ACM-issued (publicly trusted): verify it. The cluster's own
            # is signed by the RDS CA, which the runtime does not carry.
            "SHAZZAM_DB_TLS": "verify" if self.proxy is not None else "off",
        }
