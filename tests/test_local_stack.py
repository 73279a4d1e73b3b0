"""`imgsim serve` end to end, in a subprocess: local S3 + SQS (moto), the indexer loop, the HTTP API, Qdrant.

The stack runs the real handlers (functions/index/app.py, functions/search/app.py); one test runs it around tiny
stand-in handlers instead, to check the Lambda and API Gateway emulation itself (event shapes, batch failures,
response mapping).
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import textwrap
import time
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from imgsim.ids import point_id_for_object
from serve_support import API_KEY, BUCKET, Serve, running, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running(tmp_path_factory.mktemp("stack") / "data") as serve:
        yield serve


def put_photo(serve: Serve, path: Path, key: str) -> str:
    serve.s3().put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    return point_id_for_object(BUCKET, key)


def test_start_up_prints_the_urls_and_the_key(stack):
    out = stack.stdout()
    assert "imgsim local stack ready in" in out
    assert f"{stack.api_url}/" in out  # the page
    assert stack.s3_url in out
    assert f"aws --endpoint-url {stack.s3_url} s3 cp photo.jpg s3://{BUCKET}/photos/" in out
    assert API_KEY in out and "from IMGSIM_API_KEY" in out
    status, health = stack.request("GET", "/health", key=None)
    assert status == 200 and health["status"] == "ok" and health["collection"] == "images"


def test_the_stack_honours_a_key_ring_from_the_shell(tmp_path):
    """IMGSIM_API_KEYS from the shell, like every variable imgsim reads: its keys work with their scopes beside the
    stack's printed all-scope key, and the banner names where `imgsim keys` writes the stack's own ring."""
    ring = {"keys": [{"name": "shell-reader", "sha256": hashlib.sha256(b"shell-key").hexdigest(),
                      "scopes": ["search"], "tenant": "acme"}]}
    serve = Serve(tmp_path / "data", env={"IMGSIM_API_KEYS": json.dumps(ring)}).wait_ready()
    try:
        assert f"Key ring     {tmp_path / 'data' / 'api-keys.json'}" in serve.stdout()
        status, me = serve.request("GET", "/me", key="shell-key")
        assert status == 200 and (me["name"], me["tenant"], me["scopes"]) == ("shell-reader", "acme", ["search"])
        status, body = serve.json_request("POST", "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg"},
                                          key="shell-key")
        assert status == 403 and body["error"]["code"] == "missing_scope"
        assert serve.request("GET", "/me")[1]["scopes"] == ["search", "upload", "delete"]  # API_KEY: every scope
    finally:
        serve.stop()
        serve.kill()


def test_objects_put_in_s3_are_indexed_and_searchable(stack, photos):
    # Keys as users write them: spaces, unicode, '+' (S3 URL-encodes them in the notification).
    chosen = {"photos/cat 1.jpg": photos[3], "photos/chien+é.jpg": photos[600], "photos/deep/a/b/monkey.jpg": photos[1100]}
    ids = {key: put_photo(stack, path, key) for key, path in chosen.items()}
    for key, point_id in ids.items():
        image = stack.wait_indexed(point_id)
        assert image["key"] == key and image["bucket"] == BUCKET and image["width"] > 0

    # Search with the bytes of one of them: itself first, at ~100%.
    query = chosen["photos/chien+é.jpg"]
    status, body = stack.request("POST", "/search?limit=5", query.read_bytes(), content_type="image/jpeg")
    assert status == 200, body
    top = body["results"][0]
    assert top["key"] == "photos/chien+é.jpg" and top["percent"] >= 99.0
    # Its presigned URL points at the local S3 and serves the very bytes uploaded.
    assert top["url"].startswith(stack.s3_url + "/")
    with urllib.request.urlopen(top["url"], timeout=10) as response:
        assert response.read() == query.read_bytes()

    # Search by an indexed image's id: itself excluded, the others ranked.
    status, body = stack.json_request("POST", "/search", {"id": ids["photos/cat 1.jpg"]})
    assert status == 200
    keys = [r["key"] for r in body["results"]]
    assert "photos/cat 1.jpg" not in keys and "photos/chien+é.jpg" in keys

    # Auth is the handler's: no key, no search.
    status, body = stack.request("POST", "/search", query.read_bytes(), content_type="image/jpeg", key=None)
    assert status == 401 and body["error"]["code"]


def test_presigned_upload_from_the_api_is_indexed(stack, photos):
    status, upload = stack.json_request("POST", "/uploads", {"filename": "from the api.jpg", "content_type": "image/jpeg"})
    assert status == 200, upload
    assert upload["method"] == "POST" and upload["url"] == f"{stack.s3_url}/{BUCKET}"
    assert upload["max_bytes"] == 25 * 1024 * 1024
    # What a browser on the page's origin sends first: the bucket's CORS rules must allow the POST.
    preflight = urllib.request.Request(upload["url"], method="OPTIONS", headers={
        "Origin": stack.api_url, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    with urllib.request.urlopen(preflight, timeout=10) as response:
        allowed = response.headers.get("Access-Control-Allow-Origin")
        assert allowed in ("*", stack.api_url)
        assert "POST" in response.headers.get("Access-Control-Allow-Methods", "")
    post = requests.post(upload["url"], data=upload["fields"], headers={"Origin": stack.api_url},
                         files={"file": ("from the api.jpg", photos[42].read_bytes(), "image/jpeg")}, timeout=10)
    assert post.status_code == 204, post.text
    assert post.headers.get("Access-Control-Allow-Origin") in ("*", stack.api_url)
    image = stack.wait_indexed(upload["id"])
    assert image["key"] == upload["key"] and image["key"].startswith("uploads/")


def test_an_oversized_upload_is_refused_by_the_local_s3_and_never_stored_or_indexed(stack, photos):
    """moto checks no POST policy; the local stack's wrapper (imgsim_tools.local.post_policy) does, as S3 does."""
    status, upload = stack.json_request("POST", "/uploads", {"filename": "huge.jpg", "content_type": "image/jpeg"})
    assert status == 200, upload
    huge = photos[7].read_bytes().ljust(upload["max_bytes"] + 1, b"\0")
    post = requests.post(upload["url"], data=upload["fields"], headers={"Origin": stack.api_url},
                         files={"file": ("huge.jpg", huge, "image/jpeg")}, timeout=30)
    assert post.status_code == 400, post.text
    error = ElementTree.fromstring(post.content)
    assert error.findtext("Code") == "EntityTooLarge"
    assert error.findtext("Message") == "Your proposed upload exceeds the maximum allowed size"
    assert error.findtext("MaxSizeAllowed") == str(upload["max_bytes"])
    # The page reads the refusal (CORS headers on the error, as S3 sends them), not a network failure.
    assert post.headers.get("Access-Control-Allow-Origin") in ("*", stack.api_url)
    # Another key or type than the policy's: 403 AccessDenied, nothing stored either.
    retyped = requests.post(upload["url"], data={**upload["fields"], "Content-Type": "image/png"},
                            files={"file": ("huge.png", photos[7].read_bytes(), "image/png")}, timeout=10)
    assert retyped.status_code == 403 and b"<Code>AccessDenied</Code>" in retyped.content
    with pytest.raises(stack.s3().exceptions.ClientError):
        stack.s3().head_object(Bucket=BUCKET, Key=upload["key"])
    assert stored_copy(stack.data_dir, upload["key"]) is None
    # A right-sized upload sent after it is indexed; by then the refused one would have been too, had it been stored.
    status, small = stack.json_request("POST", "/uploads", {"filename": "small.jpg", "content_type": "image/jpeg"})
    ok = requests.post(small["url"], data=small["fields"],
                       files={"file": ("small.jpg", photos[8].read_bytes(), "image/jpeg")}, timeout=10)
    assert ok.status_code == 204, ok.text
    stack.wait_indexed(small["id"])
    assert stack.request("GET", f"/images/{upload['id']}")[0] == 404


def test_delete_through_the_api_moves_to_a_durable_trash_and_restore_brings_it_back(stack, photos):
    point_id = put_photo(stack, photos[1300], "photos/to-delete.jpg")
    stack.wait_indexed(point_id)
    stored = wait_until(lambda: stored_copy(stack.data_dir, "photos/to-delete.jpg"), timeout=10,
                        what="the object's copy in the data dir")
    assert stored.read_bytes() == photos[1300].read_bytes()

    status, body = stack.request("DELETE", f"/images/{point_id}")
    assert status == 200 and body["key"] == "photos/to-delete.jpg" and body["status"] == "trashed"
    stack.wait_gone(point_id)
    with pytest.raises(stack.s3().exceptions.ClientError):
        stack.s3().head_object(Bucket=BUCKET, Key="photos/to-delete.jpg")
    wait_until(lambda: not stored.exists() and stored_copy(stack.data_dir, "photos/to-delete.jpg") is None,
               timeout=10, what="the stored copy to go")
    # The trash is on disk like every other object (a restart keeps it: the durable S3's listing).
    status, trash = stack.request("GET", "/trash")
    (entry,) = [i for i in trash["items"] if i["image_id"] == point_id]
    stashed = next(o["Key"] for o in stack.s3().list_objects_v2(Bucket=BUCKET, Prefix=".trash/")["Contents"]
                   if o["Key"].endswith("photos/to-delete.jpg"))
    kept = wait_until(lambda: stored_copy(stack.data_dir, stashed), timeout=10, what="the trash copy on disk")
    assert kept.read_bytes() == photos[1300].read_bytes()

    status, restored = stack.request("POST", f"/trash/{entry['id']}/restore")
    assert status == 200 and restored["status"] == "restored"
    stack.wait_indexed(point_id)
    assert stack.s3().get_object(Bucket=BUCKET, Key="photos/to-delete.jpg")["Body"].read() == photos[1300].read_bytes()
    wait_until(lambda: stored_copy(stack.data_dir, stashed) is None, timeout=10, what="the trash copy to go")


def test_the_page_and_the_openapi_document_are_served(stack):
    status, page = stack.request("GET", "/", key=None)
    assert status == 200 and b"<title>imgsim" in page and b'id="add-files"' in page
    status, document = stack.request("GET", "/openapi.json", key=None)
    assert status == 200 and "/search" in document["paths"]
    status, body = stack.request("GET", "/no/such/route")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_a_busy_port_is_a_one_line_error(stack, tmp_path):
    for args, option in (({"port": stack.port}, "--port"), ({"s3_port": stack.s3_port}, "--s3-port")):
        other = Serve(tmp_path / option.strip("-"), **args)
        try:
            other.process.wait(60)
        finally:
            other.kill()
        assert other.process.returncode == 2
        err = other.stderr().strip()
        assert len(err.splitlines()) == 1, err
        assert "already in use" in err and option in err and "Traceback" not in err


def stored_copy(data: Path, key: str) -> Path | None:
    """Where the stack keeps an object's bytes between runs (moto's S3 is in memory), per its listing."""
    import sqlite3

    db = sqlite3.connect(data / "s3" / BUCKET / "bucket.sqlite")
    try:
        row = db.execute("SELECT file FROM objects WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return data / "s3" / BUCKET / "objects" / row[0] if row else None


def test_ctrl_c_stops_cleanly_and_the_data_persists(tmp_path, photos):
    data = tmp_path / "data"
    first = Serve(data).wait_ready()
    try:
        point_id = put_photo(first, photos[900], "photos/persist.jpg")
        indexed = first.wait_indexed(point_id)
        lost_delete_id = put_photo(first, photos[950], "photos/deleted-while-stopped.jpg")
        first.wait_indexed(lost_delete_id)
    finally:
        code = first.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in first.stderr(), first.stderr()
    assert "imgsim serve: stopped" in first.stdout()

    # As if the process had died right after acknowledging a delete and an upload, their events lost with
    # moto's in-memory queue: both are committed to the data dir, owed to the indexer.
    from imgsim_tools.local.durable_s3 import DurableBucket

    durable = DurableBucket(data / "s3" / BUCKET, BUCKET)
    assert durable.pending() == []  # everything acknowledged before the stop was handled
    durable.remove("photos/deleted-while-stopped.jpg")
    durable.write("photos/added-while-stopped.jpg", photos[1000].read_bytes(),
                  hashlib.md5(photos[1000].read_bytes()).hexdigest(), "image/jpeg", time.time())
    assert [(p.key, p.action) for p in durable.pending()] == [
        ("photos/deleted-while-stopped.jpg", "delete"), ("photos/added-while-stopped.jpg", "put")]
    durable.close()

    second = Serve(data).wait_ready()  # same data dir, new ports
    try:
        again = second.wait_indexed(point_id, timeout=5)
        # Still indexed, and not re-indexed: the stored images are restored before notifications are on.
        assert again["indexed_at"] == indexed["indexed_at"]
        assert again["url"].startswith(second.s3_url + "/")
        with urllib.request.urlopen(again["url"], timeout=10) as response:
            assert response.read() == photos[900].read_bytes()
        status, body = second.request("POST", "/search?limit=1", photos[900].read_bytes(), content_type="image/jpeg")
        assert status == 200 and body["results"][0]["key"] == "photos/persist.jpg"
        # The index caught up with the bucket through the normal event path.
        second.wait_indexed(point_id_for_object(BUCKET, "photos/added-while-stopped.jpg"))
        second.wait_gone(lost_delete_id)
        assert "2 events owed to the indexer sent again" in second.stderr()
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in second.stderr()


# -- the emulation itself, around stand-in handlers ---------------------------------------------------------------

# Each stand-in takes the composition root the stack hands its execution environment (``use_root``), as the real
# handlers do; the index stand-in reports the settings its root holds (the functions' configuration).
STANDIN_INDEX = '''
import json, os

_root = None

def use_root(root):
    global _root
    _root = root

def handler(event, context):
    settings = _root.settings
    with open(os.environ["STANDIN_LOG"], "a") as log:
        log.write(json.dumps({"event": event, "context": {
            "function_name": context.function_name, "aws_request_id": context.aws_request_id,
            "invoked_function_arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis()},
            "settings": {
                "IMGSIM_FETCH_CONCURRENCY": settings.index.fetch_concurrency,
                "QDRANT_COLLECTION": settings.engine.collection, "QDRANT_TIMEOUT": settings.engine.qdrant_timeout,
                "IMGSIM_UPLOAD_PREFIX": settings.api.upload_prefix,
                "QDRANT_API_KEY_PARAM": settings.engine.qdrant_api_key_param,
                "IMAGES_BUCKET": settings.api.images_bucket, "IMGSIM_MAX_PIXELS": settings.engine.max_pixels}}) + "\\n")
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"] if "fail" in r["body"]]}
'''

STANDIN_SEARCH = '''
import base64, json

def use_root(root):
    pass

def handler(event, context):
    path = event["rawPath"]
    if path == "/health":
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}
    if path == "/binary":
        return {"statusCode": 201, "headers": {"content-type": "application/octet-stream", "x-custom": "yes"},
                "cookies": ["a=1; Path=/", "b=2"], "body": base64.b64encode(b"\\x00\\x01\\xff").decode(),
                "isBase64Encoded": True}
    if path == "/inferred":
        return {"hello": "world"}
    if path == "/boom":
        raise RuntimeError("boom")
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event, "function_name": context.function_name})}
'''


def test_lambda_and_api_gateway_emulation_with_stand_in_handlers(tmp_path):
    functions = tmp_path / "functions"
    for name, source in (("index", STANDIN_INDEX), ("search", STANDIN_SEARCH)):
        (functions / name).mkdir(parents=True)
        (functions / name / "app.py").write_text(textwrap.dedent(source))
    log = tmp_path / "index-events.jsonl"
    serve = Serve(tmp_path / "data", env={"STANDIN_LOG": str(log), "IMGSIM_MAX_PIXELS": "1000000"}, extra_args=[
        "--index-handler", str(functions / "index" / "app.py"),
        "--search-handler", str(functions / "search" / "app.py")]).wait_ready()
    try:
        # -- API Gateway HTTP API (payload format 2.0) -------------------------------------------------------
        req = urllib.request.Request(serve.api_url + "/echo/a%20b?x=1&x=2&y=", method="POST", data=b"\x89PNG\x00\xff",
                                     headers={"content-type": "image/png", "cookie": "c1=v1; c2=v2",
                                              "x-api-key": "k", "x-multi": "one"})
        req.add_header("x-other", "two")
        with urllib.request.urlopen(req, timeout=10) as response:
            echoed = json.loads(response.read())
        event = echoed["event"]
        assert event["version"] == "2.0" and event["routeKey"] == "$default"
        assert event["rawPath"] == "/echo/a%20b" and event["rawQueryString"] == "x=1&x=2&y="
        assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
        assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
        assert event["headers"]["x-api-key"] == "k" and event["headers"]["content-type"] == "image/png"
        assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x89PNG\x00\xff"
        context = event["requestContext"]
        assert context["http"]["method"] == "POST" and context["http"]["sourceIp"] == "127.0.0.1"
        assert context["stage"] == "$default" and context["requestId"]
        assert echoed["function_name"].endswith("SearchFunction")

        status, body = serve.json_request("POST", "/echo", {"a": 1})
        assert status == 200 and body["event"]["isBase64Encoded"] is False
        assert json.loads(body["event"]["body"]) == {"a": 1}
        status, body = serve.request("GET", "/echo")
        assert "body" not in body["event"] and "queryStringParameters" not in body["event"]

        with urllib.request.urlopen(serve.api_url + "/binary", timeout=10) as response:
            assert response.status == 201 and response.read() == b"\x00\x01\xff"
            assert response.headers["x-custom"] == "yes"
            assert response.headers.get_all("set-cookie") == ["a=1; Path=/", "b=2"]
            assert response.headers["apigw-requestid"]
        status, body = serve.request("GET", "/inferred")
        assert status == 200 and body == {"hello": "world"}
        status, body = serve.request("GET", "/boom")
        # The documented error shape (API Gateway itself says {"message": "Internal Server Error"}).
        assert status == 500 and body == {"error": {"code": "internal_error", "message": "Internal Server Error"}}

        # -- SQS event source mapping ----------------------------------------------------------------------------
        s3 = serve.s3()
        s3.put_object(Bucket=BUCKET, Key="photos/ok.jpg", Body=b"fine")
        s3.put_object(Bucket=BUCKET, Key="photos/fail.jpg", Body=b"poison")

        def invocations():
            lines = log.read_text().splitlines() if log.exists() else []
            return [json.loads(line) for line in lines]

        def seen_keys():
            return {record["body"] for inv in invocations() for record in inv["event"]["Records"]}

        # (moto URL-encodes the whole key in the notification, '/' included; the handler unquotes it.)
        wait_until(lambda: sum("ok.jpg" in b or "fail.jpg" in b for b in seen_keys()) >= 2,
                   timeout=30, what="both object events to reach the stand-in indexer")
        records = [r for inv in invocations() for r in inv["event"]["Records"] if "ObjectCreated" in r["body"]]
        queue_url = serve.sqs().get_queue_url(QueueName="imgsim-index-queue")["QueueUrl"]
        queue_arn = serve.sqs().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for record in records:
            assert set(record) == {"messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                                   "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"}
            assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue_arn
            assert record["awsRegion"] == "us-east-1"
            assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
            assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
                    "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
            s3_record = json.loads(record["body"])["Records"][0]
            assert s3_record["eventSource"] == "aws:s3" and s3_record["s3"]["bucket"]["name"] == BUCKET
        ctx = invocations()[-1]["context"]
        assert ctx["function_name"].endswith("IndexFunction") and 0 < ctx["remaining_ms"] <= 60_000
        assert ctx["invoked_function_arn"].startswith("arn:aws:lambda:us-east-1:")
        # The functions' settings (their root's) and MemorySize come from the template (the reader `make invoke`
        # uses); what names AWS resources is the stack's; a variable set in the shell wins (IMGSIM_MAX_PIXELS here).
        from imgsim_tools.template_functions import read_function

        declared = read_function("IndexFunction", Path(__file__).resolve().parents[1] / "template.yaml", quiet=True)
        assert ctx["memory"] == str(declared.memory_mb)
        assert invocations()[-1]["settings"] == {
            "IMGSIM_FETCH_CONCURRENCY": int(declared.variables["IMGSIM_FETCH_CONCURRENCY"]),
            "QDRANT_COLLECTION": declared.variables["QDRANT_COLLECTION"],
            "QDRANT_TIMEOUT": 3,  # SearchFunction's, where the two differ
            "IMGSIM_UPLOAD_PREFIX": "uploads/", "QDRANT_API_KEY_PARAM": None, "IMAGES_BUCKET": BUCKET,
            "IMGSIM_MAX_PIXELS": 1000000}

        # The event source drains moto's queue into its own buffer; the message reported in
        # batchItemFailures waits for the queue's visibility timeout, then is redelivered
        # (redelivery and the DLQ: test_event_source_redelivers_failures_then_dead_letters).
        def queue_counts():
            attrs = serve.sqs().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

        wait_until(lambda: queue_counts() == (0, 0), timeout=10, what="moto's queue to be drained")
        wait_until(lambda: "1 of 1 messages failed; they will be redelivered in 360 s" in serve.stderr() + serve.stdout()
                   or "1 of 2 messages failed; they will be redelivered in 360 s" in serve.stderr() + serve.stdout(),
                   timeout=10, what="the failed message to be held for redelivery")
        attrs = serve.sqs().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 5
        assert int(attrs["VisibilityTimeout"]) == 6 * 60
    finally:
        code = serve.stop()
    assert code == 0


def test_serve_builds_the_embedded_index_in_the_background_past_the_threshold():
    """The stack's index-builder thread asks the store for a background build (the build itself:
    tests/store/test_edge.py) when IMGSIM_INDEX_THRESHOLD points are unindexed, and only then."""
    import threading
    from types import SimpleNamespace

    from imgsim_tools.local import stack as local_stack

    builds: list[str] = []
    pending = {"images": iter([3, 7, 9])}

    from imgsim.store import StorageOptions

    class FakeEdge:
        backend = "edge"
        dim = 4
        options = StorageOptions()

        def __init__(self, collection: str = "images") -> None:
            self.collection = collection

        def unindexed_count(self) -> int:
            return next(pending[self.collection])

        def build_index_in_background(self, on_done):
            builds.append(self.collection)
            return threading.current_thread()

    stopping = threading.Event()
    checks = {"n": 0}

    def wait(_seconds: float) -> bool:
        checks["n"] += 1
        if checks["n"] == 3:
            stopping.set()
        return stopping.is_set()

    stopping.wait = wait  # type: ignore[method-assign]
    root = SimpleNamespace(store=FakeEdge, engine=SimpleNamespace(index_threshold=5))
    fake_self = SimpleNamespace(_require_root=lambda: root, _stopping=stopping)
    local_stack.LocalStack._index_builder(fake_self)
    # 3 pending: no build; 7 and 9: one each (the store refuses a second while busy).
    assert builds == ["images", "images"]


def test_event_source_redelivers_failures_then_dead_letters():
    """The local event source mapping: batches of up to 10, ApproximateReceiveCount per delivery,
    batchItemFailures redelivered after the visibility timeout, the DLQ after maxReceiveCount."""
    import threading

    import boto3
    from imgsim_tools.local import event_source
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        for i in range(12):
            sqs.send_message(QueueUrl=queue, MessageBody=f"body-{i}")
        deliveries: list[list[tuple[str, str]]] = []

        def invoke(function, event, timeout_s):
            deliveries.append([(r["body"], r["attributes"]["ApproximateReceiveCount"]) for r in event["Records"]])
            failed = [r["messageId"] for r in event["Records"] if r["body"] == "body-3"]
            return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

        settled: list[str] = []
        poller = event_source.SqsPoller(sqs, queue, "arn:aws:sqs:us-east-1:123456789012:q", invoke=invoke,
                                       stopping=threading.Event(), settle=settled.extend, dlq_url=dlq,
                                       redelivery_delay_s=0.01, max_receive_count=5)
        while poller.drain_once():
            pass
        assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"] == "0"
        for _ in range(20):
            if not poller.pending():
                break
            poller.poll_once(wait_s=0.2)
        assert [len(batch) for batch in deliveries[:2]] == [10, 2]
        assert sorted(body for batch in deliveries[:2] for body, _ in batch) == sorted(f"body-{i}" for i in range(12))
        assert [count for batch in deliveries for body, count in batch if body == "body-3"] == ["1", "2", "3", "4", "5"]
        dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
        assert [m["Body"] for m in dead] == ["body-3"] and poller.pending() == 0
        # Every message is settled once: when handled, or when it went to the DLQ.
        assert sorted(settled) == sorted(f"body-{i}" for i in range(12))


def test_queue_timeouts_and_batch_size_come_from_the_template():
    from cfnlint.decode import (
        decode,  # CloudFormation's own reading of the template, for comparison
    )
    from imgsim_tools.local.common import SETTINGS as settings
    text, problems = decode(str(Path(__file__).resolve().parents[1] / "template.yaml"))
    assert not problems
    queue = text["Resources"]["IndexQueue"]["Properties"]
    index = text["Resources"]["IndexFunction"]["Properties"]
    assert settings.visibility_timeout_s == queue["VisibilityTimeout"] == 6 * index["Timeout"]
    assert settings.max_receive_count == queue["RedrivePolicy"]["maxReceiveCount"]
    assert settings.index_timeout_s == index["Timeout"]
    assert settings.search_timeout_s == text["Resources"]["SearchFunction"]["Properties"]["Timeout"]
    assert settings.index_batch_size == index["Events"]["ImageEvents"]["Properties"]["BatchSize"]


def test_kill_9_loses_no_acknowledged_upload_or_delete(tmp_path, photos):
    """Bounded chaos: 80 uploads, 15 deletes and 10 overwrites acknowledged by `imgsim serve`'s S3, then kill -9 at
    once (nothing waits for indexing), restart on the same data dir: S3 and the index agree with
    every acknowledged write. (The issue measured 447 of 500 uploads gone.)"""
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import ClientError

    data_dir = tmp_path / "data"
    first = Serve(data_dir).wait_ready()
    s3 = first.s3()
    keys = [f"photos/chaos-{i}.jpg" for i in range(80)]
    bodies = {key: photos[i * 20].read_bytes() for i, key in enumerate(keys)}
    with ThreadPoolExecutor(8) as pool:
        etags = dict(zip(keys, pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=bodies[k])["ETag"], keys)))
    deleted = keys[::6][:15]
    for key in deleted:
        s3.delete_object(Bucket=BUCKET, Key=key)
    overwritten = keys[1::8][:10]
    for i, key in enumerate(overwritten):
        bodies[key] = photos[1500 + i].read_bytes()
        etags[key] = s3.put_object(Bucket=BUCKET, Key=key, Body=bodies[key])["ETag"]
    first.kill()  # SIGKILL: no shutdown code runs

    second = Serve(data_dir).wait_ready()
    try:
        s3 = second.s3()
        kept = [k for k in keys if k not in deleted]
        for key in kept:
            assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == etags[key], key
        for key in deleted:
            with pytest.raises(ClientError):
                s3.head_object(Bucket=BUCKET, Key=key)
        wait_until(lambda: second.request("GET", "/me")[1].get("images") == len(kept), timeout=45,
                   what="the index to hold exactly the kept objects")
        for key in kept[:5] + deleted[:3]:
            status, _ = second.request("GET", f"/images/{point_id_for_object(BUCKET, key)}")
            assert status == (200 if key in kept else 404), key
        # Overwrites are not reverted: the index ends with the second version of each.
        def overwrites_indexed() -> bool:
            views = [second.request("GET", f"/images/{point_id_for_object(BUCKET, key)}")[1] for key in overwritten]
            return all(view.get("size") == len(bodies[key]) for key, view in zip(overwritten, views))

        wait_until(overwrites_indexed, timeout=45, what="the overwritten objects' second versions in the index")
    finally:
        assert second.stop() == 0
