//! The aws-sdk-kinesis adapter (being written).
