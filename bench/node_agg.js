#!/usr/bin/env node
// Codec driver for the awslabs Node reference, aws-kinesis-agg 4.2.8 (installed by
// bench/codec-vs-reference.sh into bench/.deps/node; NODE_PATH points there).
//
//   node_agg.js run --workload FILE [--runs 3] [--write-aggregates FILE]
//   node_agg.js verify --workload FILE --aggregates FILE
//
// run: aggregates every user record of a workload file (bench/gen_workload.py) with
// RecordAggregator.aggregateRecords(records, true, onReady), which emits an encoded record
// (magic, protobuf, MD5) whenever the next record would pass the library's fixed limit of
// 1 MiB per Kinesis record; de-aggregates each aggregate with deaggregateSync(record, true)
// (checksums computed, as the other drivers do); takes crypto's MD5 of every aggregate. One
// warm-up run, then --runs timed runs; prints one JSON line.
//
// De-aggregation input: the v2 record shape { data, partitionKey, sequenceNumber } with the
// aggregate as a Buffer (the library reads it with Buffer.from(data, 'base64'), which copies a
// Buffer as it is), so no base64 decoding is timed; the library base64-encodes each user
// record's data on the way out, which is its API.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const agg = require('aws-kinesis-agg');

const SEQUENCE_NUMBER = '49590338271490256608559692538361571095921575989136588898';

function parseArgs(argv) {
  const args = { command: argv[0], runs: 3 };
  for (let i = 1; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[name] = argv[i + 1];
  }
  args.runs = Number(args.runs);
  return args;
}

function readWorkload(path) {
  const blob = fs.readFileSync(path);
  if (blob.subarray(0, 4).toString('latin1') !== 'KBW1') throw new Error(`${path}: not a workload file`);
  const count = blob.readUInt32LE(4);
  let at = 8;
  const records = new Array(count);
  for (let i = 0; i < count; i++) {
    const keyLen = blob.readUInt16LE(at);
    at += 2;
    const partitionKey = blob.toString('utf8', at, at + keyLen);
    at += keyLen;
    const dataLen = blob.readUInt32LE(at);
    at += 4;
    records[i] = { partitionKey, data: blob.subarray(at, at + dataLen) };
    at += dataLen;
  }
  return records;
}

function readAggregates(path) {
  const blob = fs.readFileSync(path);
  if (blob.subarray(0, 4).toString('latin1') !== 'KBA1') throw new Error(`${path}: not an aggregates file`);
  const count = blob.readUInt32LE(4);
  let at = 8;
  const out = [];
  for (let i = 0; i < count; i++) {
    const n = blob.readUInt32LE(at);
    at += 4;
    out.push(blob.subarray(at, at + n));
    at += n;
  }
  return out;
}

function writeAggregates(path, aggregates) {
  const head = Buffer.alloc(8);
  head.write('KBA1', 0, 'latin1');
  head.writeUInt32LE(aggregates.length, 4);
  const parts = [head];
  for (const a of aggregates) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(a.length, 0);
    parts.push(len, a);
  }
  fs.writeFileSync(path, Buffer.concat(parts));
}

function aggregate(records) {
  const out = [];
  const aggregator = new agg.RecordAggregator();
  aggregator.aggregateRecords(records, true, (err, encoded) => {
    if (err) throw err;
    out.push(encoded.data);
  });
  return out;
}

function asKinesisRecords(aggregates) {
  return aggregates.map((data) => ({ data, partitionKey: 'a', sequenceNumber: SEQUENCE_NUMBER }));
}

// Calls `each(userRecord)` for every user record; throws on any error.
function deaggregateAll(inputs, each) {
  for (const input of inputs) {
    agg.deaggregateSync(input, true, (err, userRecords) => {
      if (err) throw err;
      for (const r of userRecords) each(r);
    });
  }
}

function seconds(started) {
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function run(args) {
  const records = readWorkload(args.workload);
  const userBytes = records.reduce((n, r) => n + r.data.length, 0);
  const aggSecs = [];
  const deaggSecs = [];
  const md5Secs = [];
  let summary;
  for (let runNo = 0; runNo <= args.runs; runNo++) {
    let started = process.hrtime.bigint();
    const aggregates = aggregate(records);
    const aggregated = seconds(started);

    const inputs = asKinesisRecords(aggregates);
    let found = 0;
    started = process.hrtime.bigint();
    deaggregateAll(inputs, (r) => {
      if (r.subSequenceNumber === undefined) throw new Error('an aggregate was not recognised');
      found++;
    });
    const deaggregated = seconds(started);
    if (found !== records.length) throw new Error(`de-aggregated ${found} of ${records.length} records`);

    started = process.hrtime.bigint();
    for (const a of aggregates) crypto.createHash('md5').update(a).digest();
    const digested = seconds(started);

    if (runNo === 0) {
      if (args.writeAggregates) writeAggregates(args.writeAggregates, aggregates);
      summary = [aggregates.length, aggregates.reduce((n, a) => n + a.length, 0)];
      continue;
    }
    aggSecs.push(aggregated);
    deaggSecs.push(deaggregated);
    md5Secs.push(digested);
  }
  console.log(JSON.stringify({
    impl: 'node', workload: args.workload, records: records.length, user_bytes: userBytes,
    max_size: 1024 * 1024, aggregates: summary[0], aggregate_bytes: summary[1],
    aggregate_secs: aggSecs, deaggregate_secs: deaggSecs, md5_secs: md5Secs,
  }));
}

function verify(args) {
  const records = readWorkload(args.workload);
  const aggregates = readAggregates(args.aggregates);
  let i = 0;
  deaggregateAll(asKinesisRecords(aggregates), (r) => {
    const want = records[i];
    if (!want || r.subSequenceNumber === undefined || r.partitionKey !== want.partitionKey
        || !Buffer.from(r.data, 'base64').equals(want.data)) {
      throw new Error(`verify: record ${i} differs from the workload`);
    }
    i++;
  });
  if (i !== records.length) throw new Error(`verify: ${i} user records, workload has ${records.length}`);
  console.log(`ok: ${args.aggregates} holds the ${records.length} records of ${args.workload} in ${aggregates.length} aggregates`);
}

const args = parseArgs(process.argv.slice(2));
if (args.command === 'run') run(args);
else if (args.command === 'verify') verify(args);
else {
  console.error('usage: node_agg.js run|verify --workload FILE [...]');
  process.exit(2);
}
