//! The `herald` server as a library: configuration, the command line, and the wiring that
//! turns a [`config::Config`] into a running server. The binary (`main.rs`) is a thin
//! shell over it, and the black-box tests start servers through [`app::start`].

pub mod admin_client;
pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
