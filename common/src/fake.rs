//! In-memory fakes (being written).
