//! A bound client session (RFC 6120 section 7 onwards): stanzas in from the client are
//! stamped and routed; stanzas queued for it are written out in batches, reads and writes
//! taking turns. With stream management (XEP-0198) the session keeps what the client has not
//! acknowledged and writes no more than `buffer_max` of them (XEP-0198 section 4: the server
//! asks for an ack and waits), so delivery is paced by the client; a resumable session
//! outlives its connection: it waits for the client to come back on a new one, and routes
//! what is left again when it finally ends. The session also pulls the account's stored
//! offline messages (XEP-0160) at that pace, and notices a client that is gone (an ack request
//! or a ping left unanswered, XEP-0199 section 4.1) or not reading (a write not taken in
//! time): its connection is dropped, never its messages.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use herald_stream::Bare;
use herald_stream::{
    Frame, StreamErrorCondition, ns,
    stanza::{IqType, Stanza, StanzaKind, iq_result},
};
use jid::{FullJid, Jid};
use minidom::Element;
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Origin, Server,
    conn::{Conn, ReadError, Rejected, parse_stanza, read_error_condition},
    csi::{self, ClientState},
    envelope::Envelope,
    hooks::{
        ClientActive, Hibernate, Hibernation, HibernationPhase, SessionWaiting, UnackedCause,
        UnackedMessage,
    },
    offline::{self, OfflineFeed},
    ping::PingSettings,
    presence,
    queue::Inbox,
    resume::Resumption,
    sessions::SessionHandle,
    sm::{self, Sm, SmError},
};

/// Most stanzas written before one flush, so a busy session still flushes often.
const WRITE_BATCH: usize = 64;

/// Why a waiting session ended when the server shuts down.
const SHUTDOWN: &str = "server shutdown";

/// How long a connection taken for gone or stuck gets to take its stream error.
const DROP_GRACE: Duration = Duration::from_secs(1);

/// How a connected phase ended.
enum End {
    /// The client closed its stream: close ours; the session is over.
    Closed,
    /// Send this stream error; the session is over.
    Error(StreamErrorCondition),
    /// The socket is gone; a resumable session waits for its client.
    Gone,
    /// The client is taken for gone or stuck (unanswered acks or pings, a full queue): the
    /// stream error is offered without waiting on the client, then as [`End::Gone`], so a
    /// resumable session waits (and pushes) and what it held is kept.
    Dropped(StreamErrorCondition),
    /// A new connection resumed the session; the old one is dropped.
    Resumed(Box<Resumption>),
}

/// A bound session's state that outlives any one connection.
struct Session {
    server: Arc<Server>,
    handle: SessionHandle,
    rx: Inbox,
    sm: Option<Sm>,
    resumptions: Option<mpsc::Receiver<Box<Resumption>>>,
    /// Stored offline messages being delivered to this session.
    offline: Option<OfflineFeed>,
    /// Queued stanzas were written last: stored messages have their turn, so that neither
    /// starves the other (and what was queued before delivery began, such as the echo of
    /// the presence that started it, goes first).
    offline_turn: bool,
    /// Stanzas held while the client is inactive (XEP-0352, [`crate::csi`]), in order.
    held: std::collections::VecDeque<Envelope>,
    /// The held stanzas are being written (the client became active, something urgent
    /// came, or the buffer filled up); what arrives meanwhile queues behind them.
    releasing: bool,
    /// The session waits past `resume_timeout` ([`crate::hooks::Hibernate`]).
    hibernating: bool,
}

/// Run the session until it ends, then unregister it and route again what the client never
/// acknowledged.
///
/// The connection comes boxed, and the largest awaits below (a stanza's handling, the
/// negotiation before) are boxed where they are awaited: this future, and the task that holds
/// it, stay the size of what an idle session waits on (docs/BENCHMARKS.md, "Memory per idle
/// session, second part").
pub(crate) async fn run(
    server: Arc<Server>,
    conn: Box<Conn>,
    (handle, rx): (SessionHandle, Inbox),
) {
    let mut session = Session {
        server,
        handle,
        rx,
        sm: None,
        resumptions: None,
        offline: None,
        offline_turn: false,
        held: std::collections::VecDeque::new(),
        releasing: false,
        hibernating: false,
    };
    let mut conn = Some(conn);
    loop {
        let end = match conn.as_mut() {
            Some(c) => session.serve(c).await,
            None => End::Gone,
        };
        let end = match end {
            End::Dropped(condition) => {
                if let Some(mut dropped) = conn.take() {
                    tracing::debug!(jid = %session.handle.jid, ?condition, "dropping the connection");
                    dropped
                        .abort(condition, &session.domain(), DROP_GRACE)
                        .await;
                }
                End::Gone
            }
            other => other,
        };
        match end {
            End::Resumed(resumption) => {
                if let Some(mut old) = conn.take() {
                    old.close().await;
                }
                conn = Box::pin(session.resume(*resumption)).await.map(Box::new);
            }
            End::Gone if session.resumptions.is_some() => {
                // The old socket is of no more use: let it go while the session waits.
                drop(conn.take());
                match Box::pin(session.wait()).await {
                    Ok(resumption) => {
                        conn = Box::pin(session.resume(*resumption)).await.map(Box::new)
                    }
                    Err(reason) => {
                        tracing::debug!(jid = %session.handle.jid, ?reason, "resumable session ended");
                        // A shutdown leaves hibernation to be found again at start.
                        if reason != SHUTDOWN {
                            session.hibernation_ended().await;
                        }
                        break;
                    }
                }
            }
            End::Gone | End::Dropped(_) => break,
            End::Closed => {
                if let Some(c) = conn.as_mut() {
                    c.queue_raw("</stream:stream>");
                    c.close().await;
                }
                break;
            }
            End::Error(condition) => {
                if let Some(c) = conn.as_mut() {
                    // What was routed to this session is written before the stream error,
                    // so a shutdown or a replaced session loses nothing it had accepted.
                    session.rx.close();
                    let mut request_ack = false;
                    let held = std::mem::take(&mut session.held);
                    for envelope in held {
                        if session.write(c, envelope, None, &mut request_ack).is_err() {
                            break;
                        }
                    }
                    while let Some(envelope) = session.rx.try_recv() {
                        if session.write(c, envelope, None, &mut request_ack).is_err() {
                            break;
                        }
                    }
                    c.fail(condition, session.handle.jid.domain().as_str())
                        .await;
                }
                break;
            }
        }
    }
    Box::pin(session.finish()).await;
}

/// Resolves to the next resumption, or never when the session is not resumable.
async fn next_resumption(
    resumptions: &mut Option<mpsc::Receiver<Box<Resumption>>>,
) -> Box<Resumption> {
    match resumptions {
        Some(rx) => match rx.recv().await {
            Some(resumption) => resumption,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Whether the client is still there: unanswered ack requests (XEP-0198, `ack_timeout`) and
/// server pings to a silent client (XEP-0199, `mod_ping`'s `send_pings`). One per connection.
struct Liveness {
    /// `<r/>` sent and not yet answered by an `<a/>` (a client answers each one).
    requests: u32,
    /// When the oldest unanswered request times out (reset by every `<a/>`).
    ack_due: Option<Instant>,
    ack_timeout: Option<Duration>,
    pings: Option<PingSettings>,
    /// When the client last sent anything.
    heard: Instant,
    /// When the ping sent to the silent client times out.
    ping_due: Option<Instant>,
}

/// What a liveness deadline calls for.
enum Alarm {
    /// The client has been silent: ping it.
    Ping,
    /// The client did not answer: it is gone.
    Gone,
}

impl Liveness {
    fn new(server: &Server) -> Liveness {
        Liveness {
            requests: 0,
            ack_due: None,
            ack_timeout: server
                .stream_management
                .as_ref()
                .and_then(|s| s.ack_timeout),
            pings: server.pings,
            heard: Instant::now(),
            ping_due: None,
        }
    }

    /// The client sent something. A client still talking is not gone, even if it is slow
    /// to answer an ack request while it sends (one that does not read at all is found by
    /// the send timeout and its full queue): the ack delay counts from the last thing heard.
    fn heard(&mut self) {
        self.heard = Instant::now();
        self.ping_due = None;
        if self.requests > 0 {
            self.ack_due = self.ack_timeout.map(|timeout| self.heard + timeout);
        }
    }

    /// An `<r/>` was sent.
    fn requested(&mut self) {
        self.requests += 1;
        if self.ack_due.is_none() {
            self.ack_due = self.ack_timeout.map(|timeout| Instant::now() + timeout);
        }
    }

    /// An `<a/>` arrived: the client is reading; what remains requested gets a new delay.
    fn answered(&mut self) {
        self.requests = self.requests.saturating_sub(1);
        self.ack_due = match self.requests {
            0 => None,
            _ => self.ack_timeout.map(|timeout| Instant::now() + timeout),
        };
    }

    /// The next deadline, if any.
    fn deadline(&self) -> Option<Instant> {
        let idle = self
            .pings
            .map(|p| self.ping_due.unwrap_or(self.heard + p.interval));
        [self.ack_due, idle].into_iter().flatten().min()
    }

    /// What the deadline that passed calls for, if anything.
    fn alarm(&mut self, now: Instant) -> Option<Alarm> {
        if self.ack_due.is_some_and(|due| due <= now) {
            return Some(Alarm::Gone);
        }
        let pings = self.pings?;
        match self.ping_due {
            Some(due) if due <= now => {
                if pings.kill {
                    return Some(Alarm::Gone);
                }
                tracing::debug!("client did not answer a ping");
                self.heard = now;
                self.ping_due = None;
                None
            }
            Some(_) => None,
            None if self.heard + pings.interval <= now => {
                self.ping_due = Some(now + pings.timeout);
                Some(Alarm::Ping)
            }
            None => None,
        }
    }
}

/// The connection's one timer, moved only when the next liveness deadline changes rather
/// than registered anew on every turn of the loop.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    /// Resolves at `deadline`, or never without one.
    async fn at(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        if self.armed != Some(deadline) {
            self.sleep.as_mut().reset(deadline.into());
            self.armed = Some(deadline);
        }
        self.sleep.as_mut().await;
    }
}

impl Session {
    fn domain(&self) -> String {
        self.handle.jid.domain().to_string()
    }

    /// Queue a stanza for the client, counting it for stream management (with its storage
    /// id when it comes from offline storage): the stream-management buffer keeps the
    /// envelope, metadata included, until the client acknowledges it.
    fn write(
        &mut self,
        conn: &mut Conn,
        envelope: Envelope,
        offline_id: Option<i64>,
        request_ack: &mut bool,
    ) -> Result<(), End> {
        match &mut self.sm {
            Some(sm) if sm::is_stanza(&envelope.stanza) => {
                *request_ack |= sm.sent_stored(envelope, offline_id).map_err(sm_failure)?;
                if let Some(written) = sm.last_sent() {
                    conn.queue(written);
                }
            }
            _ => conn.queue(&envelope.stanza),
        }
        Ok(())
    }

    /// A stanza from the queue: written, or held while the client is inactive (XEP-0352).
    fn take(
        &mut self,
        conn: &mut Conn,
        envelope: Envelope,
        request_ack: &mut bool,
    ) -> Result<(), End> {
        let Some(csi) = &self.server.csi else {
            return self.write(conn, envelope, None, request_ack);
        };
        let inactive = self
            .handle
            .state
            .get::<ClientState>()
            .is_some_and(|state| state.is_inactive());
        if !inactive && self.held.is_empty() {
            return self.write(conn, envelope, None, request_ack);
        }
        let urgent = csi.is_urgent(&envelope.stanza);
        if !urgent {
            // A newer presence of the same resource makes the held one obsolete.
            self.held
                .retain(|held| !csi::replaces(&envelope.stanza, &held.stanza));
        }
        self.held.push_back(envelope);
        if urgent || !inactive || self.held.len() > csi.buffer_max {
            self.releasing = true;
        }
        Ok(())
    }

    /// Write held stanzas, in order, as the client has room, once they are released.
    async fn release_held(&mut self, conn: &mut Conn, liveness: &mut Liveness) -> Result<(), End> {
        if !self.releasing {
            return Ok(());
        }
        let room = self.room();
        if room == 0 {
            return Ok(());
        }
        let mut request_ack = false;
        for _ in 0..room {
            let Some(envelope) = self.held.pop_front() else {
                break;
            };
            self.write(conn, envelope, None, &mut request_ack)?;
        }
        if self.held.is_empty() {
            self.releasing = false;
        }
        self.end_batch(conn, liveness, request_ack).await
    }

    /// `<active/>` or `<inactive/>` (XEP-0352 section 4); no reply.
    async fn client_state(&mut self, element: &Element) -> Result<(), End> {
        let inactive = match element.name() {
            "active" => false,
            "inactive" => true,
            _ => return Err(End::Error(StreamErrorCondition::UnsupportedStanzaType)),
        };
        self.handle
            .state
            .get_or_default::<ClientState>()
            .set_inactive(inactive);
        if !inactive && !self.held.is_empty() {
            self.releasing = true;
        }
        let hooks = self.server.extensions.hooks();
        if !inactive && !hooks.client_active.is_empty() {
            let mut event = ClientActive {
                session: self.handle.jid.clone(),
            };
            hooks.client_active.run(&self.server, &mut event).await;
        }
        Ok(())
    }

    /// How many more stanzas may be written before the client acknowledges some (XEP-0198:
    /// delivery is paced by the acks, so the unacknowledged buffer never overflows).
    fn room(&self) -> usize {
        match &self.sm {
            Some(sm) if sm.window_full() => 0,
            Some(sm) => sm.room().map_or(WRITE_BATCH, |room| room.min(WRITE_BATCH)),
            None => WRITE_BATCH,
        }
    }

    /// End a batch of writes: ask for an ack when stream management wants one (or the window
    /// is full), and flush.
    async fn end_batch(
        &mut self,
        conn: &mut Conn,
        liveness: &mut Liveness,
        request_ack: bool,
    ) -> Result<(), End> {
        if let Some(sm) = &self.sm
            && (request_ack || sm.window_full())
            && sm.unacked_count() > 0
        {
            conn.queue(&sm::reply::request());
            liveness.requested();
        }
        conn.flush().await.map_err(|_| End::Gone)
    }

    /// Write the next page of stored offline messages, if delivery is under way and the
    /// client has room. Without stream management a message counts as delivered once
    /// written and flushed; with it, once acknowledged.
    async fn feed_offline(&mut self, conn: &mut Conn, liveness: &mut Liveness) -> Result<(), End> {
        if !self.offline_may_write() {
            return Ok(());
        }
        let room = self.room();
        self.offline_turn = false;
        let Some(feed) = self.offline.as_mut().filter(|feed| !feed.exhausted()) else {
            return Ok(());
        };
        let Some(page) = feed.next(&self.server, room).await else {
            self.settle_offline();
            return Ok(());
        };
        let mut request_ack = false;
        let mut written = Vec::with_capacity(page.len());
        for (id, envelope) in page {
            self.write(conn, envelope, Some(id), &mut request_ack)?;
            written.push(id);
        }
        self.end_batch(conn, liveness, request_ack).await?;
        if self.sm.is_none() {
            offline::delivered(&self.server, &self.handle.jid.bare(), &written).await;
        }
        Ok(())
    }

    /// Whether stored messages may be written now: the client has room, and live messages
    /// are not waiting for their turn.
    fn offline_may_write(&self) -> bool {
        self.room() > 0 && (self.offline_turn || self.rx.is_empty())
    }

    /// Whether [`Session::feed_offline`] has a page to write now: it may write, and delivery
    /// is under way with more to read.
    fn offline_due(&self) -> bool {
        self.offline_may_write() && self.offline.as_ref().is_some_and(|feed| !feed.exhausted())
    }

    /// Delivery of stored messages is over once everything was read and everything written
    /// was acknowledged: the account's stored messages are then free for another session.
    fn settle_offline(&mut self) {
        let in_flight = self
            .sm
            .as_ref()
            .is_some_and(|sm| sm.unacked().any(|unacked| unacked.offline_id.is_some()));
        if !in_flight && let Some(feed) = self.offline.take_if(|feed| feed.exhausted()) {
            feed.end(&self.server, self.handle.id, false);
        }
    }

    async fn serve(&mut self, conn: &mut Conn) -> End {
        let mut liveness = Liveness::new(&self.server);
        let mut timer = Timer::new();
        loop {
            if let Err(end) = self.release_held(conn, &mut liveness).await {
                return end;
            }
            if let Err(end) = self.feed_offline(conn, &mut liveness).await {
                return end;
            }
            let writable = self.room() > 0;
            let offline_due = self.offline_due();
            let ack_delay_due = self.ack_delay_due();
            // Reads and writes take turns (no bias between them): acks are read while a
            // burst is written, and a client that sends a lot still gets its replies.
            tokio::select! {
                _ = self.server.shutdown.cancelled() => return End::Error(StreamErrorCondition::SystemShutdown),
                reason = self.handle.control.closed() => return End::Error(reason),
                // The queue filled up: the client is stuck, not misbehaving.
                () = self.handle.control.stalled() => return End::Dropped(StreamErrorCondition::ResourceConstraint),
                resumption = next_resumption(&mut self.resumptions) => return End::Resumed(resumption),
                // More stored messages to write: the next page, in turn with the reads and
                // live messages (without stream management no ack comes to wake the loop).
                () = std::future::ready(()), if offline_due => {}
                () = self.handle.offline.notified() => match &mut self.offline {
                    Some(feed) => feed.look_again(),
                    None => self.offline = OfflineFeed::start(&self.server, &self.handle),
                },
                () = timer.at(earliest(liveness.deadline(), ack_delay_due)) => {
                    let now = Instant::now();
                    match liveness.alarm(now) {
                        Some(Alarm::Gone) => return End::Dropped(StreamErrorCondition::ConnectionTimeout),
                        Some(Alarm::Ping) => {
                            self.ping(conn, &mut liveness);
                            if conn.flush().await.is_err() {
                                return End::Gone;
                            }
                        }
                        None => {}
                    }
                    self.offer_ack_delayed(now).await;
                }
                outbound = self.rx.recv(), if writable => {
                    let Some(first) = outbound else { return End::Gone };
                    let room = self.room();
                    let mut request_ack = false;
                    let first = self.offer_inactive(first).await;
                    if let Err(end) = self.take(conn, first, &mut request_ack) {
                        return end;
                    }
                    for _ in 1..room {
                        let Some(next) = self.rx.try_recv() else { break };
                        let next = self.offer_inactive(next).await;
                        if let Err(end) = self.take(conn, next, &mut request_ack) {
                            return end;
                        }
                    }
                    if let Err(end) = self.end_batch(conn, &mut liveness, request_ack).await {
                        return end;
                    }
                    self.offline_turn = true;
                }
                frame = conn.next_frame() => {
                    liveness.heard();
                    match frame {
                        Ok(Frame::Element(element)) => {
                            // Boxed: handling a stanza (routing it, a module's IQ) is the
                            // largest await of the loop, and inline it would size the
                            // session's future, idle or not, for itself.
                            let handled = Box::pin(self.inbound(conn, element, &mut liveness));
                            if let Err(end) = handled.await {
                                return end;
                            }
                        }
                        Ok(Frame::StreamClose) => return End::Closed,
                        Ok(Frame::StreamOpen(_)) => return End::Error(StreamErrorCondition::NotWellFormed),
                        Err(error) => {
                            return match read_error_condition(&error) {
                                Some(condition) => End::Error(condition),
                                None => {
                                    if let ReadError::Io(error) = error {
                                        tracing::debug!(jid = %self.handle.jid, %error, "read failed");
                                    }
                                    End::Gone
                                }
                            };
                        }
                    }
                }
            }
        }
    }

    /// Ping a silent client (XEP-0199 section 4.1): with stream management an ack request
    /// does it without a stanza; otherwise an IQ ping from the server.
    fn ping(&mut self, conn: &mut Conn, liveness: &mut Liveness) {
        if self.sm.is_some() {
            conn.queue(&sm::reply::request());
            liveness.requested();
            return;
        }
        let ping = xmpp_parsers::iq::Iq::from_get(
            format!("ping-{}", crate::random_id()),
            xmpp_parsers::ping::Ping,
        )
        .with_from(Jid::from(jid::BareJid::from_parts(
            None,
            self.handle.jid.domain(),
        )))
        .with_to(Jid::from(self.handle.jid.clone()));
        conn.queue(&ping.into());
    }

    /// One element from the client. A stanza counts as handled (XEP-0198 `h`) only once it
    /// was answered or routed, and routing a message to an offline user includes storing
    /// it: an `<a/>` never covers a stanza a crash could still lose.
    async fn inbound(
        &mut self,
        conn: &mut Conn,
        element: Element,
        liveness: &mut Liveness,
    ) -> Result<(), End> {
        if element.has_ns(sm::NS) {
            return self.stream_management(conn, element, liveness).await;
        }
        if element.has_ns(csi::NS) && self.server.csi.is_some() {
            return self.client_state(&element).await;
        }
        let counted = sm::is_stanza(&element);
        self.handle_stanza(conn, element).await?;
        if counted && let Some(sm) = &mut self.sm {
            sm.received();
        }
        Ok(())
    }

    /// Parse, stamp and route a stanza from the client.
    async fn handle_stanza(&mut self, conn: &mut Conn, element: Element) -> Result<(), End> {
        let mut stanza = match parse_stanza(element) {
            Ok(stanza) => stanza,
            Err(Rejected::Stream(condition)) => return Err(End::Error(condition)),
            Err(Rejected::Reply(reply)) => {
                if let Some(reply) = reply {
                    self.reply(conn, reply).await?;
                }
                return Ok(());
            }
        };
        // RFC 6120 section 8.1.2.1: the server stamps the full JID of the sender, whatever
        // the client put there.
        stanza.set_from(Jid::from(self.handle.jid.clone()));
        if is_legacy_session(&stanza) {
            // RFC 3921 section 3: establishing a session is a no-op now; answer result.
            return self.reply(conn, iq_result(&stanza, None)).await;
        }
        self.server
            .route(Origin::Client(&self.handle.jid), stanza)
            .await;
        Ok(())
    }

    /// Write a reply produced by the session itself.
    async fn reply(&mut self, conn: &mut Conn, reply: Element) -> Result<(), End> {
        let mut request_ack = false;
        self.write(conn, Envelope::new(reply), None, &mut request_ack)?;
        if request_ack {
            conn.queue(&sm::reply::request());
        }
        conn.flush().await.map_err(|_| End::Gone)
    }

    /// The client acknowledged up to `h`: stored messages it now has leave storage.
    async fn acked(&mut self, h: u32) -> Result<(), SmError> {
        let Some(sm) = &mut self.sm else {
            return Ok(());
        };
        let delivered = sm.acked(h)?;
        if !delivered.is_empty() {
            offline::delivered(&self.server, &self.handle.jid.bare(), &delivered).await;
            self.settle_offline();
        }
        Ok(())
    }

    /// XEP-0198 elements: enable, r, a.
    async fn stream_management(
        &mut self,
        conn: &mut Conn,
        element: Element,
        liveness: &mut Liveness,
    ) -> Result<(), End> {
        match element.name() {
            "enable" => {
                let Some(settings) = self.server.stream_management.clone() else {
                    // Not offered: section 3 says the server answers <failed/>.
                    conn.queue(&sm::reply::failed(
                        DefinedCondition::FeatureNotImplemented,
                        None,
                    ));
                    return conn.flush().await.map_err(|_| End::Gone);
                };
                if self.sm.is_some() {
                    conn.queue(&sm::reply::failed(
                        DefinedCondition::UnexpectedRequest,
                        None,
                    ));
                    return conn.flush().await.map_err(|_| End::Gone);
                }
                let resume = matches!(element.attr("resume"), Some("true" | "1"));
                if resume {
                    let id = crate::random_id();
                    self.resumptions = Some(
                        self.server
                            .resumable
                            .register(id.clone(), self.handle.jid.clone()),
                    );
                    let max = u32::try_from(settings.resume_timeout.as_secs()).unwrap_or(u32::MAX);
                    conn.queue(&sm::reply::enabled(Some((&id, max))));
                    self.sm = Some(Sm::new(&settings, Some(id)));
                } else {
                    conn.queue(&sm::reply::enabled(None));
                    self.sm = Some(Sm::new(&settings, None));
                }
            }
            "r" => {
                if let Some(sm) = &self.sm {
                    conn.queue(&sm::reply::ack(sm.handled()));
                }
            }
            "a" => {
                let h = element.attr("h").and_then(|h| h.parse::<u32>().ok());
                match (&self.sm, h) {
                    (Some(_), Some(h)) => {
                        self.acked(h).await.map_err(sm_failure)?;
                        liveness.answered();
                    }
                    (Some(_), None) => return Err(End::Error(StreamErrorCondition::BadFormat)),
                    (None, _) => {}
                }
                return Ok(());
            }
            "resume" => {
                // Resumption happens before binding, on a new stream.
                conn.queue(&sm::reply::failed(
                    DefinedCondition::UnexpectedRequest,
                    None,
                ));
            }
            _ => return Err(End::Error(StreamErrorCondition::UnsupportedStanzaType)),
        }
        conn.flush().await.map_err(|_| End::Gone)
    }

    /// The connection is gone and the session is resumable: keep buffering, tell the push
    /// module about each unacknowledged message, and wait for the client or the timeout.
    /// A session a module lets hibernate ([`SessionWaiting`], the push module for a session
    /// that enabled push) goes on waiting past `resume_timeout`: its messages are then
    /// offered as its user's being offline, it waits until `resume_timeout` after the first
    /// notification sent for it and at most [`Hibernate::longest`], and its end is
    /// announced [`Hibernate::wake_before`] ahead.
    async fn wait(&mut self) -> Result<Box<Resumption>, &'static str> {
        let timeout = self
            .server
            .stream_management
            .as_ref()
            .map(|s| s.resume_timeout)
            .unwrap_or_default();
        let lost = Instant::now();
        self.handle.control.set_waiting(true);
        // What was held for an inactive client counts as written: it waits in the buffer
        // with the rest, in order.
        self.releasing = false;
        if let Some(sm) = &mut self.sm {
            for envelope in self.held.drain(..) {
                if sm::is_stanza(&envelope.stanza) && sm.sent_stored(envelope, None).is_err() {
                    return Err("buffer overflow");
                }
            }
        }
        let hibernate = self.hibernation_allowed().await;
        // Each buffered message is offered to the hook, and kept with what the hook recorded
        // (the push module records which registrations it notified).
        self.offer_buffered(UnackedCause::Waiting, |_| true).await;
        let mut plan = WaitPlan {
            deadline: lost + timeout,
            wake_at: None,
            pushed_since_hibernating: false,
        };
        let sleep = tokio::time::sleep_until(plan.next().into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = self.server.shutdown.cancelled() => return Err(SHUTDOWN),
                _ = self.handle.control.closed() => return Err("replaced"),
                resumption = next_resumption(&mut self.resumptions) => return Ok(resumption),
                () = &mut sleep => {
                    let now = Instant::now();
                    if plan.wake_at.is_some_and(|wake| wake <= now) {
                        plan.wake_at = None;
                        let pending = self.sm.as_ref().map_or(0, Sm::unacked_count);
                        self.raise_hibernation(HibernationPhase::Expiring { pending }).await;
                    } else if plan.deadline <= now {
                        let Some(hibernate) = hibernate.filter(|h| !self.hibernating && lost + h.longest > now) else {
                            return Err("resume timeout");
                        };
                        self.hibernating = true;
                        tracing::debug!(jid = %self.handle.jid, "session hibernates");
                        // Stored messages it was given and never acknowledged stay stored:
                        // the account's other sessions may have them now, instead of
                        // waiting for a phone that may be gone for days.
                        if let Some(feed) = self.offline.take() {
                            feed.end(&self.server, self.handle.id, true);
                        }
                        self.raise_hibernation(HibernationPhase::Started).await;
                        let pushed = self.offer_buffered(UnackedCause::Hibernating, |_| true).await;
                        plan.hibernate(lost, timeout, hibernate, pushed);
                    }
                    sleep.as_mut().reset(plan.next().into());
                }
                outbound = self.rx.recv() => {
                    let Some(envelope) = outbound else { return Err("closed") };
                    let cause = if self.hibernating { UnackedCause::Hibernating } else { UnackedCause::Waiting };
                    let (envelope, pushed) = raise_unacked(&self.server, &self.handle.jid, cause, envelope).await;
                    if pushed && self.hibernating && let Some(hibernate) = hibernate {
                        plan.pushed(lost, timeout, hibernate);
                        sleep.as_mut().reset(plan.next().into());
                    }
                    let Some(sm) = self.sm.as_mut().filter(|_| sm::is_stanza(&envelope.stanza)) else {
                        continue;
                    };
                    if let Err(error) = sm.sent_stored(envelope, None) {
                        tracing::debug!(jid = %self.handle.jid, ?error, "buffer full while waiting for resumption");
                        return Err("buffer overflow");
                    }
                }
            }
        }
    }

    /// Whether a module lets this session hibernate, and how ([`SessionWaiting`]).
    async fn hibernation_allowed(&self) -> Option<Hibernate> {
        let hooks = self.server.extensions.hooks();
        if hooks.session_waiting.is_empty() {
            return None;
        }
        let mut event = SessionWaiting {
            session: self.handle.jid.clone(),
            hibernate: None,
        };
        hooks.session_waiting.run(&self.server, &mut event).await;
        event.hibernate
    }

    async fn raise_hibernation(&self, phase: HibernationPhase) {
        let hooks = self.server.extensions.hooks();
        if hooks.hibernation.is_empty() {
            return;
        }
        let mut event = Hibernation {
            session: self.handle.jid.clone(),
            phase,
        };
        hooks.hibernation.run(&self.server, &mut event).await;
    }

    /// The session no longer hibernates (resumed, replaced or expired).
    async fn hibernation_ended(&mut self) {
        if std::mem::take(&mut self.hibernating) {
            self.raise_hibernation(HibernationPhase::Ended).await;
        }
    }

    /// Offer the buffered messages `which` selects to the `unacked_message` hook, each kept
    /// with what the handlers recorded; whether any was notified.
    async fn offer_buffered(
        &mut self,
        cause: UnackedCause,
        which: impl Fn(&sm::Unacked) -> bool,
    ) -> bool {
        let mut pushed = false;
        if self.server.extensions.hooks().unacked_message.is_empty() {
            return false;
        }
        let Some(sm) = &mut self.sm else {
            return false;
        };
        for unacked in sm.unacked_mut() {
            if unacked.stanza.name() != "message" || !which(unacked) {
                continue;
            }
            let envelope = Envelope {
                stanza: std::mem::replace(
                    &mut unacked.stanza,
                    Element::bare("message", ns::CLIENT),
                ),
                meta: std::mem::take(&mut unacked.meta),
            };
            let (envelope, notified) =
                raise_unacked(&self.server, &self.handle.jid, cause, envelope).await;
            pushed |= notified;
            unacked.stanza = envelope.stanza;
            unacked.meta = envelope.meta;
        }
        pushed
    }

    /// Messages left unacknowledged for `max_ack_delay` on a live connection are offered
    /// once ([`UnackedCause::AckDelayed`]).
    async fn offer_ack_delayed(&mut self, now: Instant) {
        let Some(delay) = self.max_ack_delay() else {
            return;
        };
        let due = |unacked: &sm::Unacked| !unacked.delay_raised && unacked.written + delay <= now;
        if self.sm.as_ref().is_none_or(|sm| !sm.unacked().any(due)) {
            return;
        }
        self.offer_buffered(UnackedCause::AckDelayed, due).await;
        if let Some(sm) = &mut self.sm {
            for unacked in sm.unacked_mut() {
                if unacked.written + delay <= now {
                    unacked.delay_raised = true;
                }
            }
        }
    }

    /// `max_ack_delay`, when something listens for it.
    fn max_ack_delay(&self) -> Option<Duration> {
        if self.server.extensions.hooks().unacked_message.is_empty() {
            return None;
        }
        self.server
            .stream_management
            .as_ref()
            .and_then(|s| s.max_ack_delay)
    }

    /// When the oldest message not yet offered as ack-delayed is due.
    fn ack_delay_due(&self) -> Option<Instant> {
        let delay = self.max_ack_delay()?;
        self.sm.as_ref()?.ack_delay_due(delay)
    }

    /// A message for an inactive client (XEP-0352) is offered to the `unacked_message` hook
    /// before it is written ([`UnackedCause::Inactive`]).
    async fn offer_inactive(&self, envelope: Envelope) -> Envelope {
        if envelope.stanza.name() != "message"
            || self.server.csi.is_none()
            || !self
                .handle
                .state
                .get::<ClientState>()
                .is_some_and(|state| state.is_inactive())
        {
            return envelope;
        }
        raise_unacked(
            &self.server,
            &self.handle.jid,
            UnackedCause::Inactive,
            envelope,
        )
        .await
        .0
    }

    /// Take over a new connection: acknowledge what the client says it handled, confirm,
    /// and send the rest again (XEP-0198 section 5).
    async fn resume(&mut self, resumption: Resumption) -> Option<Conn> {
        let Resumption { mut conn, h } = resumption;
        self.handle.control.unstall();
        self.handle.control.set_waiting(false);
        self.hibernation_ended().await;
        // A resumed stream starts active (XEP-0352 section 4: the state is the stream's).
        if let Some(state) = self.handle.state.get::<ClientState>() {
            state.set_inactive(false);
        }
        self.releasing = !self.held.is_empty();
        if let Err(error) = self.acked(h).await {
            let end = sm_failure(error);
            if let End::Error(condition) = end {
                conn.fail(condition, &self.domain()).await;
            }
            return None;
        }
        let sm = self.sm.as_ref()?;
        let previd = sm.id.clone().unwrap_or_default();
        conn.queue(&sm::reply::resumed(&previd, sm.handled()));
        for unacked in sm.unacked() {
            conn.queue(&unacked.stanza);
        }
        if sm.unacked().next().is_some() {
            conn.queue(&sm::reply::request());
        }
        if conn.flush().await.is_err() {
            // Gone again at once: keep waiting (the caller goes back to `wait`).
            return None;
        }
        tracing::debug!(jid = %self.handle.jid, "session resumed");
        Some(conn)
    }

    /// The session is over: unregister, broadcast unavailable, and route again what the
    /// client never acknowledged (XEP-0198 section 5: as if sent to an unavailable
    /// resource) together with what was still queued, each message stamped with the time it
    /// was held since (XEP-0203). Stored offline messages it never acknowledged are still in
    /// storage: they are not routed again but offered to the account's other sessions.
    async fn finish(mut self) {
        let stale = self
            .server
            .stream_management
            .as_ref()
            .and_then(|s| s.stale_h.as_ref())
            .map(|s| s.geriatric);
        if let Some(sm) = &self.sm
            && let Some(id) = &sm.id
        {
            self.server.resumable.unregister(id, sm.handled(), stale);
        }
        let last = self
            .server
            .sessions
            .unbind(&self.handle.jid, self.handle.id);
        presence::session_ended(&self.server, &self.handle, last).await;
        if let Some(feed) = self.offline.take() {
            feed.end(&self.server, self.handle.id, true);
        }
        self.rx.close();
        let now = SystemTime::now();
        let mut leftovers: Vec<(Envelope, SystemTime)> = self
            .sm
            .as_mut()
            .map(Sm::take_unacked)
            .unwrap_or_default()
            .into_iter()
            .filter(|unacked| unacked.offline_id.is_none())
            .map(|unacked| {
                (
                    Envelope::with_meta(unacked.stanza, unacked.meta),
                    unacked.sent_at,
                )
            })
            .collect();
        leftovers.extend(self.held.drain(..).map(|envelope| (envelope, now)));
        while let Some(envelope) = self.rx.try_recv() {
            leftovers.push((envelope, now));
        }
        for (
            Envelope {
                stanza: mut element,
                meta,
            },
            held_since,
        ) in leftovers
        {
            if element.name() == "message" {
                offline::stamp_held(&self.server, &mut element, held_since);
            }
            let Ok(stanza) = Stanza::parse(element) else {
                continue;
            };
            match stanza.kind {
                StanzaKind::Message(_) => {
                    self.server
                        .route(Origin::Server, Envelope::with_meta(stanza, meta))
                        .await;
                }
                StanzaKind::Iq(IqType::Get | IqType::Set) => self.server.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                ),
                _ => {}
            }
        }
        tracing::debug!(jid = %self.handle.jid, "session ended");
    }
}

/// Raise the unacknowledged-message hook for a message of this session; returns the
/// envelope as the handlers left it, and whether one of them sent a notification for it.
async fn raise_unacked(
    server: &Server,
    session: &FullJid,
    cause: UnackedCause,
    envelope: Envelope,
) -> (Envelope, bool) {
    let hooks = server.extensions.hooks();
    if envelope.stanza.name() != "message" || hooks.unacked_message.is_empty() {
        return (envelope, false);
    }
    let mut event = UnackedMessage {
        session: session.clone(),
        cause,
        stanza: envelope.stanza,
        meta: envelope.meta,
        pushed: false,
    };
    hooks.unacked_message.run(server, &mut event).await;
    let envelope = Envelope {
        stanza: event.stanza,
        meta: event.meta,
    };
    (envelope, event.pushed)
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When a waiting session's next step is due.
struct WaitPlan {
    /// When it ends (or starts hibernating).
    deadline: Instant,
    /// When its end is announced.
    wake_at: Option<Instant>,
    /// A notification was sent for it since it started hibernating.
    pushed_since_hibernating: bool,
}

impl WaitPlan {
    /// The session hibernates from now: it ends at the longest, or `resume_timeout` after a
    /// notification (`pushed`: one went out for what it held).
    fn hibernate(&mut self, lost: Instant, timeout: Duration, hibernate: Hibernate, pushed: bool) {
        self.deadline = lost + hibernate.longest;
        self.plan_wake(hibernate);
        if pushed {
            self.pushed(lost, timeout, hibernate);
        }
    }

    /// A notification went out for the hibernating session: the first one gives its client
    /// `resume_timeout` from now to come back (Prosody's behaviour).
    fn pushed(&mut self, lost: Instant, timeout: Duration, hibernate: Hibernate) {
        if std::mem::replace(&mut self.pushed_since_hibernating, true) {
            return;
        }
        self.deadline = (Instant::now() + timeout).min(lost + hibernate.longest);
        self.plan_wake(hibernate);
    }

    fn plan_wake(&mut self, hibernate: Hibernate) {
        let now = Instant::now();
        self.wake_at = hibernate
            .wake_before
            .and_then(|before| self.deadline.checked_sub(before))
            .filter(|wake| *wake > now);
    }

    fn next(&self) -> Instant {
        self.wake_at
            .map_or(self.deadline, |wake| wake.min(self.deadline))
    }
}

/// XEP-0198 `<failed/>` for a resumption that cannot happen.
pub(crate) fn resume_failed(h: Option<u32>) -> Element {
    sm::reply::failed(DefinedCondition::ItemNotFound, h)
}

fn sm_failure(error: SmError) -> End {
    match error {
        // MongooseIM closes an overflowing session; the issue asks for policy-violation.
        SmError::BufferOverflow => End::Error(StreamErrorCondition::PolicyViolation),
        SmError::HandledCountTooHigh { h, sent } => {
            tracing::debug!(h, sent, "client acknowledged more than was sent");
            End::Error(StreamErrorCondition::UndefinedCondition)
        }
    }
}

fn is_legacy_session(stanza: &Stanza) -> bool {
    stanza.kind == StanzaKind::Iq(IqType::Set)
        && stanza.element.has_child("session", ns::SESSION)
        && stanza.to.as_ref().is_none_or(|to| to.node().is_none())
}
