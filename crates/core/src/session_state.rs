//! Per-session state that modules keep on a session: one value per type, created on first
//! use and dropped with the session. Presence keeps the recipients of directed presence
//! here, the roster whether the session asked for the roster, the push module the
//! registration enabled in the session; carbons and client state will keep theirs.
//!
//! The session registry knows nothing of these types: a module defines its own (usually
//! private) type and reaches it through [`SessionState::get_or_default`].

use std::{
    any::{Any, TypeId},
    fmt,
    sync::{Arc, Mutex},
};

/// The state modules keep on one session.
#[derive(Default)]
pub struct SessionState {
    slots: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.slots().len();
        f.debug_struct("SessionState")
            .field("slots", &count)
            .finish()
    }
}

impl SessionState {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<(TypeId, Arc<dyn Any + Send + Sync>)>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of type `T`, if one was set.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let slots = self.slots();
        let (_, value) = slots.iter().find(|(id, _)| *id == TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    /// The value of type `T`, created with its default on first use.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut slots = self.slots();
        if let Some((_, value)) = slots.iter().find(|(id, _)| *id == TypeId::of::<T>())
            && let Ok(value) = Arc::clone(value).downcast::<T>()
        {
            return value;
        }
        let value = Arc::new(T::default());
        slots.push((
            TypeId::of::<T>(),
            Arc::clone(&value) as Arc<dyn Any + Send + Sync>,
        ));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counter(AtomicU32);

    #[derive(Default)]
    struct Other(AtomicU32);

    #[test]
    fn each_type_has_one_value_created_on_first_use() {
        let state = SessionState::default();
        assert!(state.get::<Counter>().is_none());
        state
            .get_or_default::<Counter>()
            .0
            .fetch_add(1, Ordering::Relaxed);
        state
            .get_or_default::<Counter>()
            .0
            .fetch_add(1, Ordering::Relaxed);
        state
            .get_or_default::<Other>()
            .0
            .fetch_add(5, Ordering::Relaxed);
        assert_eq!(state.get::<Counter>().unwrap().0.load(Ordering::Relaxed), 2);
        assert_eq!(state.get::<Other>().unwrap().0.load(Ordering::Relaxed), 5);
    }
}
