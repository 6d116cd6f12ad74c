//! `mlci-tune`: hyperparameter search.

pub mod pruner;
pub mod sampler;
