//! A KCL-style consumer for Amazon Kinesis Data Streams (work in progress: see the README status).
