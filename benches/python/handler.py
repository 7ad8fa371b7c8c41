"""A Python notifier as a custom Lambda runtime: what such handlers import (json, urllib, boto3) and
the SQS client they create at init, then the Runtime API loop. benches/whole_process.rs times its
start up to the first `next` request, beside opsrelay-lambda's. (The managed Python runtime would
also import its own runtime client first, so this is the faster case for Python.)"""

import json
import os
import urllib.request

import boto3

SQS = boto3.client("sqs")
API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"


def handler(event):
    """Posts each record's body to the webhook; nothing failed."""
    for record in event.get("Records", []):
        body = json.dumps({"text": record.get("body", "")}).encode()
        request = urllib.request.Request(
            os.environ["OPSRELAY_SLACK_WEBHOOK_URL"], body, {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=5).read()
    return {"batchItemFailures": []}


while True:
    with urllib.request.urlopen(API + "next") as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(response.read())
    result = json.dumps(handler(event)).encode()
    urllib.request.urlopen(urllib.request.Request(API + request_id + "/response", result)).read()
