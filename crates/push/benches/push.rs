//! Micro-benchmarks of the push module's per-message work (`docs/modules/push.md`
//! sections 4-5): the decision (parse the message, prepare the payload, choose the
//! registrations) and the publish IQ (build it, write it to bytes).
//! Run with `cargo bench -p herald-push`.

use std::collections::BTreeMap;

use divan::{Bencher, black_box};
use herald_push::{
    events::{Event, Message},
    plugin::{Context, Defaults, Payload, Plugin},
    publisher::publish_iq,
    registrations::{Registration, RegistrationKey},
};
use herald_stream::{ns, serialise, stanza::with_namespace};
use jid::BareJid;
use minidom::Element;

/// A component's stream namespace (XEP-0114 section 3).
const COMPONENT: &str = "jabber:component:accept";

/// Counts every allocation: divan prints allocations and bytes per iteration beside the time
/// (issue 18's "allocation counts per push").
#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

/// A routed chat message, as the offline hook sees it.
fn chat() -> Element {
    "<message xmlns='jabber:client' type='chat' id='m1' from='alice@localhost/phone' to='bob@localhost'>\
     <body>Hello Bob, are you there?</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        .parse()
        .unwrap()
}

/// A chat state notification: no body, never pushed.
fn chat_state() -> Element {
    "<message xmlns='jabber:client' type='chat' id='m2' from='alice@localhost/phone' to='bob@localhost'>\
     <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        .parse()
        .unwrap()
}

/// `devices` registrations of bob, each with publish-options.
fn registrations(devices: usize) -> Vec<Registration> {
    (0..devices)
        .map(|n| {
            let key = RegistrationKey {
                owner: BareJid::new("bob@localhost").unwrap(),
                pubsub: BareJid::new("push.localhost").unwrap(),
                node: format!("yxs32uqsflafdk3iuqo{n}"),
            };
            let form = BTreeMap::from([
                ("device_id".to_owned(), format!("TOKEN{n}")),
                ("service".to_owned(), "apns".to_owned()),
            ]);
            Registration::new(key, form)
        })
        .collect()
}

/// The whole decision for one message: parse, payload, registrations to notify.
fn decide(
    stanza: Element,
    available: bool,
    registrations: Vec<Registration>,
) -> Option<(Payload, Vec<Registration>)> {
    let event = Event::Chat(Message::parse(stanza)?);
    let payload = Defaults.prepare_notification(&event).ok()?;
    let context = Context {
        recipient_available: available,
        ..Context::default()
    };
    let chosen = Defaults
        .should_publish(&context, &event, registrations)
        .ok()?;
    Some((payload, chosen))
}

/// An offline recipient with 1 or 3 devices: a push to each.
#[divan::bench(args = [1, 3])]
fn decision_push(bencher: Bencher, devices: usize) {
    let (stanza, registrations) = (chat(), registrations(devices));
    bencher
        .with_inputs(|| (stanza.clone(), registrations.clone()))
        .bench_local_values(|(stanza, registrations)| {
            black_box(decide(stanza, false, registrations))
        });
}

/// An online recipient: skipped.
#[divan::bench]
fn decision_skip_online(bencher: Bencher) {
    let (stanza, registrations) = (chat(), registrations(1));
    bencher
        .with_inputs(|| (stanza.clone(), registrations.clone()))
        .bench_local_values(|(stanza, registrations)| {
            black_box(decide(stanza, true, registrations))
        });
}

/// A message without a body: skipped before the registrations are looked at.
#[divan::bench]
fn decision_skip_no_body(bencher: Bencher) {
    let (stanza, registrations) = (chat_state(), registrations(1));
    bencher
        .with_inputs(|| (stanza.clone(), registrations.clone()))
        .bench_local_values(|(stanza, registrations)| {
            black_box(decide(stanza, false, registrations))
        });
}

/// The publish IQ for one registration.
#[divan::bench]
fn publish_build(bencher: Bencher) {
    let registration = registrations(1).remove(0);
    let payload = Payload::summary(1, "alice@localhost", "Hello Bob, are you there?");
    bencher.bench_local(|| black_box(publish_iq("localhost", &registration, &payload)));
}

/// The publish IQ built and written to a component's stream, as it leaves for an app server
/// that is a component (herald's writer, moving the namespace while writing).
#[divan::bench]
fn publish_build_and_write(bencher: Bencher) {
    let registration = registrations(1).remove(0);
    let payload = Payload::summary(1, "alice@localhost", "Hello Bob, are you there?");
    let mut out = Vec::with_capacity(2048);
    bencher.bench_local(|| {
        out.clear();
        let iq = publish_iq("localhost", &registration, &payload);
        serialise::write_moving(&iq, ns::CLIENT, COMPONENT, &mut out).unwrap();
        black_box(out.len())
    });
}

/// The same the old way: the tree copied into the component's namespace, then written by
/// minidom.
#[divan::bench]
fn publish_build_and_write_minidom(bencher: Bencher) {
    let registration = registrations(1).remove(0);
    let payload = Payload::summary(1, "alice@localhost", "Hello Bob, are you there?");
    let mut out = Vec::with_capacity(2048);
    bencher.bench_local(|| {
        out.clear();
        let iq = publish_iq("localhost", &registration, &payload);
        with_namespace(iq, ns::CLIENT, COMPONENT)
            .write_to(&mut out)
            .unwrap();
        black_box(out.len())
    });
}

/// What a publish keeps for a possible retry, the old way: a copy of its element tree.
#[divan::bench]
fn publish_retry_copy_tree(bencher: Bencher) {
    let registration = registrations(1).remove(0);
    let payload = Payload::summary(1, "alice@localhost", "Hello Bob, are you there?");
    let iq = publish_iq("localhost", &registration, &payload);
    bencher.bench_local(|| black_box(iq.clone()));
}

/// What a publish keeps for a possible retry now: a copy of the text the outbox keeps
/// (serialised for the outbox anyway).
#[divan::bench]
fn publish_retry_copy_text(bencher: Bencher) {
    let registration = registrations(1).remove(0);
    let payload = Payload::summary(1, "alice@localhost", "Hello Bob, are you there?");
    let text = String::from(&publish_iq("localhost", &registration, &payload));
    bencher.bench_local(|| black_box(text.clone()));
}
