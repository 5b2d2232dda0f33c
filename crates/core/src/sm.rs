//! Stream management (XEP-0198): the counters, the unacknowledged buffer and the settings.
//!
//! This is the pure state of one session's stream management, with no I/O; the session loop
//! in [`crate::c2s`] feeds it what it sends and receives. Counters are 32-bit and wrap around
//! (XEP-0198 section 4: "h" is an unsigned 32-bit integer that wraps to zero).

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use minidom::Element;

use crate::{
    config::{self, Integer, Invalid, KeyPath, Section},
    envelope::{Envelope, Meta},
};

/// The XEP-0198 namespace.
pub const NS: &str = herald_stream::ns::SM;

/// `[modules.mod_stream_management]` (MongooseIM's option names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmSettings {
    /// `buffer_max`: most unacknowledged stanzas kept; `None` is unlimited ("infinity").
    pub buffer_max: Option<usize>,
    /// `ack_freq`: ask for an ack after this many stanzas; `None` never asks ("never").
    pub ack_freq: Option<u32>,
    /// `resume_timeout`: how long a resumable session waits for its client.
    pub resume_timeout: Duration,
    /// `stale_h`: remember the last `h` of ended sessions for late resumption attempts.
    pub stale_h: Option<StaleH>,
    /// `ack_timeout` (ejabberd's name): a client that leaves an ack request unanswered this
    /// long is taken for gone (a phone out of coverage); its session waits for resumption
    /// or ends, and what it had not acknowledged is pushed and kept. `None` never times out.
    pub ack_timeout: Option<Duration>,
    /// `max_ack_delay` (Prosody's `smacks_max_ack_delay`): a message the client leaves
    /// unacknowledged this long, its connection still up (a phone whose app was suspended
    /// with its socket open), is offered to the push module once
    /// ([`crate::hooks::UnackedCause::AckDelayed`]). `None` ("infinity") never.
    pub max_ack_delay: Option<Duration>,
}

impl SmSettings {
    /// `max_ack_delay` when the file does not set it: 10 seconds, or half of `ack_timeout`
    /// when that is shorter (the push goes out before the connection is taken for gone).
    pub fn default_max_ack_delay(ack_timeout: Option<Duration>) -> Option<Duration> {
        let ten = Duration::from_secs(10);
        Some(ack_timeout.map_or(ten, |timeout| ten.min(timeout / 2)))
    }
}

impl Default for SmSettings {
    fn default() -> Self {
        SmSettings {
            buffer_max: Some(100),
            ack_freq: Some(1),
            resume_timeout: Duration::from_secs(600),
            stale_h: None,
            ack_timeout: Some(Duration::from_secs(30)),
            max_ack_delay: Some(Duration::from_secs(10)),
        }
    }
}

/// `stale_h.*`: how long the `h` of an ended session is remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleH {
    /// `stale_h.repeat_after`: how often expired entries are swept.
    pub repeat_after: Duration,
    /// `stale_h.geriatric`: how long an entry lives.
    pub geriatric: Duration,
}

/// `[modules.mod_stream_management]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawStreamManagement {
    /// An integer, or "infinity".
    pub buffer_max: Option<toml::Value>,
    /// An integer, or "never".
    pub ack_freq: Option<toml::Value>,
    /// Seconds.
    pub resume_timeout: Option<Integer>,
    /// `stale_h.*`.
    pub stale_h: Option<RawStaleH>,
    /// Seconds, or "infinity".
    pub ack_timeout: Option<toml::Value>,
    /// Seconds, or "infinity".
    pub max_ack_delay: Option<toml::Value>,
}

/// `[modules.mod_stream_management.stale_h]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawStaleH {
    /// Whether the `h` of ended sessions is kept (default false).
    pub enabled: Option<bool>,
    /// Seconds (default 1800).
    pub repeat_after: Option<Integer>,
    /// Seconds (default 3600).
    pub geriatric: Option<Integer>,
}

impl Section for SmSettings {
    type Raw = RawStreamManagement;

    fn from_raw(raw: RawStreamManagement, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = SmSettings::default();
        let buffer_max = match raw.buffer_max {
            Some(value) => config::integer_or(value, "infinity", 1, &at.key("buffer_max"))?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            None => defaults.buffer_max,
        };
        let ack_freq = match raw.ack_freq {
            Some(value) => config::integer_or(value, "never", 1, &at.key("ack_freq"))?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            None => defaults.ack_freq,
        };
        let seconds = "at least 1 (seconds)";
        let resume_timeout = match raw.resume_timeout {
            Some(n) => Duration::from_secs(config::integer(
                n,
                1u64,
                seconds,
                &at.key("resume_timeout"),
            )?),
            None => defaults.resume_timeout,
        };
        let stale_h = match raw.stale_h {
            Some(stale) if stale.enabled.unwrap_or(false) => {
                let stale_at = at.key("stale_h");
                let repeat_after = match stale.repeat_after {
                    Some(n) => config::integer(n, 1u64, seconds, &stale_at.key("repeat_after"))?,
                    None => 1800,
                };
                let geriatric = match stale.geriatric {
                    Some(n) => config::integer(n, 1u64, seconds, &stale_at.key("geriatric"))?,
                    None => 3600,
                };
                Some(StaleH {
                    repeat_after: Duration::from_secs(repeat_after),
                    geriatric: Duration::from_secs(geriatric),
                })
            }
            _ => None,
        };
        let ack_timeout = match raw.ack_timeout {
            Some(value) => config::integer_or(value, "infinity", 1, &at.key("ack_timeout"))?
                .map(Duration::from_secs),
            None => defaults.ack_timeout,
        };
        let max_ack_delay = match raw.max_ack_delay {
            Some(value) => {
                let at = at.key("max_ack_delay");
                let delay = config::integer_or(value, "infinity", 1, &at)?.map(Duration::from_secs);
                if let (Some(delay), Some(timeout)) = (delay, ack_timeout)
                    && delay >= timeout
                {
                    return Err(Invalid::new(
                        at,
                        format!(
                            "{} is not shorter than ack_timeout ({} s); expected fewer seconds, \
                             or \"infinity\"",
                            delay.as_secs(),
                            timeout.as_secs()
                        ),
                    ));
                }
                delay
            }
            None => SmSettings::default_max_ack_delay(ack_timeout),
        };
        Ok(SmSettings {
            buffer_max,
            ack_freq,
            resume_timeout,
            stale_h,
            ack_timeout,
            max_ack_delay,
        })
    }
}

/// The XEP-0198 elements the server sends, built as typed elements (xmpp-parsers' `sm`).
pub mod reply {
    use minidom::Element;
    use xmpp_parsers::{
        sm::{A, Enabled, Failed, R, Resumed, StreamId},
        stanza_error::DefinedCondition,
    };

    /// `<enabled/>`, with the resumption id and the longest wait (seconds) when resumption
    /// is granted (XEP-0198 section 3).
    pub fn enabled(resumption: Option<(&str, u32)>) -> Element {
        Enabled {
            id: resumption.map(|(id, _)| StreamId(id.to_owned())),
            location: None,
            max: resumption.map(|(_, max)| max),
            resume: resumption.is_some(),
        }
        .into()
    }

    /// `<a h='…'/>`: the stanzas handled (XEP-0198 section 4).
    pub fn ack(h: u32) -> Element {
        A::new(h).into()
    }

    /// `<r/>`: a request for an ack.
    pub fn request() -> Element {
        R.into()
    }

    /// `<resumed/>` (XEP-0198 section 5).
    pub fn resumed(previd: &str, h: u32) -> Element {
        Resumed {
            h,
            previd: StreamId(previd.to_owned()),
        }
        .into()
    }

    /// `<failed/>` with a stanza error condition, and `h` when known.
    pub fn failed(condition: DefinedCondition, h: Option<u32>) -> Element {
        Failed {
            h,
            error: Some(condition),
        }
        .into()
    }
}

/// Why stream management ends the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmError {
    /// More unacknowledged stanzas than `buffer_max` (closed with policy-violation).
    BufferOverflow,
    /// The client acknowledged stanzas it was never sent (XEP-0198 section 4,
    /// `<handled-count-too-high/>`).
    HandledCountTooHigh {
        /// What the client claimed.
        h: u32,
        /// How many stanzas were sent.
        sent: u32,
    },
}

/// A stanza sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// The stanza as written.
    pub stanza: Element,
    /// What modules recorded about it, on the way here or since (the push module records
    /// the registrations it notified while the session waited).
    pub meta: Meta,
    /// When it was written: the original time of a message that later moves to offline
    /// storage (its XEP-0203 `<delay/>` stamp).
    pub sent_at: SystemTime,
    /// The offline-storage id of a stored message being delivered: it is removed from
    /// storage once acknowledged, and stays there if it never is.
    pub offline_id: Option<i64>,
    /// When it was written, for `max_ack_delay`.
    pub written: Instant,
    /// Whether it was offered as [`crate::hooks::UnackedCause::AckDelayed`] already (set at
    /// once for what is not a message).
    pub delay_raised: bool,
}

/// One session's stream-management state.
#[derive(Debug)]
pub struct Sm {
    /// The resumption id, when resumption was enabled.
    pub id: Option<String>,
    handled: u32,
    sent: u32,
    acked: u32,
    unacked: VecDeque<Unacked>,
    since_request: u32,
    buffer_max: Option<usize>,
    ack_freq: Option<u32>,
}

/// Whether a first-level element counts as a stanza for the counters (XEP-0198 section 4:
/// only message, presence and iq).
pub fn is_stanza(element: &Element) -> bool {
    matches!(element.name(), "message" | "presence" | "iq")
        && element.has_ns(herald_stream::ns::CLIENT)
}

impl Sm {
    /// Enabled state, with a resumption id if resumption was granted.
    pub fn new(settings: &SmSettings, id: Option<String>) -> Sm {
        Sm {
            id,
            handled: 0,
            sent: 0,
            acked: 0,
            unacked: VecDeque::new(),
            since_request: 0,
            buffer_max: settings.buffer_max,
            ack_freq: settings.ack_freq,
        }
    }

    /// The `h` to report: stanzas handled from the client.
    pub fn handled(&self) -> u32 {
        self.handled
    }

    /// A stanza arrived from the client.
    pub fn received(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// A stanza is being sent; it stays in the buffer until acknowledged. Returns whether an
    /// ack should be requested now.
    pub fn sent(&mut self, stanza: &Element) -> Result<bool, SmError> {
        self.sent_stored(Envelope::new(stanza.clone()), None)
    }

    /// [`Sm::sent`] for an envelope (with the offline-storage id of a stored message). The
    /// buffer keeps it even when this overflows the buffer (the session then ends and routes
    /// it again); [`Sm::last_sent`] is what to write.
    pub fn sent_stored(
        &mut self,
        envelope: Envelope,
        offline_id: Option<i64>,
    ) -> Result<bool, SmError> {
        self.sent = self.sent.wrapping_add(1);
        let delay_raised = envelope.stanza.name() != "message";
        self.unacked.push_back(Unacked {
            stanza: envelope.stanza,
            meta: envelope.meta,
            sent_at: SystemTime::now(),
            offline_id,
            written: Instant::now(),
            delay_raised,
        });
        if self.buffer_max.is_some_and(|max| self.unacked.len() > max) {
            return Err(SmError::BufferOverflow);
        }
        self.since_request += 1;
        match self.ack_freq {
            Some(freq) if self.since_request >= freq => {
                self.since_request = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The client acknowledged everything up to `h`; returns the offline-storage ids of the
    /// stored messages this acknowledges (they can now be removed from storage).
    pub fn acked(&mut self, h: u32) -> Result<Vec<i64>, SmError> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(SmError::HandledCountTooHigh { h, sent: self.sent });
        }
        let delivered = self
            .unacked
            .drain(..newly)
            .filter_map(|unacked| unacked.offline_id)
            .collect();
        self.acked = h;
        Ok(delivered)
    }

    /// How many stanzas wait for an acknowledgement.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// How many more stanzas fit under `buffer_max`; `None` without a limit.
    pub fn room(&self) -> Option<usize> {
        self.buffer_max
            .map(|max| max.saturating_sub(self.unacked.len()))
    }

    /// Whether the buffer holds `buffer_max` stanzas: nothing more should be written until
    /// the client acknowledges some (XEP-0198 pacing; the limit is never overrun by delivery).
    pub fn window_full(&self) -> bool {
        self.buffer_max.is_some_and(|max| self.unacked.len() >= max)
    }

    /// The unacknowledged stanzas, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Unacked> {
        self.unacked.iter()
    }

    /// The stanza counted last by [`Sm::sent_stored`].
    pub fn last_sent(&self) -> Option<&Element> {
        self.unacked.back().map(|unacked| &unacked.stanza)
    }

    /// The unacknowledged stanzas, oldest first, for hooks to record metadata on.
    pub fn unacked_mut(&mut self) -> impl Iterator<Item = &mut Unacked> {
        self.unacked.iter_mut()
    }

    /// When the oldest message not yet offered as ack-delayed has been waiting `delay`.
    pub fn ack_delay_due(&self, delay: Duration) -> Option<Instant> {
        self.unacked
            .iter()
            .find(|unacked| !unacked.delay_raised)
            .map(|unacked| unacked.written + delay)
    }

    /// Take the unacknowledged stanzas out (when the session ends).
    pub fn take_unacked(&mut self) -> Vec<Unacked> {
        self.unacked.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Element {
        Element::bare("message", herald_stream::ns::CLIENT)
    }

    #[test]
    fn acks_drop_what_they_cover() {
        let mut sm = Sm::new(&SmSettings::default(), None);
        for _ in 0..3 {
            sm.sent(&message()).unwrap();
        }
        sm.acked(2).unwrap();
        assert_eq!(sm.unacked().count(), 1);
        sm.acked(2).unwrap();
        assert_eq!(sm.unacked().count(), 1, "a repeated ack changes nothing");
        sm.acked(3).unwrap();
        assert_eq!(sm.unacked().count(), 0);
    }

    #[test]
    fn counters_wrap_around_at_two_to_the_thirty_two() {
        let settings = SmSettings {
            buffer_max: None,
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&settings, None);
        sm.sent = u32::MAX - 1;
        sm.acked = u32::MAX - 1;
        sm.handled = u32::MAX;
        for _ in 0..4 {
            sm.sent(&message()).unwrap();
        }
        assert_eq!(sm.sent, 2, "wrapped past zero");
        sm.acked(1).unwrap();
        assert_eq!(sm.unacked().count(), 1);
        sm.received();
        assert_eq!(sm.handled(), 0);
    }

    #[test]
    fn acking_more_than_was_sent_is_handled_count_too_high() {
        let mut sm = Sm::new(&SmSettings::default(), None);
        sm.sent(&message()).unwrap();
        assert_eq!(
            sm.acked(5),
            Err(SmError::HandledCountTooHigh { h: 5, sent: 1 })
        );
    }

    #[test]
    fn the_buffer_limit_is_enforced() {
        let settings = SmSettings {
            buffer_max: Some(2),
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&settings, None);
        sm.sent(&message()).unwrap();
        sm.sent(&message()).unwrap();
        assert_eq!(sm.sent(&message()), Err(SmError::BufferOverflow));
    }

    #[test]
    fn acks_return_the_storage_ids_of_the_offline_messages_they_cover() {
        let mut sm = Sm::new(&SmSettings::default(), None);
        sm.sent_stored(Envelope::new(message()), Some(7)).unwrap();
        sm.sent(&message()).unwrap();
        sm.sent_stored(Envelope::new(message()), Some(9)).unwrap();
        assert_eq!(sm.acked(2).unwrap(), vec![7]);
        assert_eq!(sm.acked(2).unwrap(), Vec::<i64>::new());
        assert_eq!(sm.acked(3).unwrap(), vec![9]);
    }

    #[test]
    fn the_window_is_full_at_buffer_max() {
        let settings = SmSettings {
            buffer_max: Some(2),
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&settings, None);
        sm.sent(&message()).unwrap();
        assert!(!sm.window_full());
        sm.sent(&message()).unwrap();
        assert!(sm.window_full());
        sm.acked(1).unwrap();
        assert!(!sm.window_full());
        let unlimited = SmSettings {
            buffer_max: None,
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&unlimited, None);
        for _ in 0..1000 {
            sm.sent(&message()).unwrap();
        }
        assert!(!sm.window_full());
    }

    #[test]
    fn only_messages_wait_to_be_offered_as_ack_delayed() {
        let mut sm = Sm::new(&SmSettings::default(), None);
        let delay = Duration::from_secs(10);
        sm.sent(&Element::bare("presence", herald_stream::ns::CLIENT))
            .unwrap();
        assert_eq!(sm.ack_delay_due(delay), None);
        sm.sent(&message()).unwrap();
        let due = sm.ack_delay_due(delay).unwrap();
        assert!(due > Instant::now() + Duration::from_secs(9));
        for unacked in sm.unacked_mut() {
            unacked.delay_raised = true;
        }
        assert_eq!(sm.ack_delay_due(delay), None);
    }

    #[test]
    fn ack_requests_follow_ack_freq() {
        let settings = SmSettings {
            ack_freq: Some(3),
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&settings, None);
        assert_eq!(sm.sent(&message()), Ok(false));
        assert_eq!(sm.sent(&message()), Ok(false));
        assert_eq!(sm.sent(&message()), Ok(true));
        let never = SmSettings {
            ack_freq: None,
            ..SmSettings::default()
        };
        let mut sm = Sm::new(&never, None);
        assert_eq!(sm.sent(&message()), Ok(false));
    }
}
