//! A read-through cache of each user's registrations in front of another store, for the
//! embedded engine: every message to an offline user asks for the recipient's registrations,
//! and they change only when the user enables or disables push.
//!
//! Writes go to the store first, then drop the user's entry. A lookup that missed fills the
//! entry only if no write happened while it read (a generation counter), so a fill can never
//! put back what a concurrent write replaced. Entries live at most [`CachedRegistrations::ttl`]
//! so that a change made by another process on the same file (`herald user remove` while the
//! server runs) is seen within that time.
//!
//! On PostgreSQL, which several servers share, the cache starts untrusted (every lookup reads
//! the database) and [`listen`](super::listen) trusts it while it listens to the database's
//! notifications of changes (migration 0010): each forgets the user changed, and a lost
//! connection distrusts the cache until it listens again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use herald_storage::StorageError;
use jid::BareJid;
use tokio::time::Instant;

use super::{Registration, RegistrationKey, RegistrationStore};

/// How long an entry is trusted by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// How many users' entries are kept by default; when full, the cache starts over.
pub const DEFAULT_CAPACITY: usize = 100_000;

struct Entry {
    registrations: Vec<Registration>,
    loaded: Instant,
}

/// The cache; see the module documentation.
pub struct CachedRegistrations {
    inner: Arc<dyn RegistrationStore>,
    entries: Mutex<HashMap<BareJid, Entry>>,
    generation: AtomicU64,
    /// Whether entries may be used and filled (see [`CachedRegistrations::untrusted`]).
    trusted: AtomicBool,
    ttl: Duration,
    capacity: usize,
}

impl CachedRegistrations {
    /// A cache over `inner` with the default time to live and capacity.
    pub fn new(inner: Arc<dyn RegistrationStore>) -> CachedRegistrations {
        CachedRegistrations::with_limits(inner, DEFAULT_TTL, DEFAULT_CAPACITY)
    }

    /// A cache over `inner` whose entries live at most `ttl`, for at most `capacity` users.
    pub fn with_limits(
        inner: Arc<dyn RegistrationStore>,
        ttl: Duration,
        capacity: usize,
    ) -> CachedRegistrations {
        CachedRegistrations {
            inner,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            trusted: AtomicBool::new(true),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// A cache over `inner` (default time to live and capacity) that reads through, keeping
    /// nothing, until [`trust`]ed: for a database other servers write, whose changes this
    /// cache hears of only while it listens.
    ///
    /// [`trust`]: CachedRegistrations::trust
    pub fn untrusted(inner: Arc<dyn RegistrationStore>) -> CachedRegistrations {
        let cache = CachedRegistrations::new(inner);
        cache.trusted.store(false, Ordering::Release);
        cache
    }

    /// Use and fill entries from now on (every change from now on will be told through
    /// [`forget`](CachedRegistrations::forget)); lookups in flight do not fill.
    pub fn trust(&self) {
        self.invalidate(|entries| entries.clear());
        self.trusted.store(true, Ordering::Release);
    }

    /// Read through from now on, keeping nothing: changes may go untold.
    pub fn distrust(&self) {
        self.trusted.store(false, Ordering::Release);
        self.invalidate(|entries| entries.clear());
    }

    /// Whether entries are used (see [`CachedRegistrations::untrusted`]).
    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Forget `owner`'s entry: another server changed their registrations.
    pub fn forget(&self, owner: &BareJid) {
        self.invalidate(|entries| {
            entries.remove(owner);
        });
    }

    /// Forget every entry.
    pub fn forget_all(&self) {
        self.invalidate(|entries| entries.clear());
    }

    /// How long an entry is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<BareJid, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After a write: lookups in flight must not fill, and `forget` loses its entries.
    fn invalidate(&self, forget: impl FnOnce(&mut HashMap<BareJid, Entry>)) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        forget(&mut entries);
    }
}

#[async_trait::async_trait]
impl RegistrationStore for CachedRegistrations {
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
        let result = self.inner.enable(registration).await;
        self.invalidate(|entries| {
            entries.remove(&registration.key.owner);
        });
        result
    }

    async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError> {
        let result = self.inner.disable(key).await;
        self.invalidate(|entries| {
            entries.remove(&key.owner);
        });
        result
    }

    async fn disable_all(
        &self,
        owner: &BareJid,
        pubsub: &BareJid,
    ) -> Result<Vec<RegistrationKey>, StorageError> {
        let result = self.inner.disable_all(owner, pubsub).await;
        self.invalidate(|entries| {
            entries.remove(owner);
        });
        result
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError> {
        if !self.trusted.load(Ordering::Acquire) {
            return self.inner.list(owner).await;
        }
        let generation = {
            let entries = self.entries();
            if let Some(entry) = entries.get(owner)
                && entry.loaded.elapsed() < self.ttl
            {
                return Ok(entry.registrations.clone());
            }
            self.generation.load(Ordering::Acquire)
        };
        let registrations = self.inner.list(owner).await?;
        let mut entries = self.entries();
        if self.generation.load(Ordering::Acquire) == generation
            && self.trusted.load(Ordering::Acquire)
        {
            if entries.len() >= self.capacity && !entries.contains_key(owner) {
                entries.clear();
            }
            entries.insert(
                owner.clone(),
                Entry {
                    registrations: registrations.clone(),
                    loaded: Instant::now(),
                },
            );
        }
        Ok(registrations)
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
        let result = self.inner.remove_user(owner).await;
        self.invalidate(|entries| {
            entries.remove(owner);
        });
        result
    }

    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
        let result = self.inner.remove_domain(domain).await;
        self.invalidate(|entries| entries.retain(|owner, _| owner.domain().as_str() != domain));
        result
    }

    async fn hibernating(
        &self,
        session: &jid::FullJid,
        key: &RegistrationKey,
    ) -> Result<(), StorageError> {
        self.inner.hibernating(session, key).await
    }

    async fn hibernation_ended(&self, session: &jid::FullJid) -> Result<(), StorageError> {
        self.inner.hibernation_ended(session).await
    }

    async fn take_hibernating(&self) -> Result<Vec<(jid::FullJid, RegistrationKey)>, StorageError> {
        self.inner.take_hibernating().await
    }

    async fn add_pending(&self, pending: &[(i64, super::PendingPush)]) -> Result<(), StorageError> {
        self.inner.add_pending(pending).await
    }

    async fn finish_pending(&self, ids: &[i64]) -> Result<(), StorageError> {
        self.inner.finish_pending(ids).await
    }

    async fn pending(&self) -> Result<Vec<(i64, super::PendingPush)>, StorageError> {
        self.inner.pending().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registrations::MemoryRegistrations;

    mod over_memory {
        use crate::registrations::conformance::registration_store_conformance_tests;
        registration_store_conformance_tests!(open);

        async fn open() -> (
            (),
            std::sync::Arc<dyn crate::registrations::RegistrationStore>,
        ) {
            let inner = std::sync::Arc::new(crate::registrations::MemoryRegistrations::default());
            (
                (),
                std::sync::Arc::new(super::super::CachedRegistrations::new(inner)),
            )
        }
    }

    mod over_sqlite {
        use crate::registrations::conformance::registration_store_conformance_tests;
        registration_store_conformance_tests!(open);

        async fn open() -> (
            herald_storage::Storage,
            std::sync::Arc<dyn crate::registrations::RegistrationStore>,
        ) {
            let (storage, inner) = crate::registrations::sqlite::tests::in_memory().await;
            (
                storage,
                std::sync::Arc::new(super::super::CachedRegistrations::new(inner)),
            )
        }
    }

    fn registration(owner: &str, node: &str) -> Registration {
        Registration::new(
            RegistrationKey {
                owner: BareJid::new(owner).unwrap(),
                pubsub: BareJid::new("push.example.com").unwrap(),
                node: node.into(),
            },
            Default::default(),
        )
    }

    fn nodes(registrations: Vec<Registration>) -> Vec<String> {
        registrations.into_iter().map(|r| r.key.node).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_behind_the_caches_back_is_seen_after_the_ttl() {
        let inner = Arc::new(MemoryRegistrations::default());
        let cache = CachedRegistrations::with_limits(inner.clone(), Duration::from_secs(30), 10);
        let alice = BareJid::new("alice@example.com").unwrap();
        cache
            .enable(&registration("alice@example.com", "n1"))
            .await
            .unwrap();
        assert_eq!(nodes(cache.list(&alice).await.unwrap()), ["n1"]);
        // Another process removes the registration from the file.
        inner.remove_user(&alice).await.unwrap();
        assert_eq!(nodes(cache.list(&alice).await.unwrap()), ["n1"], "cached");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(cache.list(&alice).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn writes_through_the_cache_are_seen_at_once() {
        let inner = Arc::new(MemoryRegistrations::default());
        let cache = CachedRegistrations::new(inner);
        let alice = BareJid::new("alice@example.com").unwrap();
        assert!(cache.list(&alice).await.unwrap().is_empty());
        cache
            .enable(&registration("alice@example.com", "n1"))
            .await
            .unwrap();
        assert_eq!(nodes(cache.list(&alice).await.unwrap()), ["n1"]);
        cache
            .disable(&registration("alice@example.com", "n1").key)
            .await
            .unwrap();
        assert!(cache.list(&alice).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_full_cache_starts_over_instead_of_growing() {
        let inner = Arc::new(MemoryRegistrations::default());
        let cache = CachedRegistrations::with_limits(inner, DEFAULT_TTL, 3);
        for user in 0..10 {
            let owner = BareJid::new(&format!("u{user}@example.com")).unwrap();
            cache.list(&owner).await.unwrap();
            assert!(cache.entries().len() <= 3);
        }
    }

    /// A store whose `list` waits until released, to interleave a write with a lookup.
    struct Gated {
        inner: MemoryRegistrations,
        gate: tokio::sync::Notify,
        listing: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl RegistrationStore for Gated {
        async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
            self.inner.enable(registration).await
        }
        async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError> {
            self.inner.disable(key).await
        }
        async fn disable_all(
            &self,
            owner: &BareJid,
            pubsub: &BareJid,
        ) -> Result<Vec<RegistrationKey>, StorageError> {
            self.inner.disable_all(owner, pubsub).await
        }
        async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError> {
            let read = self.inner.list(owner).await;
            self.listing.notify_one();
            self.gate.notified().await;
            read
        }
        async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
            self.inner.remove_user(owner).await
        }
        async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
            self.inner.remove_domain(domain).await
        }
    }

    #[tokio::test]
    async fn a_lookup_overtaken_by_a_write_does_not_cache_its_stale_read() {
        let gated = Arc::new(Gated {
            inner: MemoryRegistrations::default(),
            gate: tokio::sync::Notify::new(),
            listing: tokio::sync::Notify::new(),
        });
        let cache = Arc::new(CachedRegistrations::new(gated.clone()));
        let alice = BareJid::new("alice@example.com").unwrap();
        // A lookup reads "nothing", then stalls before filling the cache.
        let lookup = {
            let (cache, alice) = (cache.clone(), alice.clone());
            tokio::spawn(async move { cache.list(&alice).await.unwrap() })
        };
        gated.listing.notified().await;
        // Meanwhile alice enables push.
        cache
            .enable(&registration("alice@example.com", "n1"))
            .await
            .unwrap();
        gated.gate.notify_one();
        assert!(
            lookup.await.unwrap().is_empty(),
            "the lookup read before the write"
        );
        // The stale read was not cached: the next lookup reads the store again.
        let next = {
            let (cache, alice) = (cache.clone(), alice.clone());
            tokio::spawn(async move { cache.list(&alice).await.unwrap() })
        };
        gated.listing.notified().await;
        gated.gate.notify_one();
        assert_eq!(nodes(next.await.unwrap()), ["n1"]);
    }
}
