//! Integration tests: real repositories built with git2 in temporary folders, fetched
//! through `file://` URLs (and one HTTP server with basic authentication, `http.rs`).

mod checkout;
mod credentials;
mod fetch;
mod http;
mod poll;
mod support;
