"""S3 -> SQS bucket notifications: how the local runtime hears of new manifests, as Lambda would.

Created on demand and idempotently (contract §5 "Driven from outside"): given only two buckets,
`tick` makes a queue per bucket and points the bucket's `_runs/*.json` notifications at it.
"""
from __future__ import annotations

import json
from typing import Iterator

import boto3

from totesys_etl.lake import RUNS_PREFIX

#: Seconds a received message stays invisible to another tick while this one handles it.
VISIBILITY_SECONDS = 120


def queue_name(bucket: str) -> str:
    return f"{bucket}-manifests"[:80]


def ensure(bucket: str, prefix: str | None = RUNS_PREFIX, suffix: str | None = ".json") -> str:
    """The queue URL for `bucket`'s manifest notifications, creating queue and notification if needed.

    `prefix=None, suffix=None`: every object created (the landing bucket's courier files, contract §9).
    """
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    url = sqs.create_queue(QueueName=queue_name(bucket))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rules = [{"Name": name, "Value": value} for name, value in (("prefix", prefix), ("suffix", suffix)) if value]
    wanted = {"Id": "totesys-etl-manifests", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
              **({"Filter": {"Key": {"FilterRules": rules}}} if rules else {})}
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    if not any(c.get("QueueArn") == arn for c in current.get("QueueConfigurations", [])):
        # Added to whatever the bucket already notifies (the API replaces the whole configuration).
        current["QueueConfigurations"] = [*current.get("QueueConfigurations", []), wanted]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
    return url


def receive(url: str) -> Iterator[tuple[dict, str]]:
    """(S3 event, receipt handle) for every message waiting now; the caller deletes what it handled."""
    sqs = boto3.client("sqs")
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=VISIBILITY_SECONDS).get("Messages", [])
        if not messages:
            return
        for message in messages:
            try:
                event = json.loads(message["Body"])
            except ValueError:
                event = {}
            yield event, message["ReceiptHandle"]


def acknowledge(url: str, receipt: str) -> None:
    boto3.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=receipt)


def purge(url: str) -> None:
    """Drop every waiting message (demo resets the buckets, so old notifications mean nothing)."""
    sqs = boto3.client("sqs")
    for _event, receipt in receive(url):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
