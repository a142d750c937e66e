//! The KPL aggregation codec (being written).
