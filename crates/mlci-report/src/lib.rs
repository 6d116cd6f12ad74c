//! mlci-report (being written).
