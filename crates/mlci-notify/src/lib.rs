//! mlci-notify (being written).
