//! An engine that keeps registrations in memory only: for tests of the pipeline and the
//! publisher, held to the same conformance suite as the durable engines.

use std::{collections::BTreeMap, sync::Mutex};

use herald_storage::StorageError;
use herald_stream::Bare;
use jid::{BareJid, FullJid};

use super::{PendingPush, Registration, RegistrationKey, RegistrationStore};

/// Registrations in a map, gone with the process.
#[derive(Debug, Default)]
pub struct MemoryRegistrations {
    map: Mutex<BTreeMap<RegistrationKey, Registration>>,
    hibernating: Mutex<Vec<(FullJid, RegistrationKey)>>,
    outbox: Mutex<BTreeMap<i64, PendingPush>>,
}

impl MemoryRegistrations {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<RegistrationKey, Registration>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, PendingPush>> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sleepers(&self) -> std::sync::MutexGuard<'_, Vec<(FullJid, RegistrationKey)>> {
        self.hibernating
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
        self.sleepers()
            .retain(|(session, _)| !session.same_bare(owner));
        Ok(self.remove_where(|key| &key.owner == owner).len() as u64)
    }

    async fn remove_domain(&self, domain: &str) -> Result<u64, StorageError> {
        self.sleepers()
            .retain(|(session, _)| session.domain().as_str() != domain);
        Ok(self
            .remove_where(|key| key.owner.domain().as_str() == domain)
            .len() as u64)
    }

    async fn hibernating(
        &self,
        session: &FullJid,
        key: &RegistrationKey,
    ) -> Result<(), StorageError> {
        let mut sleepers = self.sleepers();
        sleepers.retain(|(known, _)| known != session);
        sleepers.push((session.clone(), key.clone()));
        Ok(())
    }

    async fn hibernation_ended(&self, session: &FullJid) -> Result<(), StorageError> {
        self.sleepers().retain(|(known, _)| known != session);
        Ok(())
    }

    async fn take_hibernating(&self) -> Result<Vec<(FullJid, RegistrationKey)>, StorageError> {
        Ok(std::mem::take(&mut *self.sleepers()))
    }

    async fn add_pending(&self, pending: &[(i64, PendingPush)]) -> Result<(), StorageError> {
        let mut rows = self.outbox();
        for (id, push) in pending {
            let duplicate = push.message.is_some()
                && rows
                    .values()
                    .any(|row| row.key == push.key && row.message == push.message);
            if !duplicate {
                rows.insert(*id, push.clone());
            }
        }
        Ok(())
    }

    async fn finish_pending(&self, ids: &[i64]) -> Result<(), StorageError> {
        let mut rows = self.outbox();
        for id in ids {
            rows.remove(id);
        }
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<(i64, PendingPush)>, StorageError> {
        let mut found: Vec<(i64, PendingPush)> = self
            .outbox()
            .iter()
            .map(|(id, push)| (*id, push.clone()))
            .collect();
        found.sort_by_key(|(id, push)| (push.created_at, *id));
        Ok(found)
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
