//! Login throttling across streams (ejabberd's `mod_fail2ban` names): failed authentications
//! are counted per IP address and per account over `c2s_auth_ban_lifetime`. An address with
//! `c2s_max_auth_failures` failures is refused every attempt until its failures expire; an
//! account with that many is allowed one attempt per second, from any stream (a brute force
//! on one account crawls, and its owner can still log in).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use jid::BareJid;

use crate::config::{self, Integer, Invalid, KeyPath, Section};

/// `[modules.mod_fail2ban]` (ejabberd's names): login throttling, which is always on; the
/// section only tunes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail2banConfig {
    /// `c2s_auth_ban_lifetime` (seconds, default 3600): how long a failure counts.
    pub c2s_auth_ban_lifetime: Duration,
    /// `c2s_max_auth_failures` (default 20): failures per address (then refused) and per
    /// account (then one attempt a second) before the throttle applies.
    pub c2s_max_auth_failures: u32,
}

impl Default for Fail2banConfig {
    fn default() -> Self {
        Fail2banConfig {
            c2s_auth_ban_lifetime: Duration::from_secs(3600),
            c2s_max_auth_failures: 20,
        }
    }
}

/// `[modules.mod_fail2ban]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawFail2ban {
    /// See [`Fail2banConfig::c2s_auth_ban_lifetime`].
    pub c2s_auth_ban_lifetime: Option<Integer>,
    /// See [`Fail2banConfig::c2s_max_auth_failures`].
    pub c2s_max_auth_failures: Option<Integer>,
}

impl Section for Fail2banConfig {
    type Raw = RawFail2ban;

    fn from_raw(raw: RawFail2ban, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = Fail2banConfig::default();
        let c2s_auth_ban_lifetime = match raw.c2s_auth_ban_lifetime {
            Some(n) => Duration::from_secs(config::integer(
                n,
                1u64,
                "at least 1 (seconds)",
                &at.key("c2s_auth_ban_lifetime"),
            )?),
            None => defaults.c2s_auth_ban_lifetime,
        };
        let c2s_max_auth_failures = match raw.c2s_max_auth_failures {
            Some(n) => config::integer(n, 1u32, "at least 1", &at.key("c2s_max_auth_failures"))?,
            None => defaults.c2s_max_auth_failures,
        };
        Ok(Fail2banConfig {
            c2s_auth_ban_lifetime,
            c2s_max_auth_failures,
        })
    }
}

/// How often a throttled account may try.
const ACCOUNT_PACE: Duration = Duration::from_secs(1);

/// Records kept at most; beyond, expired ones are swept (and, failing that, the oldest go).
const MAX_RECORDS: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Ip(IpAddr),
    Account(BareJid),
}

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    first: Instant,
    last_attempt: Instant,
}

/// The failures of every address and account.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    settings: Fail2banConfig,
    records: Mutex<HashMap<Key, Record>>,
}

impl AuthThrottle {
    /// A throttle with these settings.
    pub fn new(settings: Fail2banConfig) -> AuthThrottle {
        AuthThrottle {
            settings,
            records: Mutex::default(),
        }
    }

    fn live(&self, record: &Record, now: Instant) -> bool {
        now.duration_since(record.first) < self.settings.c2s_auth_ban_lifetime
    }

    /// Whether an authentication from `ip` may proceed at all.
    pub fn ip_allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records
            .get(&Key::Ip(ip))
            .filter(|record| self.live(record, now))
            .is_none_or(|record| record.failures < self.settings.c2s_max_auth_failures)
    }

    /// Whether an attempt on `account` may be checked now (and counts it as made).
    pub fn account_allowed(&self, account: &BareJid, now: Instant) -> bool {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = records.get_mut(&Key::Account(account.clone())) else {
            return true;
        };
        if !self.live(record, now) || record.failures < self.settings.c2s_max_auth_failures {
            return true;
        }
        if now.duration_since(record.last_attempt) < ACCOUNT_PACE {
            return false;
        }
        record.last_attempt = now;
        true
    }

    /// An authentication failed.
    pub fn failed(&self, ip: IpAddr, account: Option<&BareJid>, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= MAX_RECORDS {
            let lifetime = self.settings.c2s_auth_ban_lifetime;
            records.retain(|_, record| now.duration_since(record.first) < lifetime);
            if records.len() >= MAX_RECORDS {
                records.clear();
            }
        }
        let keys = std::iter::once(Key::Ip(ip)).chain(account.cloned().map(Key::Account));
        for key in keys {
            let record = records.entry(key).or_insert(Record {
                failures: 0,
                first: now,
                last_attempt: now,
            });
            if !self.live(record, now) {
                *record = Record {
                    failures: 0,
                    first: now,
                    last_attempt: now,
                };
            }
            record.failures += 1;
            record.last_attempt = now;
        }
    }

    /// An account authenticated: its failures are forgotten (its address's are not).
    pub fn succeeded(&self, account: &BareJid) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(&Key::Account(account.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> AuthThrottle {
        AuthThrottle::new(Fail2banConfig {
            c2s_max_auth_failures: 3,
            c2s_auth_ban_lifetime: Duration::from_secs(60),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn an_address_with_too_many_failures_is_refused_until_they_expire() {
        let throttle = throttle();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(throttle.ip_allowed(ip(1), now));
            throttle.failed(ip(1), None, now);
        }
        assert!(!throttle.ip_allowed(ip(1), now));
        assert!(throttle.ip_allowed(ip(2), now), "another address is not");
        assert!(throttle.ip_allowed(ip(1), now + Duration::from_secs(61)));
    }

    #[test]
    fn a_throttled_account_gets_one_attempt_per_second_from_anywhere() {
        let throttle = throttle();
        let alice = BareJid::new("alice@example.org").unwrap();
        let now = Instant::now();
        for n in 0..3 {
            throttle.failed(ip(n), Some(&alice), now);
        }
        let later = now + Duration::from_millis(1500);
        assert!(throttle.account_allowed(&alice, later));
        assert!(!throttle.account_allowed(&alice, later + Duration::from_millis(10)));
        assert!(throttle.account_allowed(&alice, later + Duration::from_millis(1010)));
        throttle.succeeded(&alice);
        assert!(throttle.account_allowed(&alice, later + Duration::from_millis(1020)));
    }
}
