//! An engine that keeps registrations in memory only: for tests of the pipeline and the
//! publisher, held to the same conformance suite as the durable engines.

use std::{collections::BTreeMap, sync::Mutex};

use herald_storage::StorageError;
use jid::BareJid;

use super::{Registration, RegistrationKey, RegistrationStore};

/// Registrations in a map, gone with the process.
#[derive(Debug, Default)]
pub struct MemoryRegistrations {
    map: Mutex<BTreeMap<RegistrationKey, Registration>>,
}

impl MemoryRegistrations {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<RegistrationKey, Registration>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove_where(
        &self,
        mut remove: impl FnMut(&RegistrationKey) -> bool,
    ) -> Vec<RegistrationKey> {
        let mut map = self.map();
        let keys: Vec<RegistrationKey> = map.keys().filter(|key| remove(key)).cloned().collect();
        for key in &keys {
            map.remove(key);
        }
        keys
    }
}

#[async_trait::async_trait]
impl RegistrationStore for MemoryRegistrations {
    async fn enable(&self, registration: &Registration) -> Result<(), StorageError> {
        self.map()
            .insert(registration.key.clone(), registration.clone());
        Ok(())
    }

    async fn disable(&self, key: &RegistrationKey) -> Result<bool, StorageError> {
        Ok(self.map().remove(key).is_some())
    }

    async fn disable_all(
        &self,
        owner: &BareJid,
        pubsub: &BareJid,
    ) -> Result<Vec<RegistrationKey>, StorageError> {
        Ok(self.remove_where(|key| &key.owner == owner && &key.pubsub == pubsub))
    }

    async fn list(&self, owner: &BareJid) -> Result<Vec<Registration>, StorageError> {
        let mut found: Vec<Registration> = self
            .map()
            .values()
            .filter(|registration| &registration.key.owner == owner)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        Ok(found)
    }

    async fn remove_user(&self, owner: &BareJid) -> Result<u64, StorageError> {
        Ok(self.remove_where(|key| &key.owner == owner).len() as u64)
    }

    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
        Ok(self
            .remove_where(|key| key.owner.domain().as_str() == domain)
            .len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::registrations::conformance::registration_store_conformance_tests;
    registration_store_conformance_tests!(open);

    async fn open() -> (
        (),
        std::sync::Arc<dyn crate::registrations::RegistrationStore>,
    ) {
        (
            (),
            std::sync::Arc::new(super::MemoryRegistrations::default()),
        )
    }
}
