//! The compression envelope (being written).
