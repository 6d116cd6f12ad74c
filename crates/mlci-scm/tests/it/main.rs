//! Integration tests: real repositories built with git2 in temporary folders, fetched
//! through `file://` URLs (and one HTTP server with basic authentication, `http.rs`).
#![allow(clippy::disallowed_methods)] // tests read their own switches (the rule is for src)

mod checkout;
mod credentials;
mod fetch;
mod http;
mod poll;
mod support;
