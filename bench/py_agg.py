#!/usr/bin/env python3
"""Codec driver for the awslabs Python reference, aws-kinesis-agg 1.2.3 (run it with the
bench venv's python, bench/.deps/py/bin/python).

run:    aggregates every user record of a workload file (bench/gen_workload.py) into aggregates
        of at most --max-size bytes, de-aggregates them back, and takes hashlib's MD5 of every
        aggregate; one warm-up run, then --runs timed runs; prints one JSON line.
verify: de-aggregates an aggregates file written by any driver and checks that it holds
        exactly the workload's records, in order.

Aggregation uses the library's AggRecord directly: add_user_record returns False when the
record does not fit, then get_contents() serialises the aggregate (protobuf + MD5). The
RecordAggregator wrapper does the same plus a deepcopy of every full aggregate; --api
aggregator measures that path instead. De-aggregation is iter_deaggregate_records with
data_format='Boto3' (raw bytes in, as boto3's get_records returns them; the library
base64-encodes each user record's data on the way out, which is its API).
"""

import argparse
import base64
import hashlib
import json
import struct
import sys
import time

from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

SEQUENCE_NUMBER = "49590338271490256608559692538361571095921575989136588898"


def read_workload(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] != b"KBW1":
        sys.exit("%s: not a workload file" % path)
    (count,) = struct.unpack_from("<I", blob, 4)
    at = 8
    records = []
    for _ in range(count):
        (key_len,) = struct.unpack_from("<H", blob, at)
        at += 2
        key = blob[at:at + key_len].decode("utf-8")
        at += key_len
        (data_len,) = struct.unpack_from("<I", blob, at)
        at += 4
        records.append((key, blob[at:at + data_len]))
        at += data_len
    return records


def read_aggregates(path):
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] != b"KBA1":
        sys.exit("%s: not an aggregates file" % path)
    (count,) = struct.unpack_from("<I", blob, 4)
    at = 8
    out = []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", blob, at)
        at += 4
        out.append(blob[at:at + n])
        at += n
    return out


def write_aggregates(path, aggregates):
    parts = [b"KBA1", struct.pack("<I", len(aggregates))]
    for a in aggregates:
        parts.append(struct.pack("<I", len(a)))
        parts.append(a)
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def aggregate_direct(records, max_size):
    out = []
    current = AggRecord(max_size)
    for key, data in records:
        if not current.add_user_record(key, data):
            out.append(current.get_contents()[2])
            current = AggRecord(max_size)
            current.add_user_record(key, data)
    if current.get_num_user_records():
        out.append(current.get_contents()[2])
    return out


def aggregate_wrapper(records, max_size):
    out = []
    aggregator = RecordAggregator(max_size)
    for key, data in records:
        full = aggregator.add_user_record(key, data)
        if full is not None:
            out.append(full.get_contents()[2])
    last = aggregator.clear_and_get()
    if last is not None:
        out.append(last.get_contents()[2])
    return out


def as_boto3_records(aggregates):
    return [{"SequenceNumber": SEQUENCE_NUMBER, "PartitionKey": "a",
             "ApproximateArrivalTimestamp": None, "Data": a} for a in aggregates]


def deaggregate_count(inputs):
    n = 0
    for user_record in iter_deaggregate_records(inputs, data_format="Boto3"):
        if "aggregated" not in user_record["kinesis"]:
            sys.exit("an aggregate was not recognised")
        n += 1
    return n


def run(args):
    records = read_workload(args.workload)
    aggregate = aggregate_direct if args.api == "direct" else aggregate_wrapper
    user_bytes = sum(len(d) for _, d in records)
    agg_s, deagg_s, md5_s = [], [], []
    summary = None
    for run_no in range(args.runs + 1):
        started = time.perf_counter()
        aggregates = aggregate(records, args.max_size)
        aggregated = time.perf_counter() - started

        inputs = as_boto3_records(aggregates)
        started = time.perf_counter()
        found = deaggregate_count(inputs)
        deaggregated = time.perf_counter() - started
        if found != len(records):
            sys.exit("de-aggregated %d of %d records" % (found, len(records)))

        started = time.perf_counter()
        for a in aggregates:
            hashlib.md5(a).digest()
        digested = time.perf_counter() - started

        if run_no == 0:
            if args.write_aggregates:
                write_aggregates(args.write_aggregates, aggregates)
            summary = (len(aggregates), sum(len(a) for a in aggregates))
            continue
        agg_s.append(aggregated)
        deagg_s.append(deaggregated)
        md5_s.append(digested)
    print(json.dumps({
        "impl": "python", "api": args.api, "workload": args.workload, "records": len(records),
        "user_bytes": user_bytes, "max_size": args.max_size, "aggregates": summary[0],
        "aggregate_bytes": summary[1], "aggregate_secs": agg_s, "deaggregate_secs": deagg_s,
        "md5_secs": md5_s,
    }))


def verify(args):
    records = read_workload(args.workload)
    aggregates = read_aggregates(args.aggregates)
    got = [(r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"]),
            r["kinesis"].get("aggregated"))
           for r in iter_deaggregate_records(as_boto3_records(aggregates), data_format="Boto3")]
    if len(got) != len(records):
        sys.exit("verify: %d user records, workload has %d" % (len(got), len(records)))
    for i, ((key, data), (gkey, gdata, aggregated)) in enumerate(zip(records, got)):
        if not aggregated or key != gkey or data != gdata:
            sys.exit("verify: record %d differs from the workload" % i)
    print("ok: %s holds the %d records of %s in %d aggregates"
          % (args.aggregates, len(records), args.workload, len(aggregates)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--workload", required=True)
    p.add_argument("--max-size", type=int, default=1024 * 1024)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--api", choices=["direct", "aggregator"], default="direct")
    p.add_argument("--write-aggregates")
    p = sub.add_parser("verify")
    p.add_argument("--workload", required=True)
    p.add_argument("--aggregates", required=True)
    args = parser.parse_args()
    run(args) if args.command == "run" else verify(args)


if __name__ == "__main__":
    main()
