"""The IAM policy allows exactly the AWS calls the deployed code makes (both directions).

The calls are found statically: the modules the Lambda can import (the import closure of
``ucs_lambda.app``, deferred imports included) are parsed, and

* boto3 calls are method calls on a client made by ``aws.client("<service>", ...)`` (kept in a
  variable or attribute, or called directly), plus operations named to ``get_paginator`` and
  ``generate_presigned_url`` (a presigned URL acts with the signer's permissions);
* pynamodb calls are methods of the bound ``Model`` classes of ``ucs_lambda/adapters/dynamo``
  (``self.items``, ``self.tables.files``/``uploads``), their instances and indexes, and of
  the ``TransactWrite`` objects of ``self.tables.transaction()``.

Each operation maps to the IAM actions it needs; the union plus what the Lambda platform itself
needs (logs, the SQS event source) must equal the actions the policy grants.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from .conftest import ROOT, load

PACKAGE = ROOT / "ucs_lambda"

#: S3 operations whose IAM action is not s3:<OperationName>.
S3_ACTIONS = {
    "CreateMultipartUpload": {"s3:PutObject"},
    "UploadPart": {"s3:PutObject"},
    "CompleteMultipartUpload": {"s3:PutObject"},
    "AbortMultipartUpload": {"s3:AbortMultipartUpload"},
    "ListParts": {"s3:ListMultipartUploadParts"},
    "ListMultipartUploads": {"s3:ListBucketMultipartUploads"},
    "HeadObject": {"s3:GetObject", "s3:ListBucket"},  # ListBucket: 404 instead of 403 if absent
    "GetObject": {"s3:GetObject"},
    "DeleteObject": {"s3:DeleteObject"},
    "DeleteObjects": {"s3:DeleteObject"},  # S3 authorises each key of the batch as DeleteObject
    "CopyObject": {"s3:GetObject", "s3:PutObject"},
    "UploadPartCopy": {"s3:GetObject", "s3:PutObject"},
    "ListObjectsV2": {"s3:ListBucket"},
}
#: Operations of other services whose IAM action is not <service>:<OperationName>.
BATCH_ACTIONS = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",  # SQS authorises batches as SendMessage
}
#: pynamodb method -> DynamoDB action (models, instances, indexes, transactions).
PYNAMODB_ACTIONS = {
    "get": "GetItem",
    "refresh": "GetItem",
    "save": "PutItem",
    "update": "UpdateItem",
    "delete": "DeleteItem",
    "query": "Query",
    "count": "Query",
    "scan": "Scan",
    "batch_get": "BatchGetItem",
    "batch_write": "BatchWriteItem",
    "condition_check": "ConditionCheckItem",
    "exists": "DescribeTable",
    "describe_table": "DescribeTable",
    "create_table": "CreateTable",
    "delete_table": "DeleteTable",
}
#: What the Lambda service needs besides the code's calls: writing logs, and the SQS event
#: source mapping polling the queue with the function's role.
PLATFORM = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "ucs_lambda":
        return None
    base = ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_closure(start: str = "ucs_lambda.app") -> dict[str, ast.Module]:
    """Every ucs_lambda module the Lambda may import, with deferred (in-function) imports."""
    seen: dict[str, ast.Module] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or name in seen:
            continue
        tree = ast.parse(path.read_text(), str(path))
        seen[name] = tree
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        todo += parents
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                todo.append(mod)
                todo += [f"{mod}.{a.name}" for a in node.names]
    return seen


def _is_aws_client(node: ast.AST) -> str | None:
    """``aws.client("s3", ...)`` -> "s3"."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "aws"
    ):
        arg = node.args[0] if node.args else None
        assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), ast.unparse(node)
        return arg.value
    return None


def boto3_operations(modules: dict[str, ast.Module]) -> set[tuple[str, str]]:
    """{(service, python method name)} called on boto3 clients."""
    found: set[tuple[str, str]] = set()
    for tree in modules.values():
        scopes = [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        for scope in scopes:
            clients: dict[str, str] = {}
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and (svc := _is_aws_client(node.value)):
                    for target in node.targets:
                        clients[ast.unparse(target)] = svc
            for node in ast.walk(scope):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                recv = node.func.value
                svc = _is_aws_client(recv) or clients.get(ast.unparse(recv))
                if not svc:
                    continue
                method = node.func.attr
                if method in ("get_paginator", "generate_presigned_url"):
                    arg = node.args[0]
                    assert isinstance(arg, ast.Constant), ast.unparse(node)
                    method = arg.value
                found.add((svc, method))
    return found


#: How the DynamoDB adapter (ucs_lambda/adapters/dynamo/) reaches its bound model classes.
MODEL_EXPRESSIONS = {"self.items", "self.tables.files", "self.tables.uploads"}


def _is_model(expr: ast.expr) -> bool:
    """A bound model class, or an instance made by calling one, or one of its indexes."""
    text = ast.unparse(expr.func if isinstance(expr, ast.Call) else expr)
    owner, _, attr = text.rpartition(".")
    return text in MODEL_EXPRESSIONS or (owner in MODEL_EXPRESSIONS and attr.endswith("_index"))


def pynamodb_operations(modules: dict[str, ast.Module]) -> set[str]:
    """{pynamodb method} called on models, their instances, indexes and transactions."""
    found: set[str] = set()
    for name, tree in modules.items():
        if not name.startswith("ucs_lambda.adapters.dynamo"):
            continue
        instances: set[str] = set()
        transactions: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _is_model(node.value):
                instances |= {ast.unparse(t) for t in node.targets}
            if isinstance(node, ast.With):
                for item in node.items:
                    ctx = item.context_expr
                    if isinstance(ctx, ast.Call) and ast.unparse(ctx.func).endswith(".transaction"):
                        transactions.add(ast.unparse(item.optional_vars))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            recv, method = node.func.value, node.func.attr
            text = ast.unparse(recv)
            is_model = _is_model(recv) or text in instances or text in transactions
            if is_model and method in PYNAMODB_ACTIONS:
                found.add(method)
            elif is_model and not method.startswith("_") and method != "transaction":
                pytest.fail(f"unmapped pynamodb call {ast.unparse(node)[:80]}")
    return found


def code_actions() -> set[str]:
    modules = import_closure()
    assert "ucs_lambda.adapters.dynamo" in modules and "ucs_lambda.tokens" in modules
    assert "ucs_lambda.admin" not in modules, "operator code must not be in the Lambda's closure"
    session = botocore.session.get_session()
    actions: set[str] = set()
    for svc, method in boto3_operations(modules):
        model = session.get_service_model(svc)
        # botocore's method names are its xform_name of the operation names
        ops = [op for op in model.operation_names if xform_name(op) == method]
        assert len(ops) == 1, f"{svc}.{method} is not a {svc} operation"
        (op,) = ops
        if svc == "s3":
            assert op in S3_ACTIONS, f"map S3 operation {op} to IAM actions in S3_ACTIONS"
            actions |= S3_ACTIONS[op]
        else:
            actions.add(BATCH_ACTIONS.get((svc, op), f"{svc}:{op}"))
            if (svc, op) == ("ssm", "GetParameter"):
                actions.add("kms:Decrypt")  # SecureString, WithDecryption=True
    for method in pynamodb_operations(modules):
        actions.add(f"dynamodb:{PYNAMODB_ACTIONS[method]}")
    return actions


def policy_actions(policy: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        act = st["Action"]
        actions |= set(act if isinstance(act, list) else [act])
    return actions


def test_static_scan_finds_the_known_calls() -> None:
    """Guards the scanner itself: calls we know are there must be found."""
    modules = import_closure()
    ops = boto3_operations(modules)
    assert {("s3", "upload_part"), ("s3", "list_parts"), ("sqs", "send_message")} <= ops
    assert ("ssm", "get_parameter") in ops
    assert {"get", "save", "update", "query"} <= pynamodb_operations(modules)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_policy_file_matches_the_code(stage: str) -> None:
    policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text())
    expected = code_actions() | PLATFORM
    granted = policy_actions(policy)
    assert granted - expected == set(), "granted but never used"
    assert expected - granted == set(), "used but not granted"
    for st in policy["Statement"]:
        if st["Resource"] == "*":
            assert st.get("Condition"), f"statement {st.get('Sid')} grants on * without condition"


def test_packaged_roles_grant_the_same(packaged: dict[str, Any]) -> None:
    expected = code_actions() | PLATFORM
    t = load(packaged["cfn"]["dev"] / "sam.json")
    roles = [r for r in t["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for role in roles:
        (policy,) = role["Properties"]["Policies"]
        assert policy_actions(policy["PolicyDocument"]) == expected
    tf = load(packaged["tf"] / "chalice.tf.json")
    for policy in tf["resource"]["aws_iam_role_policy"].values():
        assert policy_actions(json.loads(policy["policy"])) == expected
