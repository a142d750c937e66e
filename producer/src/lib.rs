//! A KPL-style producer for Amazon Kinesis Data Streams.
//!
//! Work in progress: the pure policies of the pipeline (shard map, per-shard adaptive
//! limiter) exist and are tested; the pipeline task and the public `Producer` API do not yet.

// The pipeline that uses these policies is not written yet.
#![allow(dead_code)]

mod limiter;
mod shard_map;
