#!/usr/bin/env python3
"""Checks of infra/template.yaml, offline.

1. Translates the SAM template with aws-sam-translator (no AWS account: a stub managed-policy loader,
   a placeholder S3 CodeUri) and checks the translated CloudFormation: function settings, environment,
   event source mapping, visibility-timeout and Slack-rate tables, least-privilege IAM, alarms, and
   infra/parameters.example.json.
2. Deploys the messaging part to moto's CloudFormation and checks what it made.

   moto 5.2.1's CloudFormation cannot run the function, its role, the event source mapping, the VPC
   endpoints or the log group, and it silently skips AWS::SNS::Subscription, AWS::SQS::QueuePolicy and
   AWS::CloudWatch::Alarm. So the stack deployed is a filtered copy of the translated template holding
   only the resources moto supports (topic, queues, operator policy, dashboard), with references to the
   dropped resources replaced by stand-ins. The subscription, the queue policy and the alarms are then
   made with boto3 from the template's own properties, resolved against the deployed stack, and checked.

Usage: python3 infra/test_stack.py                    run the checks (PASS/FAIL lines, exit 1 on failure)
       python3 infra/test_stack.py --write-translated DIR
                                  write the translated template with every condition true (for checkov)

Uses the moto server at $OPSRELAY_TEST_AWS_ENDPOINT when set, else starts one on a free port and stops
it at the end.
"""

import copy
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "template.yaml")
EXAMPLE_PARAMETERS = os.path.join(HERE, "parameters.example.json")
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account

for _key, _value in {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_SESSION_TOKEN": "test",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}.items():
    os.environ[_key] = _value
os.environ.pop("AWS_PROFILE", None)

# Resource types moto's CloudFormation creates; the rest are dropped from the deployed copy.
MOTO_SUPPORTED = {"AWS::SNS::Topic", "AWS::SQS::Queue", "AWS::IAM::ManagedPolicy", "AWS::CloudWatch::Dashboard"}
RUNBOOKS = {
    "DeadLetterQueueNotEmptyAlarm": "runbooks/dlq-not-empty.md",
    "DeadLetterQueueAgingAlarm": "runbooks/dlq-not-empty.md",
    "QueueBackingUpAlarm": "runbooks/queue-backing-up.md",
    "FunctionErrorsAlarm": "runbooks/lambda-errors.md",
    "FunctionThrottlesAlarm": "runbooks/queue-backing-up.md",
    "EventsLateAlarm": "runbooks/events-late.md",
    "CursorAgeAlarm": "runbooks/poller-behind.md",
}


# --------------------------------------------------------------------------- template loading


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub ...)."""


def _construct_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template():
    with open(TEMPLATE, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def translate(sam):
    """The CloudFormation that SAM makes of the template, without calling AWS."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:  # stands in for samtranslator's ManagedPolicyLoader (which calls IAM)
        def load(self):
            return {}

    sam = copy.deepcopy(sam)
    # SAM wants an S3 location where `sam deploy` would upload the local CodeUri.
    sam["Resources"]["OpsrelayFunction"]["Properties"]["CodeUri"] = "s3://placeholder/opsrelay-lambda.zip"
    return transform(sam, {}, NoManagedPolicies())


def parameter_values(template, overrides=None):
    """Parameter defaults, then overrides, as CloudFormation passes them (lists for List<> types)."""
    values = {}
    for name, spec in template["Parameters"].items():
        if "Default" in spec:
            values[name] = str(spec["Default"])
    values.update(overrides or {})
    for name, spec in template["Parameters"].items():
        allowed = [str(v) for v in spec.get("AllowedValues", [])]
        assert not allowed or values.get(name) in allowed, f"{name}={values.get(name)!r}: CloudFormation allows only {allowed}"
        is_list = spec["Type"].startswith("List<") or spec["Type"] == "CommaDelimitedList"
        if is_list and isinstance(values.get(name), str):
            values[name] = [v for v in values[name].split(",") if v]
    return values


def example_parameters():
    with open(EXAMPLE_PARAMETERS, encoding="utf-8") as f:
        return {p["ParameterKey"]: p["ParameterValue"] for p in json.load(f)}


# --------------------------------------------------------------------------- intrinsic functions

NO_VALUE = object()


class Resolver:
    """Evaluates the intrinsic functions this template uses, given parameter values and what each
    resource's Ref and Fn::GetAtt give (real ones from moto, or stand-ins)."""

    def __init__(self, template, params, refs, attrs):
        self.template, self.params, self.refs, self.attrs = template, params, refs, attrs

    def condition(self, name):
        return bool(self.value(self.template["Conditions"][name]))

    def _ref(self, name):
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "opsrelay-test",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        return self.refs[name]

    def _sub(self, text, variables=None):
        def repl(m):
            key = m.group(1)
            if variables and key in variables:
                return str(variables[key])
            if "." in key and not key.startswith("AWS::"):
                lid, attr = key.split(".", 1)
                return str(self.attrs[lid][attr])
            return str(self._ref(key))

        return re.sub(r"\$\{([^}!]+)\}", repl, text)

    def value(self, node):
        if isinstance(node, list):
            out = [self.value(v) for v in node]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self._ref(arg)
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::GetAtt":
                return self.attrs[arg[0]][arg[1]]
            if fn == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Equals":
                a, b = self.value(arg[0]), self.value(arg[1])
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self.value(arg[0])
            if fn == "Fn::And":
                return all(self.value(a) for a in arg)
            if fn == "Fn::Or":
                return any(self.value(a) for a in arg)
            if fn == "Fn::FindInMap":
                keys = [str(self.value(k)) for k in arg]
                return self.template["Mappings"][keys[0]][keys[1]][keys[2]]
            if fn == "Fn::Join":
                return arg[0].join(str(v) for v in self.value(arg[1]))
            if fn == "Fn::Split":
                return self.value(arg[1]).split(arg[0])
            if fn == "Fn::Sub":
                if isinstance(arg, str):
                    return self._sub(arg)
                return self._sub(arg[0], {k: self.value(v) for k, v in arg[1].items()})
        out = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}


def stand_in_resolver(cfn, overrides=None):
    """A resolver with made-up names for every resource, for the checks that need no deployment."""
    params = parameter_values(cfn, overrides)
    refs, attrs = {}, {}
    for lid, res in cfn["Resources"].items():
        kind = res["Type"]
        if kind == "AWS::SQS::Queue":
            refs[lid] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{lid}"
            attrs[lid] = {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{lid}", "QueueName": lid}
        elif kind == "AWS::SNS::Topic":
            refs[lid] = f"arn:aws:sns:{REGION}:{ACCOUNT}:{lid}"
            attrs[lid] = {"TopicName": lid}
        elif kind == "AWS::Lambda::Function":
            refs[lid] = params["FunctionName"]
            attrs[lid] = {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{refs[lid]}"}
        elif kind == "AWS::IAM::Role":
            refs[lid] = lid
            attrs[lid] = {"Arn": f"arn:aws:iam::{ACCOUNT}:role/{lid}"}
        elif kind == "AWS::DynamoDB::Table":
            refs[lid] = lid
            attrs[lid] = {"Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{lid}"}
        else:
            refs[lid] = f"stand-in-{lid}"
            attrs[lid] = {}
    return Resolver(cfn, params, refs, attrs)


ALL_OPTIONS_ON = {
    "KmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555",
    "SecretsKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/66666666-7777-8888-9999-000000000000",
    "DatabaseCredentialsSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds-creds-AbCdEf",
    "DatabaseCaBundle": "global-bundle.pem",
    "ReservedConcurrency": "5",
    "AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops-alarms",
    "CreateVpcEndpoints": "true",
    "VpcId": "vpc-0123456789abcdef0",
    "PollSources": "true",
    "RouteTableIds": "rtb-0123456789abcdef0,rtb-0fedcba9876543210",
}


# --------------------------------------------------------------------------- the checks


class Context:
    sam = None
    cfn = None


ctx = Context()


def check_translate():
    ctx.sam = load_template()
    ctx.cfn = translate(ctx.sam)
    kinds = {r["Type"] for r in ctx.cfn["Resources"].values()}
    for kind in ("AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::SNS::Subscription"):
        assert kind in kinds, f"no {kind} after translation"


def _need_cfn():
    assert ctx.cfn is not None, "the template did not translate"
    return ctx.cfn


def check_function():
    cfn = _need_cfn()
    fn = cfn["Resources"]["OpsrelayFunction"]["Properties"]
    params = cfn["Parameters"]
    code_uri = ctx.sam["Resources"]["OpsrelayFunction"]["Properties"]["CodeUri"]
    assert code_uri == "../target/lambda/opsrelay-lambda/", code_uri
    assert fn["Runtime"] == "provided.al2023" and fn["Handler"] == "bootstrap", (fn["Runtime"], fn["Handler"])
    assert fn["Architectures"] == [{"Ref": "Architecture"}]
    assert params["Architecture"]["Default"] == "x86_64" and set(params["Architecture"]["AllowedValues"]) == {"x86_64", "arm64"}
    assert fn["MemorySize"] == {"Ref": "MemorySize"} and params["MemorySize"]["Default"] == 128
    assert fn["Timeout"] == {"Ref": "Timeout"} and params["Timeout"]["Default"] == 30
    assert params["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert params["SecurityGroupIds"]["Type"] == "List<AWS::EC2::SecurityGroup::Id>"
    off = stand_in_resolver(cfn, example_parameters())
    on = stand_in_resolver(cfn, {**example_parameters(), **ALL_OPTIONS_ON})
    assert off.params["FunctionName"] == "opsrelay-lambda"
    vpc_off, vpc_on = off.value(fn["VpcConfig"]), on.value(fn["VpcConfig"])
    assert vpc_off["SubnetIds"] == off.params["SubnetIds"]
    assert vpc_off["SecurityGroupIds"] == off.params["SecurityGroupIds"], vpc_off
    assert vpc_on["SecurityGroupIds"] == on.params["SecurityGroupIds"] + ["stand-in-EndpointClientSecurityGroup"], vpc_on
    assert "ReservedConcurrentExecutions" not in off.value(fn), "reserved concurrency set by default"
    assert on.value(fn)["ReservedConcurrentExecutions"] == "5"


def check_environment():
    cfn = _need_cfn()
    fn = cfn["Resources"]["OpsrelayFunction"]["Properties"]
    queue = cfn["Resources"]["EventsQueue"]["Properties"]
    example = example_parameters()
    env = stand_in_resolver(cfn, example).value(fn["Environment"]["Variables"])
    expected = {
        "OPSRELAY_RULES": "/var/task/rules.toml",
        "OPSRELAY_DATABASE_URL": example["DatabaseUrlSecretArn"],
        "OPSRELAY_SLACK_WEBHOOK_URL": example["SlackWebhookSecretArn"],
        "OPSRELAY_DLQ_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/DeadLetterQueue",
        "OPSRELAY_MAX_RECEIVE_COUNT": str(int(example.get("MaxReceiveCount", "5")) - 1),
        "OPSRELAY_CONCURRENCY": "4",
        "OPSRELAY_LOG": "info",
        "OPSRELAY_LOG_FORMAT": "json",
        "OPSRELAY_DIGESTS": "on",
    }
    for key, value in expected.items():
        assert env.get(key) == value, f"{key} = {env.get(key)!r}, expected {value!r}"
    assert "OPSRELAY_DATABASE_SECRET_ARN" not in env, "OPSRELAY_DATABASE_SECRET_ARN set without a secret"
    assert "OPSRELAY_DB_CA_FILE" not in env, "OPSRELAY_DB_CA_FILE set without a bundle"
    on = stand_in_resolver(cfn, {**example, **ALL_OPTIONS_ON}).value(fn["Environment"]["Variables"])
    assert on["OPSRELAY_DATABASE_SECRET_ARN"] == ALL_OPTIONS_ON["DatabaseCredentialsSecretArn"]
    assert on["OPSRELAY_DB_CA_FILE"] == "/var/task/" + ALL_OPTIONS_ON["DatabaseCaBundle"]
    # The binary's receive count and the redrive policy's come from the same parameter: the redrive
    # policy takes it, the binary one less (check_dead_letter_receive_table).
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert fn["Environment"]["Variables"]["OPSRELAY_MAX_RECEIVE_COUNT"] == {"Fn::FindInMap": ["DeadLetterReceive", {"Ref": "MaxReceiveCount"}, "Opsrelay"]}, (
        "OPSRELAY_MAX_RECEIVE_COUNT must be looked up from MaxReceiveCount in DeadLetterReceive"
    )
    assert cfn["Parameters"]["MaxReceiveCount"]["Default"] == 5
    for key, value in env.items():
        assert "hooks.slack.com" not in str(value) and "://" not in str(value) or key == "OPSRELAY_DLQ_URL", f"{key} holds a URL, not a secret ARN"


def check_event_source_mapping():
    cfn = _need_cfn()
    mappings = [r["Properties"] for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 1, mappings
    esm = mappings[0]
    params = cfn["Parameters"]
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    assert esm["FunctionName"] == {"Ref": "OpsrelayFunction"}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BatchSize"] == {"Ref": "BatchSize"} and params["BatchSize"]["Default"] == 100
    assert esm["MaximumBatchingWindowInSeconds"] == {"Ref": "MaximumBatchingWindowInSeconds"}
    assert params["MaximumBatchingWindowInSeconds"]["Default"] == 2
    assert params["Digests"]["Default"] == "on"
    assert esm["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}
    assert params["MaximumConcurrency"]["Default"] == 2 and min(params["MaximumConcurrency"]["AllowedValues"]) == 2


def check_visibility_table():
    cfn = _need_cfn()
    table = cfn["Mappings"]["VisibilityTimeoutSeconds"]
    queue = cfn["Resources"]["EventsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {"Fn::FindInMap": ["VisibilityTimeoutSeconds", {"Ref": "Timeout"}, {"Ref": "MaximumBatchingWindowInSeconds"}]}
    timeouts = cfn["Parameters"]["Timeout"]["AllowedValues"]
    windows = cfn["Parameters"]["MaximumBatchingWindowInSeconds"]["AllowedValues"]
    assert set(table) == {str(t) for t in timeouts}, "the table and Timeout's allowed values differ"
    for t in timeouts:
        assert set(table[str(t)]) == {str(w) for w in windows}, f"Timeout {t}: windows differ"
        for w in windows:
            v = table[str(t)][str(w)]
            assert 6 * t + w <= v <= 43200, f"Timeout {t}, window {w}: visibility {v} < 6x{t}+{w}"
    assert max(timeouts) <= 900


def check_dead_letter_receive_table():
    cfn = _need_cfn()
    table = cfn["Mappings"]["DeadLetterReceive"]
    allowed = cfn["Parameters"]["MaxReceiveCount"]["AllowedValues"]
    assert set(table) == {str(v) for v in allowed}, "the table and MaxReceiveCount's allowed values differ"
    for v in allowed:
        assert table[str(v)] == {"Opsrelay": str(v - 1)}, f"MaxReceiveCount {v}: opsrelay must dead-letter on receive {v - 1}"
    assert min(allowed) >= 2, "a spare receive needs a maxReceiveCount of at least 2"


def check_slack_rate_table():
    cfn = _need_cfn()
    table = cfn["Mappings"]["SlackRate"]
    allowed = cfn["Parameters"]["MaximumConcurrency"]["AllowedValues"]
    assert set(table) == {str(c) for c in allowed}
    for c in allowed:
        rate = float(table[str(c)]["PerSecond"])
        assert 0.01 <= rate and rate * c <= 1.0, f"MaximumConcurrency {c}: {rate}/s per process exceeds 1 msg/s"
        burst = int(table[str(c)]["Burst"])
        assert 1 <= burst and (burst * c <= 6 or burst == 1), f"MaximumConcurrency {c}: bursts of {burst} add up to {burst * c}"
    fn = cfn["Resources"]["OpsrelayFunction"]["Properties"]
    assert fn["Environment"]["Variables"]["OPSRELAY_SLACK_BURST"] == {"Fn::FindInMap": ["SlackRate", {"Ref": "MaximumConcurrency"}, "Burst"]}


def _statements(resolver, document):
    return resolver.value(document)["Statement"]


def check_encryption():
    cfn = _need_cfn()
    res = cfn["Resources"]
    for overrides in ({}, ALL_OPTIONS_ON):
        r = stand_in_resolver(cfn, {**example_parameters(), **overrides})
        key = r.params["KmsKeyArn"]
        topic = r.value(res["EventsTopic"]["Properties"])
        assert topic.get("KmsMasterKeyId") == (key or "alias/aws/sns"), topic
        for lid in ("EventsQueue", "DeadLetterQueue"):
            q = r.value(res[lid]["Properties"])
            if key:
                assert q.get("KmsMasterKeyId") == key and "SqsManagedSseEnabled" not in q, (lid, q)
            else:
                assert q.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in q, (lid, q)
        logs = r.value(res["FunctionLogGroup"]["Properties"])
        assert logs.get("KmsKeyId") == (key or None), logs


def check_function_role():
    cfn = _need_cfn()
    role = cfn["Resources"]["FunctionRole"]["Properties"]
    for overrides in ({}, ALL_OPTIONS_ON):
        r = stand_in_resolver(cfn, {**example_parameters(), **overrides})
        assert r.value(role["ManagedPolicyArns"]) == ["arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]
        allowed = {
            r.attrs["EventsQueue"]["Arn"]: {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
            r.attrs["DeadLetterQueue"]["Arn"]: {"sqs:SendMessage", "sqs:GetQueueAttributes"},
        }
        for secret in ("DatabaseUrlSecretArn", "SlackWebhookSecretArn", "DatabaseCredentialsSecretArn"):
            if r.params.get(secret):
                allowed[r.params[secret]] = {"secretsmanager:GetSecretValue"}
        for key in ("KmsKeyArn", "SecretsKmsKeyArn"):
            if r.params.get(key):
                allowed[r.params[key]] = {"kms:Decrypt", "kms:GenerateDataKey"}
        if r.params.get("PollSources") == "true":
            # The cursors' items, and the polled rows into the function's own queue.
            allowed[r.attrs["StateTable"]["Arn"]] = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}
            allowed[r.attrs["EventsQueue"]["Arn"]] = allowed[r.attrs["EventsQueue"]["Arn"]] | {"sqs:SendMessage"}
        granted = {}
        assert len(role["Policies"]) == 1
        for st in _statements(r, role["Policies"][0]["PolicyDocument"]):
            assert st["Effect"] == "Allow"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if any(a.startswith("kms:") for a in actions):
                assert "kms:ViaService" in st.get("Condition", {}).get("StringEquals", {}), st
            for res in resources:
                assert "*" not in res, f"wildcard resource {res}"
                assert res in allowed, f"unexpected resource {res}"
                extra = set(actions) - allowed[res]
                assert not extra, f"{res}: unexpected {sorted(extra)}"
                granted.setdefault(res, set()).update(actions)
        for res in ("EventsQueue", "DeadLetterQueue"):
            arn = r.attrs[res]["Arn"]
            assert granted.get(arn) == allowed[arn], f"{res}: {granted.get(arn)}"
        for secret in ("DatabaseUrlSecretArn", "SlackWebhookSecretArn"):
            assert r.params[secret] in granted, f"{secret} not readable"
        assert bool(overrides) == (ALL_OPTIONS_ON["DatabaseCredentialsSecretArn"] in granted)
    fn = cfn["Resources"]["OpsrelayFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}, "SAM would add its own role and policies"


def check_operator_policy():
    cfn = _need_cfn()
    policy = cfn["Resources"]["OperatorPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    r = stand_in_resolver(cfn)
    granted = {}
    for st in _statements(r, policy["Properties"]["PolicyDocument"]):
        assert st["Effect"] == "Allow"
        res = st["Resource"]
        granted[res] = set(st["Action"])
    dlq, queue = r.attrs["DeadLetterQueue"]["Arn"], r.attrs["EventsQueue"]["Arn"]
    assert granted == {
        dlq: {
            "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility",
            "sqs:ListDeadLetterSourceQueues", "sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks",
            "sqs:CancelMessageMoveTask",
        },
        queue: {"sqs:SendMessage", "sqs:GetQueueAttributes"},
    }, granted


def check_alarms():
    cfn = _need_cfn()
    alarms = {lid: r["Properties"] for lid, r in cfn["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == set(RUNBOOKS), sorted(alarms)
    for lid, runbook in RUNBOOKS.items():
        assert runbook in alarms[lid]["AlarmDescription"], f"{lid} does not name {runbook}"
    expect = {
        "DeadLetterQueueNotEmptyAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue", 0),
        # Ten of the DLQ's 14 days of retention.
        "DeadLetterQueueAgingAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", "DeadLetterQueue", 864000),
        "QueueBackingUpAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", "EventsQueue", {"Ref": "QueueAgeAlarmThresholdSeconds"}),
        "FunctionErrorsAlarm": ("AWS/Lambda", "Errors", "OpsrelayFunction", 0),
        "FunctionThrottlesAlarm": ("AWS/Lambda", "Throttles", "OpsrelayFunction", 0),
    }
    for lid, (ns, metric, target, threshold) in expect.items():
        a = alarms[lid]
        assert (a["Namespace"], a["MetricName"], a["Threshold"]) == (ns, metric, threshold), lid
        assert a["ComparisonOperator"] == "GreaterThanThreshold", lid
        assert target in json.dumps(a["Dimensions"]), f"{lid} not on {target}"
    assert cfn["Parameters"]["QueueAgeAlarmThresholdSeconds"]["Default"] == 600
    # opsrelay's own EMF metric, over every rule (its lines publish it without dimensions too).
    late = alarms["EventsLateAlarm"]
    assert (late["Namespace"], late["MetricName"], late["ExtendedStatistic"]) == ("opsrelay", "EventAge", "p90")
    assert late["Threshold"] == {"Ref": "EventAgeAlarmMilliseconds"} and "Dimensions" not in late
    assert cfn["Parameters"]["EventAgeAlarmMilliseconds"]["Default"] == 300000
    off = stand_in_resolver(cfn)
    on = stand_in_resolver(cfn, ALL_OPTIONS_ON)
    for lid, a in alarms.items():
        assert "AlarmActions" not in off.value(a), f"{lid} has actions without a topic"
        assert on.value(a)["AlarmActions"] == [ALL_OPTIONS_ON["AlarmTopicArn"]], lid


def check_poll_sources():
    cfn = _need_cfn()
    res = cfn["Resources"]
    for lid in ("StateTable", "PollSchedule", "SchedulerRole", "CursorAgeAlarm"):
        assert res[lid].get("Condition") == "PollsSources", f"{lid} is not only for PollSources=true"
    assert res["DynamoDbEndpoint"]["Condition"] == "CreateDynamoDbEndpoint"
    assert res["DynamoDbEndpoint"]["Properties"]["VpcEndpointType"] == "Gateway"
    table = res["StateTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["KeySchema"] == [{"AttributeName": "source", "KeyType": "HASH"}]
    schedule = res["PollSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert json.loads(schedule["Target"]["Input"]) == {"opsrelay": "poll"}
    invoke = res["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in invoke] == ["lambda:InvokeFunction"]
    on = stand_in_resolver(cfn, {**example_parameters(), **ALL_OPTIONS_ON})
    off = stand_in_resolver(cfn, example_parameters()).value(res["OpsrelayFunction"]["Properties"]["Environment"]["Variables"])
    assert "OPSRELAY_STATE_TABLE" not in off and "OPSRELAY_SOURCE_QUEUE_URL" not in off
    env = on.value(res["OpsrelayFunction"]["Properties"]["Environment"]["Variables"])
    assert env["OPSRELAY_POLL_INTERVAL_MS"] == "10000" or env["OPSRELAY_POLL_INTERVAL_MS"] == 10000
    alarm = res["CursorAgeAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("opsrelay", "CursorAge", "Maximum")
    assert "Dimensions" not in alarm and alarm["TreatMissingData"] == "breaching"


def check_example_parameters():
    cfn = _need_cfn()
    example = example_parameters()
    params = cfn["Parameters"]
    unknown = set(example) - set(params)
    assert not unknown, f"unknown parameters {sorted(unknown)}"
    missing = {n for n, p in params.items() if "Default" not in p} - set(example)
    assert not missing, f"required parameters missing: {sorted(missing)}"
    for name, value in example.items():
        spec = params[name]
        assert value != "", f"{name}: empty (sam deploy --parameter-overrides cannot pass it; leave it out)"
        if "AllowedValues" in spec:
            assert value in [str(v) for v in spec["AllowedValues"]], f"{name}={value} not allowed"
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), f"{name}={value} fails {spec['AllowedPattern']}"
        if spec["Type"] == "Number":
            assert spec.get("MinValue", float("-inf")) <= float(value) <= spec.get("MaxValue", float("inf")), name


# --------------------------------------------------------------------------- moto


class Moto:
    def __init__(self):
        self.proc = None
        self.endpoint = os.environ.get("OPSRELAY_TEST_AWS_ENDPOINT")
        self.log = None

    def __enter__(self):
        if self.endpoint:
            return self
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The moto_server beside this Python (a virtualenv's bin/ need not be on PATH), else the module.
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        cmd = [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "moto.server"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=self.log, stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError("moto_server did not start: " + self.log.read().decode(errors="replace")[-2000:])
                time.sleep(0.2)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()

    def client(self, service):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)


def moto_template(cfn, stand_ins, conditions):
    """The translated template cut down to what moto's CloudFormation creates, with an output for
    every Ref and attribute the checks need. `conditions` evaluates the template's conditions."""
    kept = {lid: r for lid, r in cfn["Resources"].items() if r["Type"] in MOTO_SUPPORTED}
    no_value = {"Ref": "AWS::NoValue"}

    def swap(node):
        if isinstance(node, list):
            # moto leaves a null where a list item is Fn::If [..., AWS::NoValue] (an IAM policy then
            # fails "Syntax errors in policy"); CloudFormation drops the item. Decide those here.
            items = []
            for v in node:
                if isinstance(v, dict) and set(v) == {"Fn::If"} and no_value in v["Fn::If"][1:]:
                    v = v["Fn::If"][1] if conditions(v["Fn::If"][0]) else v["Fn::If"][2]
                    if v == no_value:
                        continue
                items.append(swap(v))
            return items
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"} and node["Ref"] in cfn["Resources"] and node["Ref"] not in kept:
            return stand_ins[node["Ref"]]
        if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] not in kept:
            return f"{stand_ins[node['Fn::GetAtt'][0]]}-{node['Fn::GetAtt'][1]}"
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            text = node["Fn::Sub"]
            for lid in cfn["Resources"]:
                if lid not in kept:
                    text = text.replace("${" + lid + "}", stand_ins[lid])
            return {"Fn::Sub": text}
        return {k: swap(v) for k, v in node.items()}

    outputs = {}
    for lid, r in kept.items():
        outputs[f"{lid}Ref"] = {"Value": {"Ref": lid}}
        for attr in {"AWS::SQS::Queue": ["Arn", "QueueName"], "AWS::SNS::Topic": ["TopicName"]}.get(r["Type"], []):
            outputs[f"{lid}{attr}"] = {"Value": {"Fn::GetAtt": [lid, attr]}}
    # moto hands Number parameters to Fn::FindInMap as integers, and the lookup fails (KeyError: 30);
    # CloudFormation hands them over as strings. The copy declares those parameters String.
    parameters = copy.deepcopy(cfn["Parameters"])
    for name in ("Timeout", "MaximumBatchingWindowInSeconds", "MaximumConcurrency"):
        parameters[name]["Type"] = "String"
        parameters[name]["AllowedValues"] = [str(v) for v in parameters[name]["AllowedValues"]]
        parameters[name]["Default"] = str(parameters[name]["Default"])
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": parameters,
        "Mappings": cfn["Mappings"],
        "Conditions": cfn["Conditions"],
        "Resources": swap(kept),
        "Outputs": outputs,
    }


class Stack:
    """One deployment of the messaging part, with the SDK-made resources moto's CloudFormation skips."""

    def __init__(self, moto, cfn, overrides):
        self.moto, self.cfn = moto, cfn
        self.sqs, self.sns = moto.client("sqs"), moto.client("sns")
        self.params = parameter_values(cfn, {**example_parameters(), **overrides})
        self.name = "opsrelay-" + uuid.uuid4().hex[:8]
        stand_ins = {lid: f"stand-in-{lid}" for lid in cfn["Resources"]}
        stand_ins["OpsrelayFunction"] = self.params["FunctionName"]
        cf = moto.client("cloudformation")
        given = {**example_parameters(), **overrides}
        cf.create_stack(
            StackName=self.name,
            TemplateBody=json.dumps(moto_template(cfn, stand_ins, stand_in_resolver(cfn, given).condition)),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
        )
        deadline = time.monotonic() + 60
        while True:
            stack = cf.describe_stacks(StackName=self.name)["Stacks"][0]
            if stack["StackStatus"] == "CREATE_COMPLETE":
                break
            assert "IN_PROGRESS" in stack["StackStatus"] and time.monotonic() < deadline, stack.get("StackStatusReason", stack["StackStatus"])
            time.sleep(0.2)
        out = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        refs = dict(stand_ins)
        attrs = {lid: {} for lid in cfn["Resources"]}
        for lid, r in cfn["Resources"].items():
            if f"{lid}Ref" in out:
                refs[lid] = out[f"{lid}Ref"]
            for attr in ("Arn", "QueueName", "TopicName"):
                if f"{lid}{attr}" in out:
                    attrs[lid][attr] = out[f"{lid}{attr}"]
        self.refs, self.attrs = refs, attrs
        self.resolver = Resolver(cfn, self.params, refs, attrs)
        self.queue_url, self.dlq_url, self.topic_arn = refs["EventsQueue"], refs["DeadLetterQueue"], refs["EventsTopic"]

    def properties(self, lid):
        return self.resolver.value(self.cfn["Resources"][lid].get("Properties", {}))

    def queue_attributes(self, url):
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    def apply_sdk_resources(self):
        """The queue policy, subscription and alarms, made as CloudFormation would make them."""
        policy = self.properties("QueuesPolicy")
        for url in policy["Queues"]:
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy["PolicyDocument"])})
        sub = self.properties("EventsSubscription")
        self.sns.subscribe(
            TopicArn=sub["TopicArn"],
            Protocol=sub["Protocol"],
            Endpoint=sub["Endpoint"],
            Attributes={"RawMessageDelivery": str(sub["RawMessageDelivery"]).lower(), "RedrivePolicy": json.dumps(sub["RedrivePolicy"])},
        )
        cw = self.moto.client("cloudwatch")
        for lid in RUNBOOKS:
            props = self.properties(lid)
            props["AlarmName"] = f"{self.name}-{lid}"
            for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
                if key in props:
                    props[key] = int(props[key])
            props["Threshold"] = float(props["Threshold"])
            cw.put_metric_alarm(**props)

    def receive(self, url, wait=2, **kw):
        return self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, MessageAttributeNames=["All"], AttributeNames=["All"], **kw).get("Messages", [])


def run_moto_checks(check):
    cfn = ctx.cfn
    if cfn is None:
        check("moto: messaging stack deploys to moto's CloudFormation", lambda: _need_cfn())
        return
    with Moto() as moto:
        st = {}

        def deploy():
            st["s"] = Stack(moto, cfn, {})
            st["s"].apply_sdk_resources()

        check("moto: messaging stack deploys to moto's CloudFormation", deploy)

        def need():
            assert "s" in st, "the stack did not deploy"
            return st["s"]

        def redrive():
            s = need()
            rp = json.loads(s.queue_attributes(s.queue_url)["RedrivePolicy"])
            assert rp["deadLetterTargetArn"] == s.attrs["DeadLetterQueue"]["Arn"], rp
            assert int(rp["maxReceiveCount"]) == int(s.params["MaxReceiveCount"]), rp

        def visibility():
            s = need()
            vt = int(s.queue_attributes(s.queue_url)["VisibilityTimeout"])
            timeout = int(s.params["Timeout"])
            window = int(s.params["MaximumBatchingWindowInSeconds"])
            assert vt >= 6 * timeout + window, f"visibility {vt} < 6 x {timeout} + {window}"

        def retention():
            s = need()
            src = int(s.queue_attributes(s.queue_url)["MessageRetentionPeriod"])
            dlq = int(s.queue_attributes(s.dlq_url)["MessageRetentionPeriod"])
            assert dlq == 14 * 24 * 3600 and dlq > src, (dlq, src)

        def encryption():
            s = need()
            for url in (s.queue_url, s.dlq_url):
                a = s.queue_attributes(url)
                assert a.get("SqsManagedSseEnabled") == "true" or a.get("KmsMasterKeyId"), a
            topic = s.sns.get_topic_attributes(TopicArn=s.topic_arn)["Attributes"]
            assert topic.get("KmsMasterKeyId") == "alias/aws/sns", topic.get("KmsMasterKeyId")

        def queue_policy():
            s = need()
            for url, lid in ((s.queue_url, "EventsQueue"), (s.dlq_url, "DeadLetterQueue")):
                doc = json.loads(s.queue_attributes(url)["Policy"])
                allow = [x for x in doc["Statement"] if x["Effect"] == "Allow"]
                assert len(allow) == 1 and allow[0]["Principal"] == {"Service": "sns.amazonaws.com"}, allow
                assert allow[0]["Action"] == "sqs:SendMessage"
                assert s.attrs[lid]["Arn"] in allow[0]["Resource"]
                assert allow[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": s.topic_arn}}, allow[0]["Condition"]

        def alarms():
            s = need()
            cw = moto.client("cloudwatch")
            found = {a["AlarmName"][len(s.name) + 1 :]: a for a in cw.describe_alarms(AlarmNamePrefix=s.name)["MetricAlarms"]}
            assert set(found) == set(RUNBOOKS), sorted(found)
            dims = {lid: {d["Name"]: d["Value"] for d in a["Dimensions"]} for lid, a in found.items()}
            assert dims["DeadLetterQueueNotEmptyAlarm"] == {"QueueName": s.attrs["DeadLetterQueue"]["QueueName"]}
            assert dims["DeadLetterQueueAgingAlarm"] == {"QueueName": s.attrs["DeadLetterQueue"]["QueueName"]}
            assert dims["QueueBackingUpAlarm"] == {"QueueName": s.attrs["EventsQueue"]["QueueName"]}
            assert dims["FunctionErrorsAlarm"] == {"FunctionName": s.params["FunctionName"]}
            assert dims["EventsLateAlarm"] == {}, "on every rule's events"
            assert found["QueueBackingUpAlarm"]["Threshold"] == float(s.params["QueueAgeAlarmThresholdSeconds"])
            for lid, a in found.items():
                assert RUNBOOKS[lid] in a["AlarmDescription"]
                assert a["AlarmActions"] == [s.params["AlarmTopicArn"]] if s.params.get("AlarmTopicArn") else not a["AlarmActions"]

        def operator_policy():
            s = need()
            iam = moto.client("iam")
            arn = s.refs["OperatorPolicy"]
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            resources = {x["Resource"] for x in doc["Statement"]}
            assert resources == {s.attrs["DeadLetterQueue"]["Arn"], s.attrs["EventsQueue"]["Arn"]}, resources

        def dashboard():
            s = need()
            cw = moto.client("cloudwatch")
            body = json.loads(cw.get_dashboard(DashboardName=f"{s.name}-opsrelay")["DashboardBody"])
            text = json.dumps(body)
            for name in (s.attrs["DeadLetterQueue"]["QueueName"], s.attrs["EventsQueue"]["QueueName"], s.params["FunctionName"]):
                assert name in text, f"dashboard does not show {name}"
            for metric in ("Delivered", "Digested", "Dropped", "Retried", "DeadLettered", "EventAge", "Posts", "SlackRateLimited", "CursorAge", "PolledRows", "LateRows"):
                assert f'["opsrelay", "{metric}"' in text, f"dashboard does not show opsrelay's {metric}"

        def delivery():
            s = need()
            event = {"type": "order.created", "id": 42, "occurred_at": "2026-01-01T00:00:00Z"}
            s.sns.publish(TopicArn=s.topic_arn, Message=json.dumps(event), Subject="opsrelay test")
            messages = s.receive(s.queue_url)
            assert len(messages) == 1, messages
            envelope = json.loads(messages[0]["Body"])  # RawMessageDelivery defaults to false
            assert envelope["Type"] == "Notification" and envelope["TopicArn"] == s.topic_arn, envelope
            assert json.loads(envelope["Message"]) == event
            s.sqs.delete_message(QueueUrl=s.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])

        def dead_letter():
            s = need()
            s.sns.publish(TopicArn=s.topic_arn, Message='{"type": "order.created", "id": 7}')
            count = int(s.params["MaxReceiveCount"])
            for i in range(count):
                got = s.receive(s.queue_url, VisibilityTimeout=0)
                assert len(got) == 1, f"receive {i + 1}: {got}"
            assert s.receive(s.queue_url, wait=0) == [], "still in the source queue after maxReceiveCount receives"
            moved = s.receive(s.dlq_url)
            assert len(moved) == 1 and json.loads(json.loads(moved[0]["Body"])["Message"])["id"] == 7, moved

        def other_settings():
            overrides = {"Timeout": "60", "MaximumBatchingWindowInSeconds": "5", "MaxReceiveCount": "8", "RawMessageDelivery": "true", "BatchSize": "50"}
            s = Stack(moto, cfn, overrides)
            s.apply_sdk_resources()
            a = s.queue_attributes(s.queue_url)
            assert int(a["VisibilityTimeout"]) == 6 * 60 + 5, a["VisibilityTimeout"]
            assert int(json.loads(a["RedrivePolicy"])["maxReceiveCount"]) == 8
            s.sns.publish(TopicArn=s.topic_arn, Message='{"type": "user.signed_up", "id": 3}',
                          MessageAttributes={"source": {"DataType": "String", "StringValue": "test"}})
            messages = s.receive(s.queue_url)
            assert len(messages) == 1 and json.loads(messages[0]["Body"]) == {"type": "user.signed_up", "id": 3}, messages
            assert messages[0]["MessageAttributes"]["source"]["StringValue"] == "test"

        check("moto: redrive policy -> DLQ, maxReceiveCount = MaxReceiveCount", redrive)
        check("moto: visibility timeout >= 6 x function Timeout (+ batching window)", visibility)
        check("moto: DLQ retention 14 days, longer than the source queue's", retention)
        check("moto: queues and topic encrypted", encryption)
        check("moto: queue policy lets only the topic send (aws:SourceArn)", queue_policy)
        check("moto: six alarms on the deployed queues, function and events, naming runbooks", alarms)
        check("moto: operator policy on the deployed queues", operator_policy)
        check("moto: dashboard shows the deployed queues, function and opsrelay's metrics", dashboard)
        check("moto: published event reaches the queue (SNS envelope)", delivery)
        check("moto: message moves to the DLQ after maxReceiveCount receives", dead_letter)
        check("moto: Timeout=60 window=5 MaxReceiveCount=8 raw delivery stack", other_settings)


def write_translated(directory):
    """The translated template with every condition true, so that checkov looks at every resource."""
    cfn = translate(load_template())
    for r in cfn["Resources"].values():
        r.pop("Condition", None)
    for name, value in ALL_OPTIONS_ON.items():
        cfn["Parameters"][name]["Default"] = value
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "template.translated.json"), "w", encoding="utf-8") as f:
        json.dump(cfn, f, indent=1)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--write-translated":
        write_translated(sys.argv[2])
        return 0
    if len(sys.argv) != 1:
        print(__doc__)
        return 2
    results = []

    def check(name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, and the rest run
            detail = str(e) or type(e).__name__
            results.append(False)
            print(f"FAIL {name}\n    {type(e).__name__}: {detail[:2000]}")
        else:
            results.append(True)
            print(f"PASS {name}")

    check("template translates offline with aws-sam-translator", check_translate)
    check("function: runtime, handler, architecture, code, memory, timeout, VPC", check_function)
    check("function environment (secrets by ARN, DLQ URL, receive count)", check_environment)
    check("event source mapping: partial batch responses, batch, window, concurrency", check_event_source_mapping)
    check("visibility table: >= 6 x Timeout + window for every allowed pair", check_visibility_table)
    check("Slack pacing table: rate x MaximumConcurrency <= 1 msg/s", check_slack_rate_table)
    check("dead-letter receive table: opsrelay dead-letters one receive before SQS moves", check_dead_letter_receive_table)
    check("encryption: topic, queues (SSE-SQS or the KMS key), log group", check_encryption)
    check("function role: least privilege", check_function_role)
    check("operator policy: DLQ redrive actions and send to the source queue", check_operator_policy)
    check("alarms: metrics, thresholds, runbooks, optional actions", check_alarms)
    check("database sources: cursor table, schedule, least privilege, cursor-age alarm", check_poll_sources)
    check("parameters.example.json matches the template", check_example_parameters)
    try:
        run_moto_checks(check)
    except Exception as e:  # noqa: BLE001 - e.g. moto would not start
        results.append(False)
        print(f"FAIL moto server\n    {type(e).__name__}: {e}")
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
