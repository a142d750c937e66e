#!/usr/bin/env python3
"""Turns bench/producer-vs-python.sh's JSON lines into a markdown table (medians over the
rounds) and judges the issue's target: the producer at >= 50x the user records/s of the
Python aws-kinesis-agg + boto3 path on the same stream shape.

    producer_table.py results.jsonl
"""

import json
import statistics
import sys

NAMES = {
    "python": "Python `aws-kinesis-agg` 1.2.3 + boto3 `put_records` (4 sender threads)",
    "rust": "kinesis-rs producer, default configuration (per-key order)",
    "rust-relaxed": "kinesis-rs producer, `--record-order relaxed` (the KPL's order)",
}


def cpu(runs):
    """Median CPU seconds per million user records of the client, kinesalite and the proxy."""
    def per_million(field):
        values = [r[field] * 1e6 / r["user_records"] for r in runs if r.get(field) is not None]
        return "%.1f" % statistics.median(values) if values else "?"
    return " / ".join(per_million(f) for f in ("cpu_secs", "kinesalite_cpu_secs", "proxy_cpu_secs"))


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
    print("| shards | user records per run | implementation | user records/s (median; min, max) "
          "| MiB/s of user data | Kinesis records | PutRecords calls | entries retried "
          "| CPU s per 1 M user records: client / kinesalite / proxy | vs Python |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for shards in sorted({r["shards"] for r in rows}):
        medians = {}
        for variant in NAMES:
            runs = [r for r in rows if r["shards"] == shards and r["variant"] == variant]
            if not runs:
                continue
            rates = sorted(r["user_records_per_sec"] for r in runs)
            mid = statistics.median(rates)
            medians[variant] = mid
            pick = min(runs, key=lambda r: abs(r["user_records_per_sec"] - mid))
            ratio = "%.2f×" % (mid / medians["python"]) if "python" in medians else "–"
            print("| %d | %d | %s | **%.1f k** (%.1f k, %.1f k) | %.2f | %d | %d | %d | %s | %s |" % (
                shards, pick["user_records"], NAMES[variant], mid / 1e3, rates[0] / 1e3,
                rates[-1] / 1e3, statistics.median(r["mib_per_sec"] for r in runs),
                pick["kinesis_records"], pick["put_records_requests"], pick["retried_entries"],
                cpu(runs), ratio))
        if "python" in medians:
            best = max(v for k, v in medians.items() if k != "python")
            ratio = best / medians["python"]
            verdicts.append("%d shards: best producer row %.2f× the Python path (target ≥ 50×): %s"
                            % (shards, ratio, "met" if ratio >= 50 else "NOT met"))
    print("\nTarget:\n")
    for v in verdicts:
        print("- " + v)


if __name__ == "__main__":
    main()
