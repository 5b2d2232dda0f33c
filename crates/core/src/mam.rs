//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`), `[modules.mod_mam]`: every
//! one-to-one message an account sends or receives is archived with a unique, stable id
//! (XEP-0359 `<stanza-id by='account'/>` on what the account receives, the same id in its
//! carbons and offline copies), and the account queries its archive by contact, time, ids or
//! text, page by page (XEP-0059), so a phone woken by a push catches up on every device.
//!
//! A message between two local accounts is one row of the archive that both archives keep,
//! under one id, built once: the sender's hook gives it the id and, instead of writing its
//! side, records the id in the message's envelope (`SentAs`); the recipient's hook stamps the
//! same id as the recipient's stanza-id and writes the row for both archives (or for the
//! sender's alone, when the recipient's preferences leave it out). A message the recipient's
//! block list refuses never arrives: the sender's side is written when it is refused.
//!
//! Writes go through one writer task that commits what has queued in one transaction: the
//! router hands a message over and goes on (as MongooseIM's asynchronous writer does, without
//! its 2 s wait), so archiving costs the hot path no round trip; under load, many messages
//! share a commit. Shutdown commits what is queued. Docs: `docs/modules/mam.md`.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use herald_storage::{
    ArchiveStore, StorageError, UserDataStore,
    archive::{self, ArchiveId, ArchiveQuery, ArchivedMessage, Kept, Paging},
};
use herald_stream::Bare;
use herald_stream::stanza::{Blank, IqType, MessageType, StanzaKind, set_attr};
use jid::{BareJid, Jid};
use minidom::Element;
use tokio::sync::{Notify, mpsc, oneshot};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Server,
    config::{self, Integer, Invalid, KeyPath, Section},
    envelope::Mark,
    hooks::{Flow, Handler, MessageArriving, MessageRefused, MessageSent, Priority, UserRemoved},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

/// XEP-0313's namespace.
pub const NS: &str = "urn:xmpp:mam:2";
const EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0359's namespace.
pub const SID: &str = "urn:xmpp:sid:0";
const RSM: &str = "http://jabber.org/protocol/rsm";
const DATA: &str = "jabber:x:data";
const HINTS: &str = "urn:xmpp:hints";
/// The rows of preferences in the per-user data store.
const PREFS: &str = "mam_prefs";
/// The `<stanza-id/>` every archived message gets (XEP-0359).
static STANZA_ID: Blank = Blank::new("stanza-id", SID);
/// Rows waiting for the writer before the router waits to queue more.
const QUEUE: usize = 8192;
/// Accounts whose preferences are cached (embedded engine).
const CACHE_USERS: usize = 100_000;

/// Which messages an account archives by default (XEP-0313 section 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every message.
    Always,
    /// Messages with contacts in the roster.
    Roster,
    /// None (unless the contact is on the always list).
    Never,
}

const MODES: &[(&str, Mode)] = &[
    ("always", Mode::Always),
    ("roster", Mode::Roster),
    ("never", Mode::Never),
];

fn mode_name(mode: Mode) -> &'static str {
    MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("always", |(name, _)| name)
}

/// `[modules.mod_mam]` (MongooseIM's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MamConfig {
    /// `backend`: checked with the other stores' (the server's engine).
    pub backend: Option<String>,
    /// `default_mode`: an account's mode until it sets preferences (default `always`).
    pub default_mode: Mode,
    /// `default_result_limit`: a page's size when the query names none (50).
    pub default_result_limit: usize,
    /// `max_result_limit`: the largest page (50).
    pub max_result_limit: usize,
    /// `full_text_search`: queries by body text (default true).
    pub full_text_search: bool,
    /// `retention_days` (herald's): messages older than this many days are deleted every
    /// hour; `None` ("infinity", the default) keeps them.
    pub retention_days: Option<u64>,
    /// `async_writer.flush_interval` (milliseconds): how long the writer gathers rows before
    /// it commits them (default 200; a query commits what is queued at once).
    pub flush_interval: Duration,
    /// `async_writer.batch_size`: rows that make the writer commit without waiting out the
    /// interval (default 1,024).
    pub batch_size: usize,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            backend: None,
            default_mode: Mode::Always,
            default_result_limit: 50,
            max_result_limit: 50,
            full_text_search: true,
            retention_days: None,
            flush_interval: Duration::from_millis(200),
            batch_size: 1024,
        }
    }
}

/// `[modules.mod_mam]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawMam {
    /// See [`MamConfig::backend`].
    pub backend: Option<String>,
    /// See [`MamConfig::default_mode`].
    pub default_mode: Option<String>,
    /// See [`MamConfig::default_result_limit`].
    pub default_result_limit: Option<Integer>,
    /// See [`MamConfig::max_result_limit`].
    pub max_result_limit: Option<Integer>,
    /// See [`MamConfig::full_text_search`].
    pub full_text_search: Option<bool>,
    /// See [`MamConfig::retention_days`].
    pub retention_days: Option<toml::Value>,
    /// `[modules.mod_mam.async_writer]`.
    pub async_writer: Option<RawAsyncWriter>,
}

/// `[modules.mod_mam.async_writer]` as written (MongooseIM's names).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAsyncWriter {
    /// See [`MamConfig::flush_interval`].
    pub flush_interval: Option<Integer>,
    /// See [`MamConfig::batch_size`].
    pub batch_size: Option<Integer>,
}

impl Section for MamConfig {
    type Raw = RawMam;

    fn from_raw(raw: RawMam, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = MamConfig::default();
        let default_mode = match raw.default_mode {
            Some(name) => config::one_of(&name, MODES, &at.key("default_mode"))?,
            None => defaults.default_mode,
        };
        let limit = |value: Option<Integer>, key: &str, default: usize| match value {
            Some(n) => config::integer(n, 1usize, "at least 1", &at.key(key)),
            None => Ok(default),
        };
        let default_result_limit = limit(
            raw.default_result_limit,
            "default_result_limit",
            defaults.default_result_limit,
        )?;
        let max_result_limit = limit(
            raw.max_result_limit,
            "max_result_limit",
            defaults.max_result_limit,
        )?;
        if default_result_limit > max_result_limit {
            return Err(Invalid::new(
                at.key("default_result_limit"),
                format!("{default_result_limit} is above max_result_limit ({max_result_limit})"),
            ));
        }
        let retention_days = match raw.retention_days {
            Some(value) => config::integer_or(value, "infinity", 1, &at.key("retention_days"))?,
            None => None,
        };
        let writer_at = at.key("async_writer");
        let (flush_interval, batch_size) = match raw.async_writer {
            Some(writer) => (
                match writer.flush_interval {
                    Some(ms) => Duration::from_millis(config::integer(
                        ms,
                        0u64,
                        "at least 0",
                        &writer_at.key("flush_interval"),
                    )?),
                    None => defaults.flush_interval,
                },
                match writer.batch_size {
                    Some(n) => {
                        config::integer(n, 1usize, "at least 1", &writer_at.key("batch_size"))?
                    }
                    None => defaults.batch_size,
                },
            ),
            None => (defaults.flush_interval, defaults.batch_size),
        };
        Ok(MamConfig {
            flush_interval,
            batch_size,
            backend: raw.backend,
            default_mode,
            default_result_limit,
            max_result_limit,
            full_text_search: raw.full_text_search.unwrap_or(defaults.full_text_search),
            retention_days,
        })
    }
}

/// An account's preferences (XEP-0313 section 6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Prefs {
    default: Mode,
    always: Vec<BareJid>,
    never: Vec<BareJid>,
}

/// The preferences cache of the embedded engine, whose database this process alone writes.
#[derive(Default)]
struct PrefsCache {
    /// The preferences read, by bare JID text.
    read: HashMap<Box<str>, Arc<Prefs>>,
    /// The accounts with stored preferences, once read at start: any other account has the
    /// defaults, without a query (`None` until then, or if the read failed: each account's
    /// preferences are then read at its first message).
    stored: Option<HashSet<Box<str>>>,
}

/// What the writer is asked: a message to archive, or to say when everything asked before is
/// committed (a query reads what its account's messages wrote).
enum Pending {
    Write(ArchivedMessage),
    Flush(oneshot::Sender<()>),
}

/// The archive module.
pub struct Mam {
    config: MamConfig,
    store: Arc<dyn ArchiveStore>,
    prefs_store: Arc<dyn UserDataStore>,
    /// By bare JID text, so that a hook looks its users up without making a JID each.
    prefs: Option<Mutex<PrefsCache>>,
    /// The preferences of an account that stored none.
    defaults: Arc<Prefs>,
    /// Counts the preferences set since start (twice each: see `prefs_were_set`): the
    /// accounts with stored preferences, read at start, are kept only if none was set while
    /// they were read.
    prefs_set: AtomicU64,
    writer: mpsc::Sender<Pending>,
    /// Wakes the writer out of its gathering when a query waits for a flush.
    flush_asked: Arc<Notify>,
    queued: Mutex<Option<mpsc::Receiver<Pending>>>,
    server: OnceLock<Weak<Server>>,
}

impl Mam {
    /// The module over the server's stores; preferences are cached in memory when `cache`
    /// (the embedded engine).
    pub fn new(
        config: MamConfig,
        store: Arc<dyn ArchiveStore>,
        prefs_store: Arc<dyn UserDataStore>,
        cache: bool,
    ) -> Arc<Mam> {
        let (writer, queued) = mpsc::channel(QUEUE);
        let defaults = Arc::new(Prefs {
            default: config.default_mode,
            always: Vec::new(),
            never: Vec::new(),
        });
        Arc::new(Mam {
            config,
            store,
            prefs_store,
            prefs: cache.then(|| Mutex::new(PrefsCache::default())),
            defaults,
            prefs_set: AtomicU64::new(0),
            writer,
            flush_asked: Arc::new(Notify::new()),
            queued: Mutex::new(Some(queued)),
            server: OnceLock::new(),
        })
    }

    /// The preferences of `user` (a bare JID's text).
    async fn prefs(&self, user: &str) -> Result<Arc<Prefs>, StorageError> {
        if let Some(cache) = &self.prefs {
            let cache = lock(cache);
            if let Some(prefs) = cache.read.get(user) {
                return Ok(Arc::clone(prefs));
            }
            if cache
                .stored
                .as_ref()
                .is_some_and(|stored| !stored.contains(user))
            {
                return Ok(Arc::clone(&self.defaults));
            }
        }
        let Ok(jid) = BareJid::new(user) else {
            // Not a JID a hook or a query gives: nothing stored for it.
            return Ok(Arc::clone(&self.defaults));
        };
        let rows = self.prefs_store.list(&jid, PREFS, "").await?;
        let mut prefs = Prefs {
            default: self.config.default_mode,
            always: Vec::new(),
            never: Vec::new(),
        };
        for row in rows {
            match row.item.split_once(':') {
                Some(("A", jid)) => prefs.always.extend(BareJid::new(jid).ok()),
                Some(("N", jid)) => prefs.never.extend(BareJid::new(jid).ok()),
                _ if row.item == "default" => {
                    if let Some((_, mode)) = MODES.iter().find(|(name, _)| *name == row.value) {
                        prefs.default = *mode;
                    }
                }
                _ => {}
            }
        }
        let prefs = Arc::new(prefs);
        if let Some(cache) = &self.prefs {
            let mut cache = lock(cache);
            if cache.read.len() >= CACHE_USERS {
                cache.read.clear();
            }
            cache.read.insert(user.into(), Arc::clone(&prefs));
        }
        Ok(prefs)
    }

    /// Read which accounts have stored preferences (the embedded engine, at start), so that
    /// the others' messages are archived without a query each: after a restart, every
    /// account's first message read its preferences on the message's way (a thousand
    /// queries for a thousand accounts). Kept only if no preferences were set meanwhile.
    async fn read_stored_prefs(&self) {
        let Some(cache) = &self.prefs else { return };
        let before = self.prefs_set.load(Ordering::SeqCst);
        let owners = match self.prefs_store.owners(PREFS).await {
            Ok(owners) => owners,
            Err(error) => {
                tracing::warn!(%error, "cannot read which accounts have archive preferences; each is read at its first message");
                return;
            }
        };
        let stored = owners.iter().map(|owner| owner.as_str().into()).collect();
        let mut cache = lock(cache);
        if self.prefs_set.load(Ordering::SeqCst) == before {
            cache.stored = Some(stored);
        }
    }

    /// `owner`'s preferences are being set, or were: its cached ones go, it counts among the
    /// accounts with stored preferences, and a read of those accounts that began before is
    /// not kept (counted under the cache's lock, where that read is kept or not). Called
    /// before the writes and after them: a read that ended between the two missed neither,
    /// since the second call adds the account to what it kept.
    fn prefs_were_set(&self, owner: &BareJid) {
        let Some(cache) = &self.prefs else { return };
        let mut cache = lock(cache);
        self.prefs_set.fetch_add(1, Ordering::SeqCst);
        cache.read.remove(owner.as_str());
        if let Some(stored) = &mut cache.stored {
            stored.insert(owner.as_str().into());
        }
    }

    /// Whether `user` archives messages with `remote` (bare JIDs' texts; section 6.1: the
    /// lists first, then the default mode).
    async fn archives(&self, server: &Server, user: &str, remote: &str) -> bool {
        let prefs = match self.prefs(user).await {
            Ok(prefs) => prefs,
            Err(error) => {
                tracing::error!(%user, %error, "cannot read archive preferences");
                return true;
            }
        };
        let listed = |list: &[BareJid]| list.iter().any(|jid| jid.as_str() == remote);
        if listed(&prefs.never) {
            return false;
        }
        if listed(&prefs.always) {
            return true;
        }
        match prefs.default {
            Mode::Always => true,
            Mode::Never => false,
            Mode::Roster => {
                let (Ok(user), Ok(remote)) = (BareJid::new(user), BareJid::new(remote)) else {
                    return false;
                };
                server
                    .storage
                    .roster()
                    .item(&user, &remote)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            }
        }
    }

    /// Queue a message for the writer (waiting only while the queue is full).
    async fn write(&self, message: ArchivedMessage) {
        if self.writer.send(Pending::Write(message)).await.is_err() {
            tracing::error!("the archive writer is gone; a message was not archived");
        }
    }

    /// Wait until everything queued so far is committed.
    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.writer.send(Pending::Flush(done)).await.is_ok() {
            self.flush_asked.notify_one();
            let _ = flushed.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Commit what has queued, one transaction per batch, until the server shuts down; then
/// commit what is still queued and stop. A batch is what has queued `flush_interval` after
/// its first row (up to `batch_size` rows, and up to the first flush a query asked for): the
/// writer sleeps out the interval instead of waking for every message (the kernel's wake-ups
/// were among the archive's largest costs in the profile), and a flush or the shutdown cuts
/// the sleep short.
async fn run_writer(
    store: Arc<dyn ArchiveStore>,
    mut queued: mpsc::Receiver<Pending>,
    flush_asked: Arc<Notify>,
    shutdown: tokio_util::sync::CancellationToken,
    flush_interval: Duration,
    batch_size: usize,
) {
    let mut closing = false;
    loop {
        let first = if closing {
            queued.recv().await
        } else {
            tokio::select! {
                first = queued.recv() => first,
                _ = shutdown.cancelled() => {
                    queued.close();
                    closing = true;
                    queued.recv().await
                }
            }
        };
        let Some(first) = first else { return };
        // Room for a whole batch at once (up to a thousand rows): a vector grown row by row
        // asks the allocator for ever larger blocks, each a merge of its small free chunks.
        let (mut batch, mut flushes) = (Vec::with_capacity(batch_size.min(1024)), Vec::new());
        let mut next = Some(first);
        let mut slept = closing || flush_interval.is_zero();
        let until = tokio::time::Instant::now() + flush_interval;
        loop {
            match next.take() {
                Some(Pending::Write(message)) => batch.push(message),
                Some(Pending::Flush(done)) => flushes.push(done),
                None if slept => break,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = flush_asked.notified() => {}
                        _ = shutdown.cancelled() => {
                            queued.close();
                            closing = true;
                        }
                    }
                    slept = true;
                }
            }
            if batch.len() >= batch_size || !flushes.is_empty() {
                break;
            }
            next = queued.try_recv().ok();
        }
        let count = batch.len();
        if count > 0 {
            let started = std::time::Instant::now();
            let appended = store.append(batch, true).await;
            crate::metrics::store_latency("archive_append", started);
            if let Err(error) = appended {
                tracing::error!(%error, count, "archive write failed");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Whether a message is archived (XEP-0313 section 5.1 with XEP-0334): chat and normal
/// messages with a body or an encrypted payload, unless `<no-store/>`; `<store/>` forces it.
///
/// One pass over the children, by name first (each namespace compared only for a name that
/// matters).
pub fn archivable(kind: MessageType, message: &Element) -> bool {
    if !matches!(kind, MessageType::Chat | MessageType::Normal) {
        return false;
    }
    let (mut stored, mut content) = (false, false);
    for child in message.children() {
        match child.name() {
            "no-store" | "no-permanent-store" if child.has_ns(HINTS) => return false,
            "store" if child.has_ns(HINTS) => stored = true,
            "body" if child.has_ns(herald_stream::ns::CLIENT) => content = true,
            "encrypted" => content = true,
            _ => {}
        }
    }
    stored || content
}

/// The archive id a local sender's archive gave a message for a local account, recorded in
/// its envelope by the sender's hook, which left its side to the recipient's: the recipient's
/// hook (or, if the message is refused, the refusal's) takes it and writes the row. Never
/// stored with the message.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct SentAs(ArchiveId);

impl Mark for SentAs {
    const KEY: &'static str = "mam_sent";
}

/// The archive's row of `message` from `sender` to `recipient` (each bare and as addressed:
/// the hooks make the bare JIDs once, as they also need them, and give them to the row),
/// kept by `kept`.
fn entry(
    (sender_bare, sender): (BareJid, &Jid),
    (recipient_bare, recipient): (BareJid, &Jid),
    kept: Kept,
    id: ArchiveId,
    message: &Element,
) -> ArchivedMessage {
    let body = message
        .get_child("body", herald_stream::ns::CLIENT)
        .map(Element::text)
        .unwrap_or_default();
    let origin_id = message
        .get_child("origin-id", SID)
        .and_then(|origin| origin.attr("id"))
        .map(str::to_owned);
    let resource = |jid: &Jid| jid.resource().map(|r| r.to_string()).unwrap_or_default();
    ArchivedMessage {
        id,
        sender: sender_bare,
        sender_resource: resource(sender),
        recipient: recipient_bare,
        recipient_resource: resource(recipient),
        kept,
        origin_id,
        body,
        message: herald_stream::serialise::to_string(message).into(),
    }
}

/// The bare JID's text of a JID's (RFC 6120 section 1.4: what precedes the first `/`, which
/// the localpart and the domainpart cannot hold), without making a JID.
fn bare_text(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

/// The stanza-id string of an archive id, and back.
fn id_text(id: ArchiveId) -> String {
    id.to_string()
}

fn parse_id(text: &str) -> Option<ArchiveId> {
    text.trim().parse::<ArchiveId>().ok().filter(|id| *id > 0)
}

impl Module for Mam {
    fn name(&self) -> &'static str {
        "mod_mam"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.account_feature(NS);
        r.account_feature(EXTENDED);
        r.account_feature(SID);
        r.feature(SID);
        r.iq(IqScope::Account, NS, Arc::new(Queries(Arc::clone(&self))));
        r.hooks()
            .message_arriving
            .add(Priority::NORMAL, Arc::new(Incoming(Arc::clone(&self))));
        r.hooks()
            .message_sent
            .add(Priority::EARLY, Arc::new(Outgoing(Arc::clone(&self))));
        r.hooks()
            .message_refused
            .add(Priority::NORMAL, Arc::new(Refused(Arc::clone(&self))));
        r.hooks()
            .user_removed
            .add(Priority::NORMAL, Arc::new(Remove(self)));
    }

    fn start(self: Arc<Self>, server: &Arc<Server>) {
        let _ = self.server.set(Arc::downgrade(server));
        if self.prefs.is_some() {
            let mam = Arc::clone(&self);
            server
                .tasks
                .spawn(async move { mam.read_stored_prefs().await });
        }
        if let Some(queued) = lock(&self.queued).take() {
            server.tasks.spawn(run_writer(
                Arc::clone(&self.store),
                queued,
                Arc::clone(&self.flush_asked),
                server.shutdown.clone(),
                self.config.flush_interval,
                self.config.batch_size,
            ));
        }
        if let Some(days) = self.config.retention_days {
            let store = Arc::clone(&self.store);
            let shutdown = server.shutdown.clone();
            server.tasks.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let keep = Duration::from_secs(days.saturating_mul(86_400));
                    let cutoff = SystemTime::now()
                        .checked_sub(keep)
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                    match store.purge_before(archive::first_id_at(cutoff)).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "archive retention"),
                        Err(error) => tracing::error!(%error, "archive retention failed"),
                    }
                }
            });
        }
    }
}

/// A message for a local account: stamp it with the account's stanza-id and archive it, for
/// its sender's archive too when the sender's hook left its side here.
struct Incoming(Arc<Mam>);

#[async_trait::async_trait]
impl Handler<MessageArriving> for Incoming {
    async fn call(&self, server: &Server, event: &mut MessageArriving) -> Flow {
        let mam = &self.0;
        let sent = event.meta.take::<SentAs>();
        let user = event.user.as_str();
        let own_id = |child: &Element| child.is("stanza-id", SID) && child.attr("by") == Some(user);
        let message = &mut event.stanza.element;
        if event.rerouted && message.children().any(own_id) {
            // Already archived when it first arrived (a session's leftovers routed again).
            return Flow::Continue;
        }
        // XEP-0359 section 5: a stanza-id claiming to be ours that we did not set goes.
        while message.children().any(own_id) {
            let _ = message.remove_child("stanza-id", SID);
        }
        let StanzaKind::Message(kind) = event.stanza.kind else {
            return Flow::Continue;
        };
        let (Some(from), Some(to)) = (&event.stanza.from, &event.stanza.to) else {
            return Flow::Continue;
        };
        // The sender's hook found it archivable (the stanza is the same).
        let keeps = (sent.is_some() || archivable(kind, &event.stanza.element))
            && mam
                .archives(server, event.user.as_str(), bare_text(from.as_str()))
                .await;
        let kept = match (sent.is_some(), keeps) {
            (true, true) => Kept::Both,
            (false, true) => Kept::Recipient,
            (true, false) => Kept::Sender,
            (false, false) => return Flow::Continue,
        };
        // The sender's archive gave it its id: the same id in both archives.
        let id = sent.map_or_else(archive::next_id, |SentAs(id)| id);
        let remote = from.bare();
        if keeps {
            let mut stanza_id = STANZA_ID.make();
            set_attr(&mut stanza_id, "id", id_text(id));
            set_attr(&mut stanza_id, "by", event.user.as_str());
            event.stanza.element.append_child(stanza_id);
        }
        let row = entry(
            (remote, from),
            (event.user.clone(), to),
            kept,
            id,
            &event.stanza.element,
        );
        // The row's text is the stanza as it is routed on: offline storage, if the account is
        // offline, keeps it as it is instead of serialising the stanza again (no hook after
        // this one changes it; see `Meta::set_text`).
        event.meta.set_text(Arc::clone(&row.message));
        mam.write(row).await;
        Flow::Continue
    }
}

/// A message a local client sends: archived for the sender, at once if it leaves the server
/// (or goes to a component), else by the recipient's hook with the recipient's side.
struct Outgoing(Arc<Mam>);

#[async_trait::async_trait]
impl Handler<MessageSent> for Outgoing {
    async fn call(&self, server: &Server, event: &mut MessageSent) -> Flow {
        let mam = &self.0;
        let StanzaKind::Message(kind) = event.stanza.kind else {
            return Flow::Continue;
        };
        let Some(to) = &event.stanza.to else {
            return Flow::Continue;
        };
        // The bare JIDs' texts: a message whose sender's archive is left to the recipient's
        // hook (the usual case, between local accounts) makes no JID here.
        let (user, remote) = (bare_text(event.sender.as_str()), bare_text(to.as_str()));
        if remote == user
            || !archivable(kind, &event.stanza.element)
            || !mam.archives(server, user, remote).await
        {
            return Flow::Continue;
        }
        let id = archive::next_id();
        if server.reaches_local_account(to) {
            // One row for both archives, written where the recipient's side is known.
            event.meta.set(SentAs(id));
            return Flow::Continue;
        }
        let sender = Jid::from(event.sender.clone());
        mam.write(entry(
            (event.sender.bare(), &sender),
            (to.bare(), to),
            Kept::Sender,
            id,
            &event.stanza.element,
        ))
        .await;
        Flow::Continue
    }
}

/// A message for a local account that its block list refused: the sender's side, if its hook
/// left it to the recipient's.
struct Refused(Arc<Mam>);

#[async_trait::async_trait]
impl Handler<MessageRefused> for Refused {
    async fn call(&self, _server: &Server, event: &mut MessageRefused) -> Flow {
        let Some(SentAs(id)) = event.meta.take::<SentAs>() else {
            return Flow::Continue;
        };
        let (Some(from), Some(to)) = (&event.stanza.from, &event.stanza.to) else {
            return Flow::Continue;
        };
        self.0
            .write(entry(
                (from.bare(), from),
                (event.user.clone(), to),
                Kept::Sender,
                id,
                &event.stanza.element,
            ))
            .await;
        Flow::Continue
    }
}

struct Remove(Arc<Mam>);

#[async_trait::async_trait]
impl Handler<UserRemoved> for Remove {
    async fn call(&self, server: &Server, event: &mut UserRemoved) -> Flow {
        if let Some(cache) = &self.0.prefs {
            lock(cache).read.remove(event.user.as_str());
        }
        // What the writer holds goes first (rows of the account then go with the rest;
        // rows queued later are left out, the account being gone).
        self.0.flush().await;
        if let Err(error) = self.0.store.remove_user(&event.user).await {
            tracing::error!(user = %event.user, %error, "cannot remove the archive");
        }
        crate::user_data::RemoveUserData(Arc::clone(&self.0.prefs_store))
            .call(server, event)
            .await
    }
}

struct Queries(Arc<Mam>);

fn not_found() -> IqError {
    IqError::item_not_found()
}

/// The query form's fields (XEP-0313 section 4.1.1, section 5).
fn query_form() -> Element {
    let mut form = Element::bare("x", DATA);
    set_attr(&mut form, "type", "form");
    for (var, type_) in [
        ("FORM_TYPE", Some("hidden")),
        ("with", Some("jid-single")),
        ("start", Some("text-single")),
        ("end", Some("text-single")),
        ("before-id", Some("text-single")),
        ("after-id", Some("text-single")),
        ("ids", Some("list-multi")),
        ("{urn:xmpp:fulltext:0}fulltext", Some("text-single")),
    ] {
        let mut field = Element::bare("field", DATA);
        set_attr(&mut field, "var", var);
        if let Some(type_) = type_ {
            set_attr(&mut field, "type", type_);
        }
        if var == "FORM_TYPE" {
            let mut value = Element::bare("value", DATA);
            value.append_text_node(NS);
            field.append_child(value);
        }
        form.append_child(field);
    }
    form
}

/// A time in an XEP-0082 form, as microseconds since the epoch.
fn micros_at(text: &str) -> Option<i64> {
    let time = xmpp_parsers::date::DateTime::from_str(text.trim()).ok()?;
    Some(time.0.timestamp_micros())
}

impl Queries {
    /// Parse a query (XEP-0313 section 4.1) into the store's terms.
    async fn parse(
        &self,
        owner: &BareJid,
        query: &Element,
    ) -> Result<(ArchiveQuery, bool), IqError> {
        let config = &self.0.config;
        let mut parsed = ArchiveQuery::all(config.default_result_limit);
        if let Some(form) = query.get_child("x", DATA) {
            for field in form.children().filter(|c| c.is("field", DATA)) {
                let values: Vec<String> = field
                    .children()
                    .filter(|c| c.is("value", DATA))
                    .map(Element::text)
                    .collect();
                let one = values.first().map(String::as_str).unwrap_or("");
                match field.attr("var").unwrap_or_default() {
                    "FORM_TYPE" if one == NS => {}
                    "FORM_TYPE" => return Err(IqError::bad_request()),
                    "with" => {
                        let with = Jid::new(one).map_err(|_| IqError::bad_request())?;
                        parsed.with_bare = Some(with.bare().to_string());
                        parsed.with_resource = with.resource().map(|r| r.to_string());
                    }
                    "start" => {
                        let micros = micros_at(one).ok_or_else(IqError::bad_request)?;
                        parsed.start = Some(archive::first_id_at(micros));
                    }
                    "end" => {
                        let micros = micros_at(one).ok_or_else(IqError::bad_request)?;
                        parsed.end = Some(archive::first_id_at(micros.saturating_add(1)) - 1);
                    }
                    "after-id" => parsed.after_id = Some(parse_id(one).ok_or_else(not_found)?),
                    "before-id" => parsed.before_id = Some(parse_id(one).ok_or_else(not_found)?),
                    "ids" => {
                        parsed.ids = values
                            .iter()
                            .map(|v| parse_id(v).ok_or_else(not_found))
                            .collect::<Result<_, _>>()?;
                    }
                    "{urn:xmpp:fulltext:0}fulltext" | "full-text-search"
                        if config.full_text_search =>
                    {
                        parsed.text = Some(one.to_owned()).filter(|t| !t.is_empty());
                    }
                    // XEP-0313 section 4.1.1: an unknown field is an error.
                    _ => return Err(IqError::bad_request()),
                }
            }
        }
        if let Some(set) = query.get_child("set", RSM) {
            if let Some(max) = set.get_child("max", RSM) {
                let max = max
                    .text()
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| IqError::bad_request())?;
                parsed.max = max.min(config.max_result_limit);
            }
            let anchor = |name: &str| -> Result<Option<Option<ArchiveId>>, IqError> {
                match set.get_child(name, RSM) {
                    None => Ok(None),
                    Some(element) if element.text().trim().is_empty() => Ok(Some(None)),
                    Some(element) => {
                        Ok(Some(Some(parse_id(&element.text()).ok_or_else(not_found)?)))
                    }
                }
            };
            if let Some(before) = anchor("before")? {
                parsed.paging = Paging::Backward(before);
            } else if let Some(Some(after)) = anchor("after")? {
                parsed.paging = Paging::Forward(Some(after));
            }
            // XEP-0059 section 2.5: an id that is not in the archive.
            let anchor_id = match parsed.paging {
                Paging::Forward(id) | Paging::Backward(id) => id,
            };
            if let Some(id) = anchor_id
                && !self
                    .0
                    .store
                    .exists(owner, id)
                    .await
                    .map_err(|_| IqError::internal())?
            {
                return Err(not_found());
            }
        }
        let flip = query.has_child("flip-page", NS);
        Ok((parsed, flip))
    }
}

#[async_trait::async_trait]
impl IqHandler for Queries {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let owner = request.target.bare();
        if !request.sender.same_bare(&owner) {
            // An account's archive is its own (section 4).
            return Err(IqError::forbidden());
        }
        match (request.kind, request.payload.name()) {
            (IqType::Get, "query") => {
                let mut query = Element::bare("query", NS);
                query.append_child(query_form());
                Ok(Some(query))
            }
            (IqType::Set, "query") => self.query(server, &owner, &request).await,
            (IqType::Get, "prefs") => Ok(Some(prefs_element(
                &*self
                    .0
                    .prefs(owner.as_str())
                    .await
                    .map_err(|_| IqError::internal())?,
            ))),
            (IqType::Set, "prefs") => self.set_prefs(&owner, request.payload).await,
            _ => Err(IqError::bad_request()),
        }
    }
}

impl Queries {
    async fn query(&self, server: &Server, owner: &BareJid, request: &IqRequest<'_>) -> IqResponse {
        let (query, flip) = self.parse(owner, request.payload).await?;
        // What was sent before the query is in the archive before it is read.
        self.0.flush().await;
        let mut page =
            self.0.store.query(owner, &query).await.map_err(|_| {
                IqError::new(ErrorType::Wait, DefinedCondition::InternalServerError)
            })?;
        let (first, last) = (
            page.items.first().map(|f| f.id),
            page.items.last().map(|f| f.id),
        );
        if flip {
            page.items.reverse();
        }
        let queryid = request.payload.attr("queryid");
        let to = request.sender.clone();
        let session = to
            .try_as_full()
            .ok()
            .and_then(|full| server.sessions.get(full));
        for found in &page.items {
            let Ok(original) = found.message.parse::<Element>() else {
                continue;
            };
            let mut result = Element::bare("result", NS);
            if let Some(queryid) = queryid {
                set_attr(&mut result, "queryid", queryid);
            }
            set_attr(&mut result, "id", id_text(found.id));
            let mut forwarded = Element::bare("forwarded", "urn:xmpp:forward:0");
            let mut delay = Element::bare("delay", "urn:xmpp:delay");
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_micros(u64::try_from(archive::micros_of(found.id)).unwrap_or(0));
            set_attr(&mut delay, "stamp", crate::offline::xep0082(at));
            forwarded.append_child(delay);
            forwarded.append_child(original);
            result.append_child(forwarded);
            let mut message = Element::bare("message", herald_stream::ns::CLIENT);
            set_attr(&mut message, "from", owner.to_string());
            set_attr(&mut message, "to", to.to_string());
            set_attr(&mut message, "id", crate::random_id());
            message.append_child(result);
            if let Some(session) = &session {
                session.deliver(message);
            }
        }
        // Section 4.3: the IQ result ends the query, after the results.
        let mut fin = Element::bare("fin", NS);
        if page.complete {
            set_attr(&mut fin, "complete", "true");
        }
        let mut set = Element::bare("set", RSM);
        if let (Some(first), Some(last)) = (first, last) {
            let mut first_element = Element::bare("first", RSM);
            first_element.append_text_node(id_text(first));
            set.append_child(first_element);
            let mut last_element = Element::bare("last", RSM);
            last_element.append_text_node(id_text(last));
            set.append_child(last_element);
        }
        let mut count = Element::bare("count", RSM);
        count.append_text_node(page.count.to_string());
        set.append_child(count);
        fin.append_child(set);
        Ok(Some(fin))
    }

    async fn set_prefs(&self, owner: &BareJid, payload: &Element) -> IqResponse {
        let mam = &self.0;
        let default = match payload.attr("default") {
            Some(name) => MODES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, mode)| *mode)
                .ok_or_else(IqError::bad_request)?,
            None => mam.config.default_mode,
        };
        let list = |name: &str| -> Result<Vec<BareJid>, IqError> {
            payload
                .get_child(name, NS)
                .map(|list| {
                    list.children()
                        .filter(|c| c.is("jid", NS))
                        .map(|jid| {
                            BareJid::new(jid.text().trim()).map_err(|_| IqError::bad_request())
                        })
                        .collect()
                })
                .unwrap_or(Ok(Vec::new()))
        };
        let prefs = Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        };
        if prefs.always.len() + prefs.never.len() > 1000 {
            return Err(IqError::new(
                ErrorType::Wait,
                DefinedCondition::ResourceConstraint,
            ));
        }
        // The account known to have preferences before any is written (a lookup meanwhile
        // reads the store) and again once they are.
        mam.prefs_were_set(owner);
        let store = &mam.prefs_store;
        let internal = |_| IqError::internal();
        store
            .delete_scope(owner, PREFS, "")
            .await
            .map_err(internal)?;
        store
            .put(owner, PREFS, "", "default", mode_name(prefs.default))
            .await
            .map_err(internal)?;
        for jid in &prefs.always {
            store
                .put(owner, PREFS, "", &format!("A:{jid}"), "")
                .await
                .map_err(internal)?;
        }
        for jid in &prefs.never {
            store
                .put(owner, PREFS, "", &format!("N:{jid}"), "")
                .await
                .map_err(internal)?;
        }
        mam.prefs_were_set(owner);
        Ok(Some(prefs_element(&prefs)))
    }
}

fn prefs_element(prefs: &Prefs) -> Element {
    let mut element = Element::bare("prefs", NS);
    set_attr(&mut element, "default", mode_name(prefs.default));
    for (name, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
        let mut list = Element::bare(name, NS);
        for jid in jids {
            let mut item = Element::bare("jid", NS);
            item.append_text_node(jid.to_string());
            list.append_child(item);
        }
        element.append_child(list);
    }
    element
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn what_is_archived_follows_xep_0313_and_the_hints() {
        let chat = message("<message xmlns='jabber:client' type='chat'><body>hi</body></message>");
        assert!(archivable(MessageType::Chat, &chat));
        let state = message(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(!archivable(MessageType::Chat, &state));
        let no_store = message(
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
        );
        assert!(!archivable(MessageType::Chat, &no_store));
        let store =
            message("<message xmlns='jabber:client'><store xmlns='urn:xmpp:hints'/></message>");
        assert!(archivable(MessageType::Normal, &store));
        let both = message(
            "<message xmlns='jabber:client'><store xmlns='urn:xmpp:hints'/><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
        );
        assert!(!archivable(MessageType::Chat, &both), "no-store wins");
        let foreign_body =
            message("<message xmlns='jabber:client'><body xmlns='urn:example'>x</body></message>");
        assert!(!archivable(MessageType::Chat, &foreign_body));
        assert!(!archivable(MessageType::Headline, &chat));
        assert!(!archivable(MessageType::Groupchat, &chat));
        assert!(!archivable(MessageType::Error, &chat));
    }

    #[test]
    fn a_jids_bare_text_ends_before_its_first_slash() {
        assert_eq!(
            bare_text("juliet@capulet.example/balcony"),
            "juliet@capulet.example"
        );
        assert_eq!(
            bare_text("juliet@capulet.example/a/b"),
            "juliet@capulet.example"
        );
        assert_eq!(bare_text("capulet.example"), "capulet.example");
    }

    #[test]
    fn ids_round_trip_and_junk_is_not_an_id() {
        let id = archive::next_id();
        assert_eq!(parse_id(&id_text(id)), Some(id));
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id("-5"), None);
    }

    /// An archive that records the size of every append.
    #[derive(Default)]
    struct Batches(Mutex<Vec<usize>>);

    #[async_trait::async_trait]
    impl ArchiveStore for Batches {
        async fn append(
            &self,
            messages: Vec<ArchivedMessage>,
            _only_accounts: bool,
        ) -> Result<(), StorageError> {
            lock(&self.0).push(messages.len());
            Ok(())
        }
        async fn query(
            &self,
            _owner: &BareJid,
            _query: &ArchiveQuery,
        ) -> Result<archive::ArchivePage, StorageError> {
            unreachable!("the writer does not query")
        }
        async fn exists(&self, _owner: &BareJid, _id: ArchiveId) -> Result<bool, StorageError> {
            unreachable!("the writer does not query")
        }
        async fn remove_user(&self, _owner: &BareJid) -> Result<(), StorageError> {
            Ok(())
        }
        async fn purge_before(&self, _id: ArchiveId) -> Result<u64, StorageError> {
            Ok(0)
        }
    }

    fn row(n: usize) -> Pending {
        let owner: Jid = "bob@example.org".parse().unwrap();
        let remote: Jid = "alice@example.org/phone".parse().unwrap();
        let stanza =
            message("<message xmlns='jabber:client' type='chat'><body>hi</body></message>");
        Pending::Write(entry(
            (remote.bare(), &remote),
            (owner.bare(), &owner),
            Kept::Recipient,
            i64::try_from(n).unwrap() + 1,
            &stanza,
        ))
    }

    /// A user data store that counts the reads of a scope; with `gated`, its read of the
    /// owners waits for `release` after telling `entered`.
    struct CountingReads(
        Arc<dyn UserDataStore>,
        std::sync::atomic::AtomicUsize,
        Option<Gate>,
    );

    #[derive(Default)]
    struct Gate {
        entered: Notify,
        release: Notify,
    }

    #[async_trait::async_trait]
    impl UserDataStore for CountingReads {
        async fn put(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
            item: &str,
            value: &str,
        ) -> Result<(), StorageError> {
            self.0.put(owner, kind, scope, item, value).await
        }
        async fn get(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
            item: &str,
        ) -> Result<Option<String>, StorageError> {
            self.0.get(owner, kind, scope, item).await
        }
        async fn list(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
        ) -> Result<Vec<herald_storage::user_data::Entry>, StorageError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.list(owner, kind, scope).await
        }
        async fn delete(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
            item: &str,
        ) -> Result<bool, StorageError> {
            self.0.delete(owner, kind, scope, item).await
        }
        async fn delete_scope(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
        ) -> Result<u64, StorageError> {
            self.0.delete_scope(owner, kind, scope).await
        }
        async fn trim(
            &self,
            owner: &BareJid,
            kind: &str,
            scope: &str,
            keep: usize,
        ) -> Result<u64, StorageError> {
            self.0.trim(owner, kind, scope, keep).await
        }
        async fn remove_user(&self, owner: &BareJid) -> Result<(), StorageError> {
            self.0.remove_user(owner).await
        }
        async fn owners(&self, kind: &str) -> Result<Vec<BareJid>, StorageError> {
            let owners = self.0.owners(kind).await;
            if let Some(gate) = &self.2 {
                gate.entered.notify_one();
                gate.release.notified().await;
            }
            owners
        }
    }

    #[tokio::test]
    async fn once_the_stored_preferences_are_read_an_account_without_any_costs_no_query() {
        let storage = herald_storage::Storage::open_sqlite_in_memory()
            .await
            .unwrap();
        let reads = Arc::new(CountingReads(storage.user_data(), Default::default(), None));
        let alice = BareJid::new("alice@example.com").unwrap();
        reads
            .put(&alice, PREFS, "", "default", "never")
            .await
            .unwrap();
        let mam = Mam::new(
            MamConfig::default(),
            Arc::new(Batches::default()),
            Arc::clone(&reads) as Arc<dyn UserDataStore>,
            true,
        );
        // Before the read at start, an account's first lookup queries the store.
        assert_eq!(
            mam.prefs("carol@example.com").await.unwrap().default,
            Mode::Always
        );
        assert_eq!(reads.1.load(Ordering::SeqCst), 1);
        mam.read_stored_prefs().await;
        // An account without stored preferences: the defaults, no query.
        assert_eq!(
            mam.prefs("bob@example.com").await.unwrap().default,
            Mode::Always
        );
        assert_eq!(reads.1.load(Ordering::SeqCst), 1);
        // One with stored preferences: read once, then from the cache.
        assert_eq!(
            mam.prefs("alice@example.com").await.unwrap().default,
            Mode::Never
        );
        assert_eq!(
            mam.prefs("alice@example.com").await.unwrap().default,
            Mode::Never
        );
        assert_eq!(reads.1.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn preferences_set_while_the_stored_ones_are_read_leave_every_account_read_from_the_store()
     {
        let storage = herald_storage::Storage::open_sqlite_in_memory()
            .await
            .unwrap();
        let gate = Gate::default();
        let reads = Arc::new(CountingReads(
            storage.user_data(),
            Default::default(),
            Some(gate),
        ));
        let mam = Mam::new(
            MamConfig::default(),
            Arc::new(Batches::default()),
            Arc::clone(&reads) as Arc<dyn UserDataStore>,
            true,
        );
        // Preferences set (as `set_prefs` counts them) after the owners were read and before
        // the read is kept: it is not kept.
        let read = tokio::spawn({
            let mam = Arc::clone(&mam);
            async move { mam.read_stored_prefs().await }
        });
        let gate = reads.2.as_ref().unwrap();
        gate.entered.notified().await;
        mam.prefs_set.fetch_add(1, Ordering::SeqCst);
        gate.release.notify_one();
        read.await.unwrap();
        assert!(lock(mam.prefs.as_ref().unwrap()).stored.is_none());
        let _ = mam.prefs("bob@example.com").await.unwrap();
        assert_eq!(reads.1.load(Ordering::SeqCst), 1);
    }

    /// The writer over `store`, fed through the returned sender.
    fn writer(
        store: &Arc<Batches>,
        interval: Duration,
        batch_size: usize,
    ) -> (
        mpsc::Sender<Pending>,
        Arc<Notify>,
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (sender, queued) = mpsc::channel(QUEUE);
        let flush_asked = Arc::new(Notify::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run_writer(
            Arc::clone(store) as Arc<dyn ArchiveStore>,
            queued,
            Arc::clone(&flush_asked),
            shutdown.clone(),
            interval,
            batch_size,
        ));
        (sender, flush_asked, shutdown, task)
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_commits_what_came_during_its_interval_as_one_batch() {
        let store = Arc::new(Batches::default());
        let (sender, _, shutdown, task) = writer(&store, Duration::from_millis(50), 1024);
        for n in 0..10 {
            sender.send(row(n)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*lock(&store.0), vec![10]);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_the_rest_follows() {
        let store = Arc::new(Batches::default());
        let (sender, _, shutdown, task) = writer(&store, Duration::ZERO, 4);
        for n in 0..10 {
            sender.send(row(n)).await.unwrap();
        }
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(*lock(&store.0), vec![4, 4, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_cuts_the_interval_short_and_shutdown_commits_what_is_queued() {
        let store = Arc::new(Batches::default());
        let (sender, flush_asked, shutdown, task) = writer(&store, Duration::from_secs(3600), 1024);
        let started = tokio::time::Instant::now();
        for n in 0..3 {
            sender.send(row(n)).await.unwrap();
        }
        let (done, flushed) = oneshot::channel();
        sender.send(Pending::Flush(done)).await.unwrap();
        flush_asked.notify_one();
        flushed.await.unwrap();
        // The paused clock jumps ahead only when every task sleeps: had the writer waited
        // out its hour, the clock would say so.
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(*lock(&store.0), vec![3]);
        for n in 3..5 {
            sender.send(row(n)).await.unwrap();
        }
        tokio::task::yield_now().await;
        shutdown.cancel();
        task.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(*lock(&store.0), vec![3, 2]);
    }

    fn parsed(text: &str) -> Result<MamConfig, Invalid> {
        let raw: RawMam = toml::from_str(text).unwrap();
        let at = KeyPath::root().key("modules").key("mod_mam");
        MamConfig::from_raw(raw, &at)
    }

    #[test]
    fn the_async_writer_takes_mongooseim_names_and_refuses_bad_values_by_key() {
        let defaults = parsed("").unwrap();
        assert_eq!(defaults.flush_interval, Duration::from_millis(200));
        assert_eq!(defaults.batch_size, 1024);
        let set = parsed("[async_writer]\nflush_interval = 2000\nbatch_size = 30").unwrap();
        assert_eq!(set.flush_interval, Duration::from_millis(2000));
        assert_eq!(set.batch_size, 30);
        assert_eq!(
            parsed("async_writer.flush_interval = 0")
                .unwrap()
                .flush_interval,
            Duration::ZERO
        );
        let error = parsed("async_writer.batch_size = 0").unwrap_err();
        assert_eq!(
            error.key,
            KeyPath::root()
                .key("modules")
                .key("mod_mam")
                .key("async_writer")
                .key("batch_size")
        );
        let error = parsed("async_writer.flush_interval = -1").unwrap_err();
        assert_eq!(
            error.key,
            KeyPath::root()
                .key("modules")
                .key("mod_mam")
                .key("async_writer")
                .key("flush_interval")
        );
        assert!(toml::from_str::<RawMam>("async_writer.pool_size = 4").is_err());
    }
}
