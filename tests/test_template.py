"""template.yaml: linters clean, queue/DLQ wiring, bucket hardening, no secrets, least privilege, routes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "template.yaml"
BIN = Path(sys.executable).parent


def load_template() -> dict:
    # SAM CLI's loader understands the short intrinsic tags (!Ref, !Sub, !GetAtt) and returns the long form.
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def transformed() -> dict:
    """The template after the SAM transform (what CloudFormation deploys), computed offline."""
    from samtranslator.translator.transform import transform

    raw = load_template()
    for resource in raw["Resources"].values():
        for prop in ("CodeUri", "ContentUri"):
            if prop in resource.get("Properties", {}):
                resource["Properties"][prop] = "s3://bucket/key"  # what `sam package` would put there

    class NoManagedPolicyLookup:  # the template names no managed policies by name; nothing to look up
        def load(self) -> dict:
            return {}

    return transform(raw, {"AWS::Region": "us-east-1"}, NoManagedPolicyLookup())


def tool_env() -> dict:
    env = dict(os.environ)
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


# ---------------------------------------------------------------- linters


# The token API's parameters set (OidcEnabled), as defaults of a copy of the template: the linters read defaults.
OIDC = {"OidcIssuer": "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_AbCdEf123",
        "OidcAudience": "4f3kq2example0client0id", "TenantClaim": "tenant"}


@pytest.fixture(params=["oidc-off", "oidc-on"])
def template_file(request, tmp_path) -> Iterator[Path]:
    """template.yaml as it is (OIDC parameters empty), or a copy beside it with the OIDC parameters' defaults set."""
    if request.param == "oidc-off":
        yield TEMPLATE
        return
    text = TEMPLATE.read_text()
    for name, value in OIDC.items():
        text, count = re.subn(rf'(\n  {name}:\n    Type: String\n    Default: )""', rf'\g<1>"{value}"', text)
        assert count == 1, name
    copy = REPO_ROOT / f".template-oidc-{tmp_path.name}.yaml"  # beside template.yaml: CodeUri paths resolve
    copy.write_text(text)
    yield copy
    copy.unlink()


def test_cfn_lint_clean(template_file):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(template_file)], cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_sam_validate_lint_clean(template_file):
    result = subprocess.run(
        [str(BIN / "sam"), "validate", "--lint", "--region", "us-east-1", "--template-file", str(template_file)],
        cwd=REPO_ROOT,
        check=False,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


# ---------------------------------------------------------------- queue, DLQ, event source


def test_index_queue_redrives_to_dead_letter_queue(resources):
    redrive = resources["IndexQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["IndexDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == 5
    assert resources["IndexDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    # The DLQ keeps messages longer than the source queue, so nothing expires before it is looked at.
    assert (
        resources["IndexDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
        > resources["IndexQueue"]["Properties"]["MessageRetentionPeriod"]
    )


def test_visibility_timeout_is_six_times_index_function_timeout(template, resources):
    function_timeout = resources["IndexFunction"]["Properties"].get(
        "Timeout", template.get("Globals", {}).get("Function", {}).get("Timeout")
    )
    assert isinstance(function_timeout, int) and function_timeout > 0
    assert resources["IndexQueue"]["Properties"]["VisibilityTimeout"] == 6 * function_timeout


def test_index_function_consumes_queue_with_partial_batch_failures(resources):
    props = resources["IndexFunction"]["Properties"]
    (event,) = props["Events"].values()
    assert event["Type"] == "SQS"
    source = event["Properties"]
    assert source["Queue"] == {"Fn::GetAtt": ["IndexQueue", "Arn"]}
    assert source["BatchSize"] == 10
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Bulk uploads cannot overwhelm Qdrant: bounded instances, and pollers never exceed that bound.
    assert props["ReservedConcurrentExecutions"] == {"Ref": "IndexReservedConcurrency"}
    assert source["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "IndexReservedConcurrency"}


def test_event_source_mapping_after_transform(transformed):
    (mapping,) = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Properties"]["BatchSize"] == 10


# ---------------------------------------------------------------- bucket


def test_bucket_blocks_public_access_and_encrypts(resources):
    props = resources["ImagesBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_bucket_policy_denies_non_tls(resources):
    policy = resources["ImagesBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ImagesBucket"}
    denies = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert len(denies) == 1
    (deny,) = denies
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    # Both the bucket itself and every object in it.
    assert {"Fn::GetAtt": ["ImagesBucket", "Arn"]} in deny["Resource"]
    assert {"Fn::Sub": "${ImagesBucket.Arn}/*"} in deny["Resource"]


def test_bucket_cors_allows_presigned_uploads_from_the_page(resources):
    (rule,) = resources["ImagesBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedOrigins"] == [{"Ref": "CorsOrigin"}]
    # POST: the presigned POST uploads (bounded in size); no PUT, whose size S3 could not bound.
    assert set(rule["AllowedMethods"]) == {"POST", "GET", "HEAD"}


def test_bucket_notifies_queue_without_circular_dependency(resources):
    bucket = resources["ImagesBucket"]
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {c["Event"] for c in configs} == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    assert all(c["Queue"] == {"Fn::GetAtt": ["IndexQueue", "Arn"]} for c in configs)
    # S3 checks the destination when the notification is created: the queue policy must exist first,
    # and it names the bucket by the same fixed name rather than referencing the bucket resource.
    assert bucket["DependsOn"] == "IndexQueuePolicy"
    (statement,) = resources["IndexQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    source_arn = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert source_arn == "arn:${AWS::Partition}:s3:::" + bucket["Properties"]["BucketName"]["Fn::Sub"]
    policy_json = json.dumps(resources["IndexQueuePolicy"])
    assert not re.search(r'"Ref": "ImagesBucket"|\["ImagesBucket",|\$\{ImagesBucket', policy_json)


# ---------------------------------------------------------------- secrets and IAM


SECRET_NAME = re.compile(r"(api_?key|secret|password|token)", re.IGNORECASE)


def test_no_plain_text_secrets(template, resources):
    # Secrets reach the functions only as the *names* of SSM parameters.
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in ("IndexFunction", "SearchFunction"):
        variables.update(resources[name]["Properties"].get("Environment", {}).get("Variables", {}))
    secret_vars = {k: v for k, v in variables.items() if SECRET_NAME.search(k)}
    assert secret_vars, "expected the *_PARAM variables naming the SSM parameters"
    for name, value in secret_vars.items():
        assert name.endswith("_PARAM"), f"{name} looks like a secret in plain text"
        assert isinstance(value, dict) and "Ref" in value, f"{name} should come from a parameter name"
    for name, declared in template["Parameters"].items():
        if SECRET_NAME.search(name):
            assert name.endswith("ParameterName"), f"parameter {name} looks like a secret value"
            assert declared["Default"].startswith("/")
    overrides = (REPO_ROOT / "samconfig.toml").read_text()
    assert not re.search(r"(QdrantApiKey|ApiKey)=(?!/)", overrides), "samconfig must hold parameter names only"


def _statements(policies: list) -> list[dict]:
    found = []
    for policy in policies:
        if isinstance(policy, dict) and "Statement" in policy:
            found += policy["Statement"]
    return found


def test_least_privilege_in_template(resources):
    allowed_templates = {"S3ReadPolicy", "SSMParameterWithSlashPrefixReadPolicy"}
    for name in ("IndexFunction", "SearchFunction"):
        props = resources[name]["Properties"]
        assert "Role" not in props
        for policy in props["Policies"]:
            assert isinstance(policy, dict), f"{name}: managed policy {policy!r} by name is too broad"
            if "Statement" in policy:
                continue
            ((template_name, args),) = policy.items()
            assert template_name in allowed_templates, f"{name}: unexpected policy template {template_name}"
            # Every policy template is scoped to one of this stack's resources or parameters.
            assert all(isinstance(v, dict) and "Ref" in v for v in args.values()), (name, template_name)
        for statement in _statements(props["Policies"]):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in a for a in actions), (name, actions)
            resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert all(r != "*" for r in resources_), (name, resources_)


def test_least_privilege_after_transform(transformed):
    roles = {k: v for k, v in transformed["Resources"].items() if v["Type"] == "AWS::IAM::Role"}
    assert set(roles) == {"IndexFunctionRole", "SearchFunctionRole"}
    aws_managed = "arn:aws:iam::aws:policy/"
    # The only AWS-managed policies are those SAM adds for logging, tracing and the SQS poller.
    assert roles["IndexFunctionRole"]["Properties"]["ManagedPolicyArns"] == [
        aws_managed + "service-role/AWSLambdaBasicExecutionRole",
        aws_managed + "AWSXrayWriteOnlyAccess",
        aws_managed + "service-role/AWSLambdaSQSQueueExecutionRole",
    ]
    assert roles["SearchFunctionRole"]["Properties"]["ManagedPolicyArns"] == [
        aws_managed + "service-role/AWSLambdaBasicExecutionRole",
        aws_managed + "AWSXrayWriteOnlyAccess",
    ]
    for name, role in roles.items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all("*" not in a for a in actions), (name, actions)
                if statement["Resource"] == "*":
                    # ssm:DescribeParameters supports no resource-level permissions (part of the SAM template).
                    assert actions == ["ssm:DescribeParameters"], (name, statement)
    index_actions = json.dumps(roles["IndexFunctionRole"]["Properties"]["Policies"])
    assert "s3:PutObject" not in index_actions and "s3:DeleteObject" not in index_actions


# ---------------------------------------------------------------- functions, layer, API


def test_functions_use_the_layer_and_carry_only_handler_code(template, resources):
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    assert globals_["Layers"] == [{"Ref": "SharedLayer"}]
    assert globals_["Architectures"] == [{"Ref": "Architecture"}]
    # X-Ray is a parameter; off (PassThrough) the handlers are told so and never load the X-Ray SDK.
    assert globals_["Tracing"] == {"Ref": "Tracing"}
    assert template["Parameters"]["Tracing"]["Default"] == "PassThrough"
    assert globals_["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["TracingActive", "false", "true"]}
    for name, code_dir in (("IndexFunction", "functions/index/"), ("SearchFunction", "functions/search/")):
        props = resources[name]["Properties"]
        assert props["CodeUri"] == code_dir and props["Handler"] == "app.handler"
        assert not (REPO_ROOT / code_dir / "requirements.txt").exists(), f"{name}: dependencies belong in the layer"


def test_layer_is_built_with_makefile(resources):
    layer = resources["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Metadata"]["BuildArchitecture"] == {"Ref": "Architecture"}
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert "build-SharedLayer:" in (REPO_ROOT / "layers/shared/Makefile").read_text()


def test_runtime_and_architectures_agree_with_the_build(template):
    """python3.13 (Amazon Linux 2023) on both architectures; the default Architecture is the one `make build` builds
    and samconfig.toml deploys, the runtime the one the layer is built for and the invoke runner runs."""
    import tomllib

    from imgsim_tools import invoke

    runtime = template["Globals"]["Function"]["Runtime"]
    assert runtime == "python3.13" == f"python{invoke.PYTHON_VERSION}"
    assert re.search(r"^RUNTIME_PYTHON := 3\.13$", (REPO_ROOT / "layers/shared/Makefile").read_text(), re.MULTILINE)
    architecture = template["Parameters"]["Architecture"]
    assert architecture["AllowedValues"] == ["x86_64", "arm64"]
    make_default = re.search(r"^ARCH \?= (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert make_default and make_default.group(1) == architecture["Default"] == "x86_64"
    deploy = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())["default"]["deploy"]["parameters"]
    assert f"Architecture={architecture['Default']}" in deploy["parameter_overrides"]


def test_parameters_and_outputs(template):
    params = template["Parameters"]
    for name in ("QdrantUrl", "QdrantApiKeyParameterName", "ApiKeyParameterName", "CollectionName",
                 "Architecture", "IndexReservedConcurrency", "CorsOrigin"):
        assert name in params
    assert params["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]  # both built and checked: test_packaging
    assert {"ApiUrl", "ImagesBucketName", "IndexQueueUrl", "IndexDeadLetterQueueUrl"} <= set(template["Outputs"])


def _handler_routes() -> set[tuple[str, str]]:
    """(METHOD, /path) of every route the search function declares (app.py and the modules beside it),
    in API Gateway's {param} syntax."""
    source = "\n".join(p.read_text() for p in sorted((REPO_ROOT / "functions/search").glob("*.py")))
    routes = re.findall(r"@app\.(get|post|put|patch|delete)\(\s*\"([^\"]+)\"", source)
    return {(method.upper(), re.sub(r"<(\w+)>", r"{\1}", path)) for method, path in routes}


def test_every_search_route_is_in_the_http_api(resources):
    events = resources["SearchFunction"]["Properties"]["Events"].values()
    assert all(e["Type"] == "HttpApi" and e["Properties"]["ApiId"] == {"Ref": "HttpApi"} for e in events)
    template_routes = {(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events}
    contract = {
        ("POST", "/search"), ("POST", "/compare"), ("POST", "/uploads"), ("GET", "/images/{id}"),
        ("DELETE", "/images/{id}"), ("GET", "/health"), ("GET", "/"), ("GET", "/openapi.json"),
        ("GET", "/duplicates"), ("POST", "/duplicates/resolve"), ("POST", "/recommend"),
        ("GET", "/trash"), ("POST", "/trash/{id}/restore"), ("GET", "/me"),
    }
    assert template_routes == contract
    handler_routes = _handler_routes()
    assert handler_routes, "no routes found in functions/search/app.py"

    def shape(routes):  # parameter names may differ ({id} vs {image_id}); the paths may not
        return {(m, re.sub(r"\{\w+\}", "{}", p)) for m, p in routes}

    assert shape(handler_routes) == shape(template_routes)


def test_http_api_throttling_and_cors(resources):
    props = resources["HttpApi"]["Properties"]
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert props["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    cors = props["CorsConfiguration"]
    assert cors["AllowOrigins"] == [{"Ref": "CorsOrigin"}]
    assert "x-api-key" in cors["AllowHeaders"]


CHECKOV = REPO_ROOT / ".venv" / "checkov" / "bin" / "checkov"


def test_checkov_finds_nothing_unexplained(template_file):
    """checkov's CloudFormation checks: every finding fixed, or skipped in the template with a written reason."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: `make checkov` installs it (make test does)"
    result = subprocess.run(
        [str(CHECKOV), "-f", str(template_file), "--framework", "cloudformation", "--output", "json",
         "--skip-download"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"},
    )
    report = json.loads(result.stdout)
    summary, checks = report["summary"], report["results"]
    failed = [(c["check_id"], c["resource"]) for c in checks.get("failed_checks", [])]
    assert failed == [] and summary["failed"] == 0, failed
    assert summary["passed"] >= 15
    skipped = checks.get("skipped_checks", [])
    assert skipped and all(len((c.get("check_result") or {}).get("suppress_comment") or "") > 40 for c in skipped)


def test_alarms_watch_the_dlq_errors_throttles_5xx_and_latency(resources):
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {(p["Namespace"], p["MetricName"]) for p in alarms.values()}
    assert watched == {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/Lambda", "Errors"),
                       ("AWS/Lambda", "Throttles"), ("AWS/ApiGateway", "5xx"), ("AWS/Lambda", "Duration")}
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert all(p["AlarmActions"] == notify and p["OKActions"] == notify for p in alarms.values())
    assert alarms["SearchFunctionP99Alarm"]["ExtendedStatistic"] == "p99"
    assert alarms["IndexDeadLetterQueueAlarm"]["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": ["IndexDeadLetterQueue", "QueueName"]}
    assert any(r["Type"] == "AWS::CloudWatch::Dashboard" for r in resources.values())


def test_versioning_is_a_parameter_and_old_versions_expire(template, resources):
    assert template["Parameters"]["BucketVersioning"]["AllowedValues"] == ["Enabled", "Suspended"]
    bucket = resources["ImagesBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": {"Ref": "BucketVersioning"}}
    trash, versions = bucket["LifecycleConfiguration"]["Rules"]
    # The trash (imgsim.trash) always expires after TrashDays; old versions only with versioning on.
    assert trash["Prefix"] == ".trash/" and trash["ExpirationInDays"] == {"Ref": "TrashDays"}
    assert trash["Status"] == "Enabled" and template["Parameters"]["TrashDays"]["Default"] == 30
    condition, rule, otherwise = versions["Fn::If"]
    assert condition == "VersioningEnabled" and otherwise == {"Ref": "AWS::NoValue"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}}
    env = resources["SearchFunction"]["Properties"]["Environment"]["Variables"]
    assert env["IMGSIM_TRASH_DAYS"] == {"Ref": "TrashDays"}
    # Delete markers reach the indexer: the bucket notifies every ObjectRemoved event.
    events = {c["Event"] for c in bucket["NotificationConfiguration"]["QueueConfigurations"]}
    assert "s3:ObjectRemoved:*" in events
    search = resources["SearchFunction"]["Properties"]
    assert search["ReservedConcurrentExecutions"] == {"Ref": "SearchReservedConcurrency"}
    assert resources["HttpApi"]["Properties"]["AccessLogSettings"]["DestinationArn"] == {
        "Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}


def test_model_parameter_names_exactly_the_manifest_models(template):
    manifest = json.loads((REPO_ROOT / "model" / "models.json").read_text())
    parameter = template["Parameters"]["Model"]
    assert parameter["Default"] == manifest["default"]
    assert sorted(parameter["AllowedValues"]) == sorted(manifest["models"])
    assert template["Globals"]["Function"]["Environment"]["Variables"]["IMGSIM_MODEL"] == {"Ref": "Model"}
    # `make build MODEL=x` builds the layer around x and passes the same value to the template.
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert 'LAYER_MODELS="$(MODEL) $(EXTRA_MODELS)"' in makefile and "Model=$(MODEL)" in makefile


def test_cluster_settings_reach_both_functions(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["QDRANT_SHARDS"] == {"Ref": "QdrantShardNumber"}
    assert variables["QDRANT_REPLICATION_FACTOR"] == {"Ref": "QdrantReplicationFactor"}
    assert variables["QDRANT_WRITE_CONSISTENCY_FACTOR"] == {"Ref": "QdrantWriteConsistencyFactor"}
    assert variables["QDRANT_ON_DISK_PAYLOAD"] == "true"
    params = template["Parameters"]
    assert (params["QdrantShardNumber"]["Default"], params["QdrantReplicationFactor"]["Default"],
            params["QdrantWriteConsistencyFactor"]["Default"]) == (6, 2, 1)


# ---------------------------------------------------------------- SnapStart and the published versions


def _transform(parameters: dict[str, str], layer_uri: str = "s3://bucket/layer") -> dict:
    from samtranslator.translator.transform import transform

    raw = load_template()
    for resource in raw["Resources"].values():
        for prop in ("CodeUri", "ContentUri"):
            if prop in resource.get("Properties", {}):
                resource["Properties"][prop] = "s3://bucket/key"
    raw["Resources"]["SharedLayer"]["Properties"]["ContentUri"] = layer_uri

    class NoManagedPolicyLookup:
        def load(self) -> dict:
            return {}

    return transform(raw, {"AWS::Region": "us-east-1", **parameters}, NoManagedPolicyLookup())


def _evaluate(value, template: dict, parameters: dict[str, str]):
    """A value with the template's conditions and parameter references resolved, as CloudFormation resolves them."""
    values = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | parameters

    def resolve(v):
        if isinstance(v, dict) and set(v) == {"Ref"} and v["Ref"] in values:
            return values[v["Ref"]]
        if isinstance(v, dict) and set(v) == {"Fn::Equals"}:
            left, right = (resolve(x) for x in v["Fn::Equals"])
            return left == right
        if isinstance(v, dict) and set(v) == {"Fn::If"}:
            condition, if_true, if_false = v["Fn::If"]
            return resolve(if_true if resolve(template["Conditions"][condition]) else if_false)
        if isinstance(v, dict) and set(v) == {"Fn::Sub"} and isinstance(v["Fn::Sub"], str):
            return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], v["Fn::Sub"])
        if isinstance(v, dict) and set(v) == {"Fn::Sub"}:  # [string, {variable: value}]
            text, variables = v["Fn::Sub"]
            local = {name: resolve(value) for name, value in variables.items()}
            return re.sub(r"\$\{(\w+)\}", lambda m: local.get(m.group(1)) or values[m.group(1)], text)
        if isinstance(v, dict) and set(v) == {"Fn::FindInMap"}:
            mapping, key, attribute = (resolve(x) for x in v["Fn::FindInMap"])
            return template["Mappings"][mapping][key][attribute]
        if isinstance(v, dict) and set(v) == {"Fn::Select"}:
            index, items = v["Fn::Select"]
            return resolve(items)[index]
        if isinstance(v, dict) and set(v) == {"Fn::Split"}:
            separator, text = v["Fn::Split"]
            return resolve(text).split(separator)
        return v

    return resolve(value)


def _of_type(transformed: dict, kind: str) -> dict:
    return {name: r for name, r in transformed["Resources"].items() if r["Type"] == kind}


@pytest.mark.parametrize("setting, apply_on", [(None, "None"), ("Disabled", "None"), ("Enabled", "PublishedVersions")])
def test_snapstart_is_a_parameter_off_by_default(template, setting, apply_on):
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "Disabled" and parameter["AllowedValues"] == ["Enabled", "Disabled"]
    parameters = {} if setting is None else {"SnapStart": setting}
    transformed = _transform(parameters)
    functions = _of_type(transformed, "AWS::Lambda::Function")
    assert set(functions) == {"IndexFunction", "SearchFunction"}
    for name, function in functions.items():
        assert _evaluate(function["Properties"]["SnapStart"]["ApplyOn"], transformed, parameters) == apply_on, name
        # SnapStart runs on Python 3.12+ (both architectures) and excludes provisioned concurrency, EFS and more
        # than 512 MB of ephemeral storage: the template asks for none of them.
        assert function["Properties"]["Runtime"] == "python3.13"
        assert function["Properties"].get("EphemeralStorage", {"Size": 512})["Size"] <= 512
        assert "FileSystemConfigs" not in function["Properties"]
    assert not any("ProvisionedConcurrencyConfig" in r.get("Properties", {}) for r in transformed["Resources"].values())


def test_the_events_invoke_the_published_version_through_the_alias(transformed):
    versions = _of_type(transformed, "AWS::Lambda::Version")
    aliases = _of_type(transformed, "AWS::Lambda::Alias")
    assert {v["Properties"]["FunctionName"]["Ref"] for v in versions.values()} == {"IndexFunction", "SearchFunction"}
    assert all(v["DeletionPolicy"] == "Delete" for v in versions.values())  # no pile of versions and snapshots
    assert {name: (a["Properties"]["Name"], a["Properties"]["FunctionVersion"]["Fn::GetAtt"][0])
            for name, a in aliases.items()} == {
        "IndexFunctionAliaslive": ("live", next(v for v in versions if v.startswith("IndexFunction"))),
        "SearchFunctionAliaslive": ("live", next(v for v in versions if v.startswith("SearchFunction")))}
    (mapping,) = _of_type(transformed, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["FunctionName"] == {"Ref": "IndexFunctionAliaslive"}
    permissions = _of_type(transformed, "AWS::Lambda::Permission").values()
    assert permissions and all(p["Properties"]["FunctionName"] == {"Ref": "SearchFunctionAliaslive"}
                               for p in permissions)
    api = transformed["Resources"]["HttpApi"]  # the key API (SAM's); the token API's integration: test_token_api_*
    integrations = [op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
                    for path in api["Properties"]["Body"]["paths"].values() for op in path.values()]
    assert len(integrations) == len(_handler_routes())
    assert all("${SearchFunctionAliaslive}" in uri for uri in integrations)


_NOT_VERSIONED = {"Events", "Policies", "ReservedConcurrentExecutions", "VersionDescription", "AutoPublishAlias",
                  "AutoPublishAliasAllProperties", "VersionDeletionPolicy"}


def _parameters_used(value, parameters: set[str]) -> set[str]:
    if isinstance(value, dict):
        found = set()
        if value.get("Ref") in parameters:
            found.add(value["Ref"])
        if isinstance(value.get("Fn::Sub"), str):
            found |= set(re.findall(r"\$\{(\w+)\}", value["Fn::Sub"])) & parameters
        elif isinstance(value.get("Fn::Sub"), list):  # [string, {variable: value}]: the variables are not parameters
            text, variables = value["Fn::Sub"]
            found |= set(re.findall(r"\$\{(\w+)\}", text)) - set(variables) & parameters
        return found | set().union(*(_parameters_used(v, parameters) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_parameters_used(v, parameters) for v in value))
    return set()


def test_a_change_of_any_parameter_a_function_uses_publishes_a_new_version(template, resources):
    """SAM publishes a new version when the function's properties or the layer's content change, not when only a
    parameter's value does: each function's VersionDescription names every parameter its versioned configuration
    uses (a Description change replaces the version), and nothing else (a replaced version must differ from the
    one before, or Lambda would hand back the same version)."""
    parameters = set(template["Parameters"])
    conditions = {name: _parameters_used(c, parameters) for name, c in template["Conditions"].items()}

    def used(value) -> set[str]:
        found = _parameters_used(value, parameters)
        for name in re.findall(r'"Fn::If": \["(\w+)"', json.dumps(value)):
            found |= conditions[name]
        return found

    globals_ = {k: v for k, v in template["Globals"]["Function"].items() if k not in _NOT_VERSIONED}
    for name in ("IndexFunction", "SearchFunction"):
        props = resources[name]["Properties"]
        own = {k: v for k, v in props.items() if k not in _NOT_VERSIONED}
        assert props["AutoPublishAliasAllProperties"] is True
        described = _parameters_used(props["VersionDescription"], parameters)
        assert described == used(globals_) | used(own), name
    assert resources["SharedLayer"]["Properties"]["PublishLambdaVersion"] is True

    def versions(**kwargs) -> dict[str, str]:
        transformed = _transform(**kwargs)
        return {name: _evaluate(v["Properties"]["Description"], transformed, kwargs.get("parameters", {}))
                for name, v in _of_type(transformed, "AWS::Lambda::Version").items()}

    required = {"QdrantUrl": "https://xyz.cloud.qdrant.io:6333"}  # no default: CloudFormation demands a value
    before = versions(parameters=required)
    after_layer = versions(parameters=required, layer_uri="s3://bucket/layer-2")
    assert set(after_layer).isdisjoint(before)  # new layer content: new versions (new logical ids)
    toggled = versions(parameters={**required, "SnapStart": "Enabled"})
    assert set(toggled) == set(before) and all(toggled[v] != before[v] for v in before)  # replaced in place


def test_version_descriptions_fit_lambdas_limit(template, resources):
    """A version's Description holds at most 256 characters: room for long values of the free-text parameters."""
    long_values = {"QdrantUrl": "https://0123abcd-4567-89ef-0123-456789abcdef.eu-central-1-0.aws.cloud.qdrant.io:6333",
                   "CorsOrigin": "https://images.photo-archive.example.com", "CollectionName": "images_archive",
                   "TenantClaim": "custom:imgsim_tenant"}  # as long as the parameter allows (MaxLength)
    assert len(long_values["TenantClaim"]) == template["Parameters"]["TenantClaim"]["MaxLength"]
    for name in ("IndexFunction", "SearchFunction"):
        description = _evaluate(resources[name]["Properties"]["VersionDescription"], template, long_values)
        assert "${" not in description and len(description) <= 256, (name, len(description))


def test_each_enumerated_value_has_its_own_letter_in_the_version_description(template):
    """SearchFunction's VersionDescription names SnapStart, Tracing and LogLevel by one letter (Mappings Short): each
    allowed value has one, distinct from its parameter's other values, so a change still publishes a new version."""
    short = template["Mappings"]["Short"]
    for name in ("SnapStart", "Tracing", "LogLevel"):
        values = template["Parameters"][name]["AllowedValues"]
        letters = [short[value]["V"] for value in values]
        assert len(set(letters)) == len(values) and all(len(letter) == 1 for letter in letters), name
    descriptions = {_evaluate(template["Resources"]["SearchFunction"]["Properties"]["VersionDescription"], template,
                              {"QdrantUrl": "https://q.example:6333", "LogLevel": level})
                    for level in template["Parameters"]["LogLevel"]["AllowedValues"]}
    assert len(descriptions) == len(template["Parameters"]["LogLevel"]["AllowedValues"])


# ---------------------------------------------------------------- the token API (OIDC)

TOKEN_API = {"TokenApi", "TokenApiAuthorizer", "TokenApiIntegration", "TokenApiRoute", "TokenApiPageRoute",
             "TokenApiHealthRoute", "TokenApiOpenApiRoute", "TokenApiStage", "TokenApiAccessLogGroup",
             "TokenApiInvokePermission"}


def test_the_token_api_exists_only_with_an_issuer_and_an_audience(template, resources):
    params = template["Parameters"]
    assert all(params[name]["Default"] == "" for name in ("OidcIssuer", "OidcAudience", "TenantClaim"))
    assert {name for name, r in resources.items() if r.get("Condition") == "OidcEnabled"} == TOKEN_API
    assert template["Outputs"]["TokenApiUrl"]["Condition"] == "OidcEnabled"
    # On when both are set; either empty: off.
    assert template["Conditions"]["OidcEnabled"] == {"Fn::And": [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": name}, ""]}]} for name in ("OidcIssuer", "OidcAudience")]}


def test_the_token_api_validates_tokens_before_the_function_and_keeps_public_routes_open(resources):
    from imgsim_tools.local.http_front import PUBLIC_ROUTES

    authorizer = resources["TokenApiAuthorizer"]["Properties"]
    assert (authorizer["AuthorizerType"], authorizer["IdentitySource"]) == ("JWT", ["$request.header.Authorization"])
    assert authorizer["JwtConfiguration"] == {"Issuer": {"Ref": "OidcIssuer"}, "Audience": [{"Ref": "OidcAudience"}]}
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for name, r in resources.items()
              if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes["$default"]["AuthorizationType"] == "JWT"
    assert routes["$default"]["AuthorizerId"] == {"Ref": "TokenApiAuthorizer"}
    public = {tuple(key.split(" ")) for key, route in routes.items() if route["AuthorizationType"] == "NONE"}
    assert public == PUBLIC_ROUTES == {("GET", "/"), ("GET", "/health"), ("GET", "/openapi.json")}
    # The same public routes as the key API, the same throttling and CORS origin.
    events = resources["SearchFunction"]["Properties"]["Events"].values()
    key_api_public = {("GET", e["Properties"]["Path"]) for e in events
                      if e["Properties"]["Path"] in ("/", "/health", "/openapi.json")}
    assert key_api_public == public
    stage = resources["TokenApiStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == resources["HttpApi"]["Properties"]["DefaultRouteSettings"]
    cors = resources["TokenApi"]["Properties"]["CorsConfiguration"]
    assert cors["AllowOrigins"] == [{"Ref": "CorsOrigin"}] and "authorization" in cors["AllowHeaders"]


def test_the_token_api_invokes_the_published_version_through_the_alias(transformed):
    resources = transformed["Resources"]
    integration = resources["TokenApiIntegration"]["Properties"]
    assert (integration["IntegrationType"], integration["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")
    assert integration["IntegrationUri"] == {"Ref": "SearchFunctionAliaslive"}
    permission = resources["TokenApiInvokePermission"]["Properties"]
    assert permission["FunctionName"] == {"Ref": "SearchFunctionAliaslive"}
    assert permission["SourceArn"]["Fn::Sub"].endswith(":${TokenApi}/*")


def test_only_the_tenant_claim_reaches_the_function(resources):
    """The issuer and audience configure the API only (the gateway validates the tokens): the function's
    configuration, and so its VersionDescription, names TenantClaim alone."""
    props = resources["SearchFunction"]["Properties"]
    assert props["Environment"]["Variables"]["IMGSIM_TENANT_CLAIM"] == {"Ref": "TenantClaim"}
    used = _parameters_used(props, {"OidcIssuer", "OidcAudience", "TenantClaim"})
    assert used == {"TenantClaim"}
