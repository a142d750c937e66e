#!/usr/bin/env python3
"""The Python reference path for bench/producer-vs-python.sh: aws-kinesis-agg 1.2.3
aggregation and boto3 PutRecords (run it with the bench venv's python).

produce: builds --records user records first (untimed: --size random bytes each, a key drawn
         uniformly from key-0 .. key-<keys-1>, the shape `kinesis-load produce --size N
         --keys K` sends), then, timed, packs them in order with the library's AggRecord into
         aggregates of at most --max-size bytes (as the library does, an aggregate goes out
         under its first record's partition key), batches aggregates into PutRecords calls of
         at most 500 entries and 5 MiB, and sends them from --senders threads, each retrying
         the entries a call reports as failed (throttled) with a growing pause until all are
         written. Prints one JSON line: user records, seconds, CPU seconds of the process
         over the timed part, user records/s, retries.
create:  creates a stream and waits until it is ACTIVE.
delete:  deletes a stream.

Credentials: the emulator's dummy ones (test/test, us-east-1) unless the environment has
others.
"""

import argparse
import concurrent.futures
import json
import os
import random
import resource
import sys
import threading
import time

import boto3
from botocore.config import Config
from aws_kinesis_agg.aggregator import AggRecord

# Kinesis API reference, PutRecords: at most 500 records and 5 MiB (data plus partition keys).
MAX_ENTRIES = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024


def client(endpoint, pool):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    return boto3.client(
        "kinesis", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(max_pool_connections=max(pool, 10), retries={"max_attempts": 10,
                                                                     "mode": "standard"}))


class Sender:
    """Sends batches of entries with PutRecords until every entry is written."""

    def __init__(self, kinesis, stream):
        self.kinesis = kinesis
        self.stream = stream
        self.lock = threading.Lock()
        self.requests = 0
        self.retried_entries = 0
        self.error_codes = {}

    def send(self, entries):
        pause = 0.05
        while entries:
            response = self.kinesis.put_records(StreamName=self.stream, Records=entries)
            failed = []
            if response["FailedRecordCount"]:
                for entry, result in zip(entries, response["Records"]):
                    if "ErrorCode" in result:
                        failed.append(entry)
                        with self.lock:
                            code = result["ErrorCode"]
                            self.error_codes[code] = self.error_codes.get(code, 0) + 1
            with self.lock:
                self.requests += 1
                self.retried_entries += len(failed)
            entries = failed
            if entries:
                time.sleep(pause + random.random() * pause)
                pause = min(pause * 2, 1.0)


def produce(args):
    rng = random.Random(args.seed)
    keys = ["key-%d" % i for i in range(args.keys)]
    records = [(keys[rng.randrange(args.keys)], rng.randbytes(args.size))
               for _ in range(args.records)]
    kinesis = client(args.endpoint, args.senders)
    sender = Sender(kinesis, args.stream)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.senders)
    # At most two batches per sender waiting, so aggregation cannot run far ahead.
    slots = threading.BoundedSemaphore(args.senders * 2)
    futures = []
    batch, batch_bytes = [], 0
    kinesis_records = 0

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            slots.acquire()
            future = pool.submit(sender.send, batch)
            future.add_done_callback(lambda _: slots.release())
            futures.append(future)
            batch, batch_bytes = [], 0

    def add(aggregate):
        nonlocal batch_bytes, kinesis_records
        key, _, data = aggregate.get_contents()
        size = len(data) + len(key.encode("utf-8"))
        if len(batch) == MAX_ENTRIES or batch_bytes + size > MAX_REQUEST_BYTES:
            flush()
        batch.append({"Data": data, "PartitionKey": key})
        batch_bytes += size
        kinesis_records += 1

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    current = AggRecord(args.max_size)
    for key, data in records:
        if not current.add_user_record(key, data):
            add(current)
            current = AggRecord(args.max_size)
            current.add_user_record(key, data)
    if current.get_num_user_records():
        add(current)
    flush()
    for future in futures:
        future.result()  # raises what a sender raised
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_secs = usage.ru_utime + usage.ru_stime - cpu_before
    pool.shutdown()
    print(json.dumps({
        "impl": "python", "stream": args.stream, "user_records": len(records),
        "record_size": args.size, "keys": args.keys, "max_size": args.max_size,
        "senders": args.senders, "kinesis_records": kinesis_records,
        "put_records_requests": sender.requests, "retried_entries": sender.retried_entries,
        "error_codes": sender.error_codes, "elapsed_secs": elapsed,
        "cpu_secs": cpu_secs, "user_records_per_sec": len(records) / elapsed,
        "mib_per_sec": len(records) * args.size / elapsed / 1048576,
    }))


def create(args):
    kinesis = client(args.endpoint, 1)
    kinesis.create_stream(StreamName=args.stream, ShardCount=args.shards)
    for _ in range(600):
        status = kinesis.describe_stream_summary(StreamName=args.stream)
        if status["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    sys.exit("stream %s did not become ACTIVE" % args.stream)


def delete(args):
    client(args.endpoint, 1).delete_stream(StreamName=args.stream)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--endpoint", required=True, help="Kinesis endpoint (the limits proxy)")
    p.add_argument("--stream", required=True)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--size", type=int, default=100, help="data bytes per user record")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--max-size", type=int, default=51200, help="bytes per aggregate")
    p.add_argument("--senders", type=int, default=4, help="threads calling PutRecords")
    p.add_argument("--seed", type=int, default=7)
    for name in ("create", "delete"):
        p = sub.add_parser(name)
        p.add_argument("--endpoint", required=True)
        p.add_argument("--stream", required=True)
        if name == "create":
            p.add_argument("--shards", type=int, required=True)
    args = parser.parse_args()
    {"produce": produce, "create": create, "delete": delete}[args.command](args)


if __name__ == "__main__":
    main()
