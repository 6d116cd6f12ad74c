//! Pruners (being written).
