"""infra/template.yaml, the AWS deployment, checked without an AWS account: cfn-lint is clean, and
what the template hands the code (handlers, HMQ_* variables, the database URL template, the
storage URL, the Makefile targets sam build runs) fits the code; the bucket and the roles are
locked down; the functions reach the database through RDS Proxy (or directly, with
UseRdsProxy=false) and by no other path.

The template is read as CloudFormation would deploy it for given parameters (:func:`deployed`:
conditions evaluated, ``Fn::If`` resolved); what only AWS can check (the proxy registering its
target, a real deploy) is not tested here."""

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
SECRET = {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]}
PG = (5432, 5432)
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
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
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


def reference(value: Any) -> str:
    """The resource (or ``Resource.Attribute``) a ``Ref`` or ``Fn::GetAtt`` names."""
    assert isinstance(value, dict) and len(value) == 1, value
    ((kind, target),) = value.items()
    assert kind in ("Ref", "Fn::GetAtt"), value
    return target if kind == "Ref" else ".".join(target)


def render_sub(value: Any, names: dict[str, str]) -> str:
    """A ``!Sub`` string (or ``[string, variables]``) with its ``${...}`` references replaced by
    ``names`` (and its variables, themselves literals or references into ``names``); the rest stays."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
    assert isinstance(text, str)
    known = {**names, **{k: v if isinstance(v, str) else names[reference(v)] for k, v in variables.items()}}
    refs = set(re.findall(r"\$\{([^}!]+)\}", text))
    assert refs <= set(known), f"unexpected references {refs - set(known)} in {text!r}"
    return re.sub(r"\$\{([^}!]+)\}", lambda m: known[m[1]], text)


# --- the template as deployed for given parameters ---------------------------------------------
_CONDITION_FUNCTIONS = {
    "Fn::Equals": lambda ev, args: str(ev(args[0])) == str(ev(args[1])),
    "Fn::Not": lambda ev, args: not ev(args[0]),
    "Fn::And": lambda ev, args: all(ev(a) for a in args),
    "Fn::Or": lambda ev, args: any(ev(a) for a in args),
}


def condition_values(template: dict[str, Any], **parameters: str) -> dict[str, bool]:
    """Each condition's value for the parameters given (the others at their defaults)."""
    values = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    assert set(parameters) <= set(values), parameters
    values.update(parameters)

    def ev(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ((fn, arg),) = node.items()
        if fn == "Ref":
            return values[arg]
        if fn == "Condition":
            return ev(template["Conditions"][arg])
        return _CONDITION_FUNCTIONS[fn](ev, arg)

    return {name: bool(ev(c)) for name, c in template["Conditions"].items()}


_NO_VALUE = object()


def resolve_ifs(node: Any, conditions: dict[str, bool]) -> Any:
    """``node`` with every ``Fn::If`` replaced by its chosen branch and ``AWS::NoValue`` dropped."""
    if isinstance(node, list):
        items = (resolve_ifs(v, conditions) for v in node)
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if node == {"Ref": "AWS::NoValue"}:
        return _NO_VALUE
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        return resolve_ifs(yes if conditions[name] else no, conditions)
    items = ((k, resolve_ifs(v, conditions)) for k, v in node.items())
    return {k: v for k, v in items if v is not _NO_VALUE}


def deployed(template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The template as CloudFormation would deploy it with ``parameters``: only the resources
    and outputs whose condition holds, every ``Fn::If`` resolved (Globals included)."""
    conditions = condition_values(template, **parameters)
    keep = {
        section: {n: r for n, r in template[section].items() if conditions.get(r.get("Condition", ""), True)}
        for section in ("Resources", "Outputs")
    }
    return resolve_ifs({**template, **keep}, conditions)


def dependencies(stack: dict[str, Any], name: str) -> set[str]:
    """The resources ``name`` waits for, directly or not: DependsOn, Ref, GetAtt, ${} in Sub
    (a function's Globals included)."""
    found: set[str] = set()
    todo = [name]
    while todo:
        resource = stack["Resources"][todo.pop()]
        depends = resource.get("DependsOn", [])
        direct = set([depends] if isinstance(depends, str) else depends)
        scope = [resource.get("Properties", {})]
        if resource["Type"] == "AWS::Serverless::Function":
            scope.append(stack["Globals"]["Function"])
        for node in walk(scope):
            if isinstance(node, dict) and ("Ref" in node or "Fn::GetAtt" in node) and len(node) == 1:
                direct.add(reference(node).split(".")[0])
            elif isinstance(node, dict) and "Fn::Sub" in node:
                text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
                direct |= {ref.split(".")[0] for ref in re.findall(r"\$\{([^}!]+)\}", text)}
        new = (direct & set(stack["Resources"])) - found
        found |= new
        todo.extend(new)
    return found


def security_group_rules(stack: dict[str, Any]) -> tuple[set[tuple[str, str, tuple[int, int]]], ...]:
    """(ingress, egress) rules between security groups: (from group, to group, ports)."""
    ingress, egress = set(), set()
    for name, r in stack["Resources"].items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::EC2::SecurityGroup":
            for rule in props.get("SecurityGroupIngress", []):
                if "SourceSecurityGroupId" in rule:
                    ingress.add((reference(rule["SourceSecurityGroupId"]), name, (rule["FromPort"], rule["ToPort"])))
            for rule in props.get("SecurityGroupEgress", []):
                if "DestinationSecurityGroupId" in rule:
                    egress.add(
                        (name, reference(rule["DestinationSecurityGroupId"]), (rule["FromPort"], rule["ToPort"]))
                    )
        elif r["Type"] == "AWS::EC2::SecurityGroupIngress":
            ports = (props["FromPort"], props["ToPort"])
            ingress.add((reference(props["SourceSecurityGroupId"]), reference(props["GroupId"]), ports))
    assert not resources(stack, "AWS::EC2::SecurityGroupEgress")  # every egress rule is inline
    return ingress, egress


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


NAMES = {  # what CloudFormation would put in for these references
    "ObjectBucket": "hmq-objects-abc123",
    "AWS::Region": "eu-west-1",
    "DatabaseCluster.Endpoint.Address": "hmq.cluster-xyz.eu-west-1.rds.amazonaws.com",
    "DatabaseCluster.Endpoint.Port": "5432",
    "DatabaseProxy.Endpoint": "hmq-0d1e.proxy-xyz.eu-west-1.rds.amazonaws.com",
}


@pytest.mark.parametrize(
    ("use_proxy", "host"),
    [("true", NAMES["DatabaseProxy.Endpoint"]), ("false", NAMES["DatabaseCluster.Endpoint.Address"])],
)
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_settings_resolve_from_the_template_environment(
    template: dict[str, Any], function: str, use_proxy: str, host: str
) -> None:
    """Render the !Sub values as CloudFormation would, then let Settings fill the secret in: the
    functions connect to the proxy's endpoint (or, without it, the cluster's) as the secret's user."""
    names = NAMES
    env = function_env(deployed(template, UseRdsProxy=use_proxy), function)
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
    assert (url.host, url.port, url.database) == (host, 5432, "hmq")
    assert url.query == {"sslmode": "require"}  # TLS, which the proxy requires (RequireTLS)
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
    function_statements = [
        s
        for name in FUNCTIONS
        for policy in template["Resources"][name]["Properties"]["Policies"]
        for s in policy["Statement"]
    ]
    # the one role outside SAM's: the proxy's, allowed to read the database secret and nothing else
    assert set(resources(template, "AWS::IAM::Role")) == {"DatabaseProxyRole"}
    assert not resources(template, "AWS::IAM::Policy") and not resources(template, "AWS::IAM::ManagedPolicy")
    proxy_role = template["Resources"]["DatabaseProxyRole"]["Properties"]
    assert "ManagedPolicyArns" not in proxy_role
    proxy_statements = [s for p in proxy_role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert [(s["Action"], s["Resource"]) for s in proxy_statements] == [("secretsmanager:GetSecretValue", SECRET)]
    for statement in function_statements + proxy_statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in a for a in actions), statement
        for value in walk(statement["Resource"]):
            if isinstance(value, str):
                assert value != "*" and ("*" not in value or value == "${ObjectBucket.Arn}/*"), statement
    granted = {
        a
        for s in function_statements + proxy_statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert granted == GRANTED
    migrate = template["Resources"]["MigrateFunction"]["Properties"]["Policies"]
    assert [s["Action"] for p in migrate for s in p["Statement"]] == ["secretsmanager:GetSecretValue"]


def test_database_is_private(template: dict[str, Any]) -> None:
    cluster = template["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["Engine"] == "aurora-postgresql" and cluster["ManageMasterUserPassword"] is True
    assert cluster["StorageEncrypted"] is True and "MasterUserPassword" not in cluster
    assert template["Resources"]["DatabaseInstance"]["Properties"]["PubliclyAccessible"] is False
    # no route to the internet: no internet or NAT gateway, no public subnet
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::Route"}


# --- RDS Proxy -----------------------------------------------------------------------------------
PROXY_RESOURCES = {
    "DatabaseProxy",
    "DatabaseProxyTargetGroup",
    "DatabaseProxyRole",
    "ProxySecurityGroup",
    "ProxyIngressFromLambda",
    "DatabaseIngressFromProxy",
}


def test_proxy_is_on_by_default_and_optional(template: dict[str, Any]) -> None:
    assert template["Parameters"]["UseRdsProxy"]["Default"] == "true"
    for stack in (deployed(template), deployed(template, UseRdsProxy="true")):
        assert set(stack["Resources"]) >= PROXY_RESOURCES
    direct = deployed(template, UseRdsProxy="false")["Resources"]
    assert not PROXY_RESOURCES & set(direct)
    assert not resources({"Resources": direct}, "AWS::RDS::DBProxy")
    assert {"DatabaseCluster", "DatabaseInstance", "DatabaseIngressFromLambda"} <= set(direct)


def test_proxy_signs_in_with_the_cluster_secret_and_requires_tls(template: dict[str, Any]) -> None:
    stack = deployed(template)
    ((name, proxy),) = resources(stack, "AWS::RDS::DBProxy").items()
    props = proxy["Properties"]
    assert props["EngineFamily"] == "POSTGRESQL" and props["RequireTLS"] is True
    (auth,) = props["Auth"]
    assert (auth["AuthScheme"], auth["SecretArn"]) == ("SECRETS", SECRET)
    assert auth["IAMAuth"] == "DISABLED"  # the API signs in with the secret's password, not an IAM token
    assert auth["ClientPasswordAuthType"] == "POSTGRES_SCRAM_SHA_256"
    assert props["VpcSubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]

    role = stack["Resources"][reference(props["RoleArn"]).split(".")[0]]["Properties"]
    assert props["RoleArn"] == {"Fn::GetAtt": ["DatabaseProxyRole", "Arn"]}
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {"Effect": "Allow", "Principal": {"Service": "rds.amazonaws.com"}, "Action": "sts:AssumeRole"}
    # The secret is encrypted with Secrets Manager's AWS managed key (no key of the cluster's own),
    # which the role may use through Secrets Manager without kms:Decrypt; a key of its own would need it.
    assert "KmsKeyId" not in stack["Resources"]["DatabaseCluster"]["Properties"].get("MasterUserSecret", {})

    ((_, group),) = resources(stack, "AWS::RDS::DBProxyTargetGroup").items()
    target = group["Properties"]
    assert target["DBProxyName"] == {"Ref": name} and target["TargetGroupName"] == "default"
    assert target["DBClusterIdentifiers"] == [{"Ref": "DatabaseCluster"}] and "DBInstanceIdentifiers" not in target
    # a request gets the API's 503 when no pooled connection frees up, before the function times out
    borrow = target["ConnectionPoolConfigurationInfo"]["ConnectionBorrowTimeout"]
    assert 0 < borrow < stack["Globals"]["Function"]["Timeout"]
    assert stack["Outputs"]["DatabaseEndpoint"]["Value"] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}


def test_proxy_name_is_valid_for_any_stack(template: dict[str, Any]) -> None:
    """A proxy name: 1-64 letters, digits and single hyphens, a letter first, unique per account
    and region: the stack id's UUID, whatever the stack's name (up to 128 characters)."""
    name = template["Resources"]["DatabaseProxy"]["Properties"]["DBProxyName"]
    stack_id = f"arn:aws:cloudformation:eu-west-1:123456789012:stack/{'h' * 128}/0d1e2f30-4a5b-11ef-9c6d-0a1b2c3d4e5f"
    separator, (prefix, select) = name["Fn::Join"]
    index, split = select["Fn::Select"]
    delimiter, source = split["Fn::Split"]
    assert source == {"Ref": "AWS::StackId"}
    value = separator.join([prefix, stack_id.split(delimiter)[index]])
    assert value == "hmq-0d1e2f30-4a5b-11ef-9c6d-0a1b2c3d4e5f"
    assert len(value) <= 64 and re.fullmatch(r"[A-Za-z](?:-?[A-Za-z0-9])*", value)


@pytest.mark.parametrize(
    ("use_proxy", "paths"),
    [
        ("true", {("LambdaSecurityGroup", "ProxySecurityGroup"), ("ProxySecurityGroup", "DatabaseSecurityGroup")}),
        ("false", {("LambdaSecurityGroup", "DatabaseSecurityGroup")}),
    ],
)
def test_functions_reach_the_database_through_the_proxy_only(
    template: dict[str, Any], use_proxy: str, paths: set[tuple[str, str]]
) -> None:
    """PostgreSQL flows where one group's egress and the next one's ingress both allow it:
    functions -> proxy -> cluster, and no way around the proxy (or functions -> cluster without it)."""
    stack = deployed(template, UseRdsProxy=use_proxy)
    ingress, egress = security_group_rules(stack)
    assert {(a, b) for a, b, ports in ingress & egress if ports == PG} == paths
    assert all(ports in (PG, (443, 443)) for *_, ports in ingress | egress)
    # nothing else may connect to the database, nor to the proxy
    sources = {b: {a for a, bb, _ in ingress if bb == b} for _, b in paths}
    assert sources == {b: {a} for a, b in paths}
    # who sits in which group
    assert stack["Globals"]["Function"]["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "LambdaSecurityGroup"}]
    cluster = stack["Resources"]["DatabaseCluster"]["Properties"]
    assert cluster["VpcSecurityGroupIds"] == [{"Ref": "DatabaseSecurityGroup"}] and cluster["Port"] == 5432
    for proxy in resources(stack, "AWS::RDS::DBProxy").values():
        assert proxy["Properties"]["VpcSecurityGroupIds"] == [{"Ref": "ProxySecurityGroup"}]


@pytest.mark.parametrize("use_proxy", ["true", "false"])
def test_deploy_order_lets_the_migration_connect(template: dict[str, Any], use_proxy: str) -> None:
    """The migration runs once the path it connects by is complete: the instance up, the proxy's
    target registered (which itself waits for the instance and for the cluster to admit the proxy)."""
    stack = deployed(template, UseRdsProxy=use_proxy)
    migration = dependencies(stack, "SchemaMigration")
    assert {"DatabaseInstance", "MigrateFunction", "SecretsManagerEndpoint", "S3Endpoint"} <= migration
    assert {"SchemaMigration"} | migration <= dependencies(stack, "ApiFunction")
    if use_proxy == "true":
        assert {"DatabaseProxyTargetGroup", "DatabaseProxy"} <= migration
        assert {"DatabaseInstance", "DatabaseIngressFromProxy"} <= dependencies(stack, "DatabaseProxyTargetGroup")
        assert "DatabaseProxy" in dependencies(stack, "MigrateFunction")  # its URL names the proxy


def test_readme_documents_every_parameter(template: dict[str, Any]) -> None:
    readme = (REPO / "infra" / "README.md").read_text()
    assert all(name in readme for name in template["Parameters"])
    assert "sam build" in readme and "sam deploy --guided" in readme
