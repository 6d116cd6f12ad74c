//! mlci-store (being written).
