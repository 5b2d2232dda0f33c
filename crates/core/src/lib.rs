//! herald's core: client sessions, the router, IQ dispatch, the module API, disco and ping.
//!
//! A stanza's path: [`c2s`] reads it from the client's socket (via `herald-stream`'s
//! framing), stamps `from`, and calls [`Server::route`]; the router looks the recipient up
//! in the [`sessions::SessionRegistry`] and pushes the stanza onto that session's bounded
//! outbound queue, or hands IQs for the server to the module registered for the payload's
//! namespace ([`module`]).

pub mod c2s;
pub mod disco;
pub mod hooks;
pub mod module;
pub mod ping;
pub mod presence;
mod router;
mod server;
pub mod sessions;

pub use server::Server;
