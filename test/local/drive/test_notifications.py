from urllib.parse import unquote_plus

import boto3

from totesys_etl.local.drive import notifications


def test_ensure_is_idempotent_and_keeps_the_bucket_s_other_notifications(buckets):
    bucket = buckets[0]
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    other = sqs.create_queue(QueueName=f"{bucket}-someone-else")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "theirs", "QueueArn": other_arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "exports/"}]}}}]})
    url = notifications.ensure(bucket)
    assert notifications.ensure(bucket) == url
    configured = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(c["Id"] for c in configured) == ["theirs", "totesys-etl-manifests"]

    s3.put_object(Bucket=bucket, Key="_runs/20260101T000000000000Z.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="other/file.csv", Body=b"x")
    keys = [record["s3"]["object"]["key"] for event, receipt in notifications.receive(url)
            for record in event.get("Records", [])]
    assert keys == ["_runs%2F20260101T000000000000Z.json"]  # only manifests, the key URL-encoded as S3 sends it
    assert unquote_plus(keys[0]) == "_runs/20260101T000000000000Z.json"
