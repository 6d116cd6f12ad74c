//! Trials as Docker Swarm services (multi-host). Being written.
