//! herald's core: client sessions, the router, IQ dispatch, the module API, disco and ping.
//!
//! A stanza's path: [`c2s`] reads it from the client's socket (via `herald-stream`'s
//! framing), stamps `from`, and calls [`Server::route`]; the router looks the recipient up
//! in the [`sessions::SessionRegistry`] and pushes the stanza onto that session's bounded
//! outbound queue, or hands IQs for the server to the module registered for the payload's
//! namespace ([`module`]).

mod accounts;
pub mod blocking;
pub mod c2s;
pub mod caps;
pub mod carbons;
pub mod component;
pub mod components;
pub mod config;
mod conn;
pub mod csi;
pub mod disco;
pub mod envelope;
pub mod hooks;
pub mod lanes;
pub mod mam;
pub mod memory;
pub mod metrics;
pub mod module;
pub mod offline;
pub mod outbound;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod queue;
pub mod register;
mod resume;
pub mod roster;
mod router;
pub mod s2s;
mod server;
pub mod session_state;
pub mod sessions;
pub mod sm;
mod user_data;
pub mod vcard;
pub mod version;

pub use router::Origin;
pub use server::{Server, ServerOptions};

/// A random identifier with 128 bits of entropy, URL-safe base64 (stream ids, generated
/// resources, outbound IQ ids: RFC 6120 section 4.7.3 asks for unpredictable stream ids).
pub fn random_id() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Only on a broken OS RNG; a counter still keeps ids unique.
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
