//! A KPL-style producer for Amazon Kinesis Data Streams (work in progress: see the README status).
