"""infra/template.yaml, the AWS deployment, checked without an AWS account: cfn-lint is clean, and
what the template hands the code (handlers, HMQ_* variables, the database URL template, the
storage URL, the Makefile targets sam build runs) fits the code; the bucket and the roles are
locked down."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from sqlalchemy.engine import make_url

from hmq import crypto
from lambdas.settings import Settings
from lambdas.storage.s3 import S3Store

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
FUNCTIONS = {"ApiFunction": "lambdas.handler.handler", "MigrateFunction": "lambdas.migrate.handler"}
# Everything the functions may do beyond logging and VPC access (HeadObject is GetObject's).
GRANTED = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "secretsmanager:GetSecretValue"}


# --- reading the template ----------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short forms: ``!Sub x`` -> ``{"Fn::Sub": x}``."""


def _short_form(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_form)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def function_env(template: dict[str, Any], name: str) -> dict[str, Any]:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    own = template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})
    return {**env, **own}


def render_sub(value: Any, names: dict[str, str]) -> str:
    """A ``!Sub`` string with its ``${...}`` references replaced by ``names``; the rest stays."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    text = value["Fn::Sub"]
    assert isinstance(text, str)
    refs = set(re.findall(r"\$\{([^}!]+)\}", text))
    assert refs <= set(names), f"unexpected references {refs - set(names)} in {text!r}"
    return re.sub(r"\$\{([^}!]+)\}", lambda m: names[m[1]], text)


def walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# --- lint ----------------------------------------------------------------------------------------
def test_cfn_lint_is_clean() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


# --- what the template hands the code ------------------------------------------------------------
@pytest.mark.parametrize(("name", "handler"), sorted(FUNCTIONS.items()))
def test_functions_name_handlers_that_exist(template: dict[str, Any], name: str, handler: str) -> None:
    props = template["Resources"][name]["Properties"]
    assert props["Handler"] == handler
    module, attr = handler.rsplit(".", 1)
    source = REPO / (module.replace(".", "/") + ".py")
    tree = ast.parse(source.read_text())
    assigned = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    defined = {t.id for t in assigned if isinstance(t, ast.Name)}
    defined |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert attr in defined, f"{source} defines no {attr}"
    # sam build runs `make build-<name>` in a copy of the repository root
    assert (TEMPLATE.parent / props["CodeUri"]).resolve() == REPO
    assert template["Resources"][name]["Metadata"]["BuildMethod"] == "makefile"
    glob = template["Globals"]["Function"]
    assert (glob["Runtime"], glob["Architectures"]) == ("python3.12", ["x86_64"])


def test_makefile_builds_the_lambda_package(tmp_path: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = {t for line in re.findall(r"^([\w.\- ]+):(?!=)", makefile, re.M) for t in line.split()}
    assert {f"build-{name}" for name in FUNCTIONS} <= targets
    for name in FUNCTIONS:
        out = subprocess.run(
            ["make", "-n", "-C", str(REPO), f"build-{name}", f"ARTIFACTS_DIR={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        plan = out.stdout
        assert f'--target "{tmp_path}"' in plan and "[server]" in plan
        assert all(flag in plan for flag in ("--platform manylinux2014_x86_64", "--python-version 3.12"))
        assert "--only-binary=:all:" in plan
    assert not any(tmp_path.iterdir())  # a dry run


def test_environment_is_what_settings_reads(template: dict[str, Any]) -> None:
    read = {"HMQ_" + n for n in re.findall(r'\bget\("([A-Z_]+)"', inspect.getsource(Settings.from_env))}
    everything = Settings(
        admin_public_key=crypto.AdminKey.generate().identity.public.to_text(),
        database_url="sqlite://",
        storage_url="s3://bucket",
        public_url="https://hmq.example.com",
        database_secret_arn="arn:aws:secretsmanager:r:1:secret:s",
    )
    assert set(everything.to_env()) <= read  # the source was parsed right
    assert {"HMQ_ADMIN_PUBLIC_KEY", "HMQ_DATABASE_URL", "HMQ_DATABASE_SECRET_ARN", "HMQ_STORAGE_URL"} <= read
    for name in FUNCTIONS:
        env = function_env(template, name)
        assert set(env) <= read, f"{name} sets variables the API never reads: {set(env) - read}"
        assert {"HMQ_ADMIN_PUBLIC_KEY", "HMQ_DATABASE_URL", "HMQ_DATABASE_SECRET_ARN", "HMQ_STORAGE_URL"} <= set(env)
        assert env["HMQ_MIGRATE_ON_START"] == "0"  # the deploy migrates (SchemaMigration)
        assert env["HMQ_ADMIN_PUBLIC_KEY"] == {"Ref": "AdminPublicKey"}
        assert env["HMQ_DATABASE_SECRET_ARN"] == {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]}


def test_admin_key_parameter_accepts_what_hmq_admin_key_prints(template: dict[str, Any]) -> None:
    pattern = template["Parameters"]["AdminPublicKey"]["AllowedPattern"]
    for _ in range(20):
        assert re.fullmatch(pattern, crypto.AdminKey.generate().identity.public.to_text())
    assert not re.fullmatch(pattern, crypto.AdminKey.generate().to_text())  # never the private key


def test_settings_resolve_from_the_template_environment(template: dict[str, Any]) -> None:
    """Render the !Sub values as CloudFormation would, then let Settings fill the secret in."""
    names = {
        "ObjectBucket": "hmq-objects-abc123",
        "AWS::Region": "eu-west-1",
        "DatabaseCluster.Endpoint.Address": "hmq.cluster-xyz.eu-west-1.rds.amazonaws.com",
        "DatabaseCluster.Endpoint.Port": "5432",
    }
    env = function_env(template, "ApiFunction")
    settings = Settings.from_env(
        {
            **{k: v for k, v in env.items() if isinstance(v, str)},
            "HMQ_ADMIN_PUBLIC_KEY": crypto.AdminKey.generate().identity.public.to_text(),
            "HMQ_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1",
            "HMQ_STORAGE_URL": render_sub(env["HMQ_STORAGE_URL"], names),
            "HMQ_DATABASE_URL": render_sub(env["HMQ_DATABASE_URL"], names),
        }
    )
    assert not settings.migrate_on_start and settings.presign_expiry_seconds == 900
    store = S3Store.from_url(settings.storage_url)
    assert (store.bucket, store.region) == ("hmq-objects-abc123", "eu-west-1")
    assert store.prefix == "" and store.endpoint_url is None  # AWS itself, the whole bucket

    # An RDS-managed master secret holds only username and password; passwords may hold anything.
    secret = {"username": "hmq_admin", "password": "p@ss:w/rd?#%+ x"}
    with mock.patch("boto3.client") as client:
        client.return_value.get_secret_value.return_value = {"SecretString": json.dumps(secret)}
        url = make_url(settings.resolved_database_url())
    assert (url.drivername, url.username, url.password) == ("postgresql+psycopg", "hmq_admin", secret["password"])
    assert (url.host, url.port, url.database) == (names["DatabaseCluster.Endpoint.Address"], 5432, "hmq")
    assert url.query == {"sslmode": "require"}
    assert template["Resources"]["DatabaseCluster"]["Properties"]["DatabaseName"] == url.database


def test_deploy_migrates_before_the_api_goes_live(template: dict[str, Any]) -> None:
    migration = template["Resources"]["SchemaMigration"]
    assert migration["Type"] == "Custom::HmqSchema"
    assert migration["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    assert migration["Properties"]["Version"] == {"Ref": "DeployVersion"}
    assert "DatabaseInstance" in migration["DependsOn"]
    assert template["Resources"]["ApiFunction"]["DependsOn"] == "SchemaMigration"
    assert template["Resources"]["MigrateFunction"]["Properties"]["Timeout"] >= 120


def test_http_api_routes_everything_to_the_api_function(template: dict[str, Any]) -> None:
    (api_name,) = resources(template, "AWS::Serverless::HttpApi")
    events = template["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    (event,) = [e for e in events if e["Type"] == "HttpApi"]
    props = event["Properties"]
    assert props["ApiId"] == {"Ref": api_name} and props["PayloadFormatVersion"] == "2.0"
    assert "Path" not in props and "Method" not in props  # the $default route: every method and path
    names = {api_name: "a1b2c3", "AWS::Region": "eu-west-1", "AWS::URLSuffix": "amazonaws.com"}
    url = render_sub(template["Outputs"]["ApiUrl"]["Value"], names)
    assert url == "https://a1b2c3.execute-api.eu-west-1.amazonaws.com"
    assert {"ApiUrl", "BucketName", "DatabaseSecretArn"} <= set(template["Outputs"])


# --- locked down ---------------------------------------------------------------------------------
def test_bucket_is_private_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    (bucket_name, bucket), *rest = resources(template, "AWS::S3::Bucket").items()
    assert not rest
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "CorsConfiguration" not in props

    (policy,) = resources(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": bucket_name}
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bucket_lifecycle(template: dict[str, Any]) -> None:
    rules = template["Resources"]["ObjectBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    plain = [r for r in rules if "Fn::If" not in r]
    conditional = [r["Fn::If"] for r in rules if "Fn::If" in r]
    assert any(r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1} for r in plain)
    # expiry is opt-in: each rule exists only when its retention parameter is not 0 (keep)
    assert all("ExpirationInDays" not in r for r in plain)
    by_prefix = {c[1]["Prefix"]: (c[0], c[1]["ExpirationInDays"]) for c in conditional}
    assert by_prefix == {
        "w/": ("ExpireResults", {"Ref": "ResultRetentionDays"}),
        "u/": ("ExpireUploads", {"Ref": "UploadRetentionDays"}),
    }
    assert all(c[2] == {"Ref": "AWS::NoValue"} for c in conditional)
    conditions = template["Conditions"]
    for name, parameter in (("ExpireResults", "ResultRetentionDays"), ("ExpireUploads", "UploadRetentionDays")):
        assert conditions[name] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
        assert template["Parameters"][parameter]["Default"] == 0


def test_roles_are_least_privilege(template: dict[str, Any]) -> None:
    statements = [
        s
        for name in FUNCTIONS
        for policy in template["Resources"][name]["Properties"]["Policies"]
        for s in policy["Statement"]
    ]
    assert not resources(template, "AWS::IAM::Role") and not resources(template, "AWS::IAM::Policy")
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in a for a in actions), statement
        for value in walk(statement["Resource"]):
            if isinstance(value, str):
                assert value != "*" and ("*" not in value or value == "${ObjectBucket.Arn}/*"), statement
    granted = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert granted == GRANTED
    migrate = template["Resources"]["MigrateFunction"]["Properties"]["Policies"]
    assert [s["Action"] for p in migrate for s in p["Statement"]] == ["secretsmanager:GetSecretValue"]


def test_database_is_private_and_reached_from_the_functions_only(template: dict[str, Any]) -> None:
    cluster = template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["Engine"] == "aurora-postgresql" and cluster["ManageMasterUserPassword"] is True
    assert cluster["StorageEncrypted"] is True and "MasterUserPassword" not in cluster
    assert template["Resources"]["DatabaseInstance"]["Properties"]["PubliclyAccessible"] is False
    (ingress,) = resources(template, "AWS::EC2::SecurityGroupIngress").values()
    assert ingress["Properties"]["GroupId"] == {"Ref": "DatabaseSecurityGroup"}
    assert ingress["Properties"]["SourceSecurityGroupId"] == {"Ref": "LambdaSecurityGroup"}
    assert (ingress["Properties"]["FromPort"], ingress["Properties"]["ToPort"]) == (5432, 5432)
    # no route to the internet: no internet or NAT gateway, no public subnet
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::Route"}


def test_readme_documents_every_parameter(template: dict[str, Any]) -> None:
    readme = (REPO / "infra" / "README.md").read_text()
    assert all(name in readme for name in template["Parameters"])
    assert "sam build" in readme and "sam deploy --guided" in readme
