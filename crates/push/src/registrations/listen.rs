//! Keeping a cache of PostgreSQL's registrations true while other servers write them: the
//! database tells every change on [`CHANNEL`] (a trigger, migration 0010), and [`listen`]
//! forgets the user told of. While it is not listening (before the first LISTEN, after a lost
//! connection) the cache is distrusted and every lookup reads the database.

use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::CachedRegistrations;

/// The channel the database tells changes on; the payload is the user's bare JID.
pub const CHANNEL: &str = "herald_push_registrations";

/// How long to wait before listening again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Listen on `pool`'s database until `shutdown`, trusting `cache` only while listening. The
/// listening connection is one of its own, beside `pool`'s (a pool of one worker would
/// otherwise have none left for queries).
pub async fn listen(pool: PgPool, cache: Arc<CachedRegistrations>, shutdown: CancellationToken) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    run(&own, &cache, &shutdown).await;
    cache.distrust();
    own.close().await;
}

/// The listening loop on `pool` (the listener's own, closed only after this returns: it ends
/// with `shutdown` alone).
async fn run(pool: &PgPool, cache: &CachedRegistrations, shutdown: &CancellationToken) {
    loop {
        let listened = tokio::select! {
            () = shutdown.cancelled() => return,
            listened = subscribe(pool) => listened,
        };
        let mut listener = match listened {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen to push registration changes; reading them from the database");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        cache.trust();
        tracing::debug!(channel = CHANNEL, "listening to push registration changes");
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => match BareJid::new(notification.payload()) {
                    Ok(owner) => cache.forget(&owner),
                    Err(_) => cache.forget_all(),
                },
                Ok(None) => {
                    cache.distrust();
                    tracing::warn!(
                        "lost the connection that listens to push registration changes; listening again"
                    );
                    break;
                }
                Err(error) => {
                    cache.distrust();
                    tracing::warn!(%error, "listening to push registration changes failed; listening again");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => break,
                    }
                }
            }
        }
    }
}

/// A listener on [`CHANNEL`], subscribed: from its return on, every change is told to it.
async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported at once (`Ok(None)`), and this module listens again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
