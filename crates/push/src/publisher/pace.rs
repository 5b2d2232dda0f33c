//! Pacing per registration (`pacing.*`, docs/modules/push.md "Coalescing and rate limits"):
//! a token bucket (`burst` at once, then `rate_limit` per second) and a minimum spacing
//! (`coalesce_window`). A notification that may not go yet is held; one that comes while
//! another is held replaces it (coalesced: the newest carries the latest message and the
//! unread count of all), and the held one goes as soon as the registration may be notified
//! again. Nothing is dropped: the last notification of a burst is always sent.
//!
//! Only the decision lives here (what may go now, what is held, what replaced what); the
//! publisher sends and keeps the outbox.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::{config::Pacing, metrics::RequestId, registrations::RegistrationKey, route::Route};

/// Registrations tracked before the idle ones are forgotten.
const PRUNE_ABOVE: usize = 4096;

/// A notification waiting for its registration's turn.
pub(crate) struct Held {
    pub(crate) route: Route,
    pub(crate) request: RequestId,
    /// Its row in the outbox.
    pub(crate) outbox: Option<i64>,
}

/// One registration's pace.
struct State {
    /// Tokens left (at most `burst`), as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// When the last notification went.
    last_sent: Option<Instant>,
    /// What waits for the next turn.
    held: Option<Held>,
    /// Whether a timer will send `held`.
    timer: bool,
}

/// What [`Pacer::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Send now (the turn is taken).
    Now,
    /// Hold it: hand it to [`Pacer::hold`].
    Later,
}

/// The pace of every registration notified lately.
pub(crate) struct Pacer {
    pacing: Pacing,
    states: Mutex<States>,
}

/// The registrations' paces, and how many there may be before the idle ones are forgotten
/// (doubling with what stays, so that forgetting costs a constant share of the offers).
#[derive(Default)]
struct States {
    map: HashMap<RegistrationKey, State>,
    prune_above: usize,
}

impl Pacer {
    pub(crate) fn new(pacing: Pacing) -> Pacer {
        Pacer {
            pacing,
            states: Mutex::new(States {
                map: HashMap::new(),
                prune_above: PRUNE_ABOVE,
            }),
        }
    }

    /// Whether pacing holds anything at all.
    pub(crate) fn is_off(&self) -> bool {
        self.pacing.is_off()
    }

    fn states(&self) -> std::sync::MutexGuard<'_, States> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key`'s state, made fresh if it has none (the key is cloned only then).
    fn state<'a>(
        &self,
        states: &'a mut States,
        key: &RegistrationKey,
        now: Instant,
    ) -> &'a mut State {
        if !states.map.contains_key(key) {
            if states.map.len() >= states.prune_above {
                self.prune(&mut states.map, now);
                states.prune_above = (states.map.len() * 2).max(PRUNE_ABOVE);
            }
            states.map.insert(key.clone(), self.fresh(now));
        }
        states
            .map
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// May a notification to `key` go now? If so its turn is taken.
    pub(crate) fn offer(&self, key: &RegistrationKey, now: Instant) -> Turn {
        if self.is_off() {
            return Turn::Now;
        }
        let mut states = self.states();
        let state = self.state(&mut states, key, now);
        if state.held.is_none() && self.take_turn(state, now) {
            Turn::Now
        } else {
            Turn::Later
        }
    }

    /// Hold `held` for `key`'s next turn. Returns the notification it replaces (coalesced
    /// into it), and when a timer must send it (`None` when one already will).
    pub(crate) fn hold(
        &self,
        key: &RegistrationKey,
        held: Held,
        now: Instant,
    ) -> (Option<Held>, Option<Instant>) {
        let mut states = self.states();
        let state = self.state(&mut states, key, now);
        let replaced = state.held.replace(held);
        if state.timer {
            return (replaced, None);
        }
        state.timer = true;
        (replaced, Some(self.next_turn(state, now)))
    }

    /// The timer for `key` fired: what to send now (the turn is taken), or, when the turn
    /// has not come yet, when to look again.
    pub(crate) fn due(&self, key: &RegistrationKey, now: Instant) -> Result<Option<Held>, Instant> {
        let mut states = self.states();
        let Some(state) = states.map.get_mut(key) else {
            return Ok(None);
        };
        if state.held.is_none() {
            state.timer = false;
            return Ok(None);
        }
        if self.take_turn(state, now) {
            state.timer = false;
            return Ok(state.held.take());
        }
        Err(self.next_turn(state, now))
    }

    fn fresh(&self, now: Instant) -> State {
        State {
            tokens: f64::from(self.pacing.burst.max(1)),
            refilled: now,
            last_sent: None,
            held: None,
            timer: false,
        }
    }

    fn refill(&self, state: &mut State, now: Instant) {
        if self.pacing.rate_limit == 0 {
            return;
        }
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        let burst = f64::from(self.pacing.burst.max(1));
        state.tokens = (state.tokens + elapsed * f64::from(self.pacing.rate_limit)).min(burst);
        state.refilled = now;
    }

    /// Take the turn if the window has passed and a token is left.
    fn take_turn(&self, state: &mut State, now: Instant) -> bool {
        self.refill(state, now);
        let spaced = state
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= self.pacing.coalesce_window);
        let token = self.pacing.rate_limit == 0 || state.tokens >= 1.0;
        if !(spaced && token) {
            return false;
        }
        if self.pacing.rate_limit > 0 {
            state.tokens -= 1.0;
        }
        state.last_sent = Some(now);
        true
    }

    /// When the next turn comes: the window's end and the next token, whichever is later.
    fn next_turn(&self, state: &mut State, now: Instant) -> Instant {
        self.refill(state, now);
        let window_end = state
            .last_sent
            .map_or(now, |last| last + self.pacing.coalesce_window);
        let token_at = if self.pacing.rate_limit == 0 || state.tokens >= 1.0 {
            now
        } else {
            let missing = 1.0 - state.tokens;
            now + Duration::from_secs_f64(missing / f64::from(self.pacing.rate_limit))
        };
        window_end.max(token_at).max(now)
    }

    /// Forget registrations with nothing held whose bucket is full and window passed: they
    /// would start afresh the same.
    fn prune(&self, states: &mut HashMap<RegistrationKey, State>, now: Instant) {
        let burst = f64::from(self.pacing.burst.max(1));
        let rate = self.pacing.rate_limit;
        let window = self.pacing.coalesce_window;
        states.retain(|_, state| {
            if state.held.is_some() || state.timer {
                return true;
            }
            let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
            let full = rate == 0 || state.tokens + elapsed * f64::from(rate) >= burst;
            let spaced = state
                .last_sent
                .is_none_or(|last| now.saturating_duration_since(last) >= window);
            !(full && spaced)
        });
    }
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;

    fn key() -> RegistrationKey {
        RegistrationKey {
            owner: BareJid::new("bob@example.com").unwrap(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: "n".into(),
        }
    }

    fn held(n: u64) -> Held {
        Held {
            route: Route::Xmpp(minidom::Element::bare("iq", "jabber:client")),
            request: RequestId(n),
            outbox: Some(n as i64),
        }
    }

    fn pacing(rate_limit: u32, burst: u32, window_ms: u64) -> Pacer {
        Pacer::new(Pacing {
            rate_limit,
            burst,
            coalesce_window: Duration::from_millis(window_ms),
        })
    }

    #[test]
    fn a_burst_goes_at_once_then_waits_for_tokens() {
        let pacer = pacing(5, 3, 0);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.offer(&key(), now), Turn::Now);
        }
        assert_eq!(pacer.offer(&key(), now), Turn::Later);
        let (replaced, timer) = pacer.hold(&key(), held(1), now);
        assert!(replaced.is_none());
        // One token every 200 ms.
        assert_eq!(timer, Some(now + Duration::from_millis(200)));
        assert!(pacer.due(&key(), now + Duration::from_millis(100)).is_err());
        let sent = pacer
            .due(&key(), now + Duration::from_millis(200))
            .unwrap()
            .unwrap();
        assert_eq!(sent.request, RequestId(1));
    }

    #[test]
    fn what_comes_while_one_is_held_replaces_it_and_one_timer_sends_the_last() {
        let pacer = pacing(1, 1, 0);
        let now = Instant::now();
        assert_eq!(pacer.offer(&key(), now), Turn::Now);
        let mut timers = 0;
        for n in 1..=49 {
            assert_eq!(pacer.offer(&key(), now), Turn::Later);
            let (replaced, timer) = pacer.hold(&key(), held(n), now);
            assert_eq!(
                replaced.map(|h| h.request),
                (n > 1).then(|| RequestId(n - 1))
            );
            timers += usize::from(timer.is_some());
        }
        assert_eq!(timers, 1);
        let last = pacer
            .due(&key(), now + Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(last.request, RequestId(49));
        // Nothing more is held: the timer is done.
        assert!(
            pacer
                .due(&key(), now + Duration::from_secs(2))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_window_spaces_notifications_even_with_tokens_left() {
        let pacer = pacing(0, 1, 1000);
        let now = Instant::now();
        assert_eq!(pacer.offer(&key(), now), Turn::Now);
        assert_eq!(
            pacer.offer(&key(), now + Duration::from_millis(10)),
            Turn::Later
        );
        let (_, timer) = pacer.hold(&key(), held(1), now + Duration::from_millis(10));
        assert_eq!(timer, Some(now + Duration::from_secs(1)));
        assert_eq!(
            pacer.offer(&key(), now + Duration::from_secs(5)),
            Turn::Later
        );
    }

    #[test]
    fn off_sends_everything_at_once() {
        let pacer = Pacer::new(Pacing::OFF);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(pacer.offer(&key(), now), Turn::Now);
        }
        assert!(pacer.states().map.is_empty());
    }

    #[test]
    fn idle_registrations_are_forgotten() {
        let pacer = pacing(5, 5, 0);
        let now = Instant::now();
        let mut states = pacer.states();
        for n in 0..10 {
            let mut key = key();
            key.node = format!("n{n}");
            states.map.insert(key, pacer.fresh(now));
        }
        pacer.prune(&mut states.map, now + Duration::from_secs(1));
        assert!(states.map.is_empty());
    }
}
