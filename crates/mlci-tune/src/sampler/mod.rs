//! Samplers (being written).
