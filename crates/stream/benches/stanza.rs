//! Micro-benchmarks of the stream layer's hot path: bytes to stanzas (rxml framing in
//! `StreamParser`), typed addressing (`Stanza::parse`), and stanzas back to bytes (minidom's
//! writer, and herald's `serialise` beside it).
//! Run with `cargo bench -p herald-stream`.

use divan::{Bencher, black_box, counter::BytesCount};
use herald_stream::{Frame, Stanza, StreamParser};
use minidom::Element;

/// Counts every allocation: divan prints allocations and bytes per iteration beside the time
/// (issue 18's "allocation counts per push").
#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// A chat message as a client sends it.
fn message(n: usize) -> String {
    format!(
        "<message type='chat' id='m{n}' to='bob@localhost'><body>Hello Bob, message number {n}</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
}

/// A push publish as the app server receives it (XEP-0357 section 6).
const PUBLISH: &str = "<iq type='set' id='p1' from='localhost' to='push.localhost'>\
    <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='yxs32uqsflafdk3iuqo'><item>\
    <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
    <field var='message-count'><value>1</value></field>\
    <field var='last-message-sender'><value>alice@localhost</value></field>\
    <field var='last-message-body'><value>OH, HAI!</value></field>\
    </x></notification></item></publish>\
    <publish-options><x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
    <field var='device_id'><value>TOKEN</value></field><field var='service'><value>apns</value></field>\
    </x></publish-options></pubsub></iq>";

/// A stream of `count` messages, fed in 16 KiB reads like a busy socket.
#[divan::bench(args = [1, 100])]
fn parse_messages(bencher: Bencher, count: usize) {
    let body: String = (0..count).map(message).collect();
    let input = format!("{HEADER}{body}");
    bencher
        .counter(BytesCount::new(input.len()))
        .bench_local(|| {
            let mut parser = StreamParser::new(65536);
            let mut out = Vec::with_capacity(count + 1);
            for chunk in input.as_bytes().chunks(16 * 1024) {
                parser.feed(chunk, &mut out).unwrap();
            }
            black_box(out)
        });
}

/// The publish IQ, parsed off a stream.
#[divan::bench]
fn parse_publish(bencher: Bencher) {
    let input = format!("{HEADER}{PUBLISH}");
    bencher
        .counter(BytesCount::new(PUBLISH.len()))
        .bench_local(|| {
            let mut parser = StreamParser::new(65536);
            let mut out = Vec::with_capacity(2);
            parser.feed(input.as_bytes(), &mut out).unwrap();
            black_box(out)
        });
}

fn first_element(xml: &str) -> Element {
    let mut parser = StreamParser::new(65536);
    let mut out = Vec::new();
    parser
        .feed(format!("{HEADER}{xml}").as_bytes(), &mut out)
        .unwrap();
    out.into_iter()
        .find_map(|frame| match frame {
            Frame::Element(element) => Some(element),
            _ => None,
        })
        .expect("one element")
}

/// Typed addressing of a parsed message (kind, type, from/to/id as JIDs).
#[divan::bench]
fn stanza_parse(bencher: Bencher) {
    let element = first_element(&message(1));
    bencher
        .with_inputs(|| element.clone())
        .bench_local_values(|element| black_box(Stanza::parse(element).is_ok()));
}

/// A message written back to bytes, as a session's writer does.
#[divan::bench]
fn write_message(bencher: Bencher) {
    let element = first_element(&message(1));
    let mut out = Vec::with_capacity(1024);
    bencher.bench_local(|| {
        out.clear();
        element.write_to(&mut out).unwrap();
        black_box(out.len())
    });
}

/// The publish IQ written to bytes.
#[divan::bench]
fn write_publish(bencher: Bencher) {
    let element = first_element(PUBLISH);
    let mut out = Vec::with_capacity(2048);
    bencher.bench_local(|| {
        out.clear();
        element.write_to(&mut out).unwrap();
        black_box(out.len())
    });
}

/// The message written by herald's writer (`serialise::write`), as a session's writer does.
#[divan::bench]
fn write_message_herald(bencher: Bencher) {
    let element = first_element(&message(1));
    let mut out = Vec::with_capacity(1024);
    bencher.bench_local(|| {
        out.clear();
        herald_stream::serialise::write(&element, &mut out).unwrap();
        black_box(out.len())
    });
}

/// The publish IQ written by herald's writer.
#[divan::bench]
fn write_publish_herald(bencher: Bencher) {
    let element = first_element(PUBLISH);
    let mut out = Vec::with_capacity(2048);
    bencher.bench_local(|| {
        out.clear();
        herald_stream::serialise::write(&element, &mut out).unwrap();
        black_box(out.len())
    });
}

/// The message as a new string (an offline or archive row), by minidom and by herald.
#[divan::bench]
fn message_to_string(bencher: Bencher) {
    let element = first_element(&message(1));
    bencher.bench_local(|| black_box(String::from(&element)));
}

/// The same by herald's writer (`serialise::to_string`).
#[divan::bench]
fn message_to_string_herald(bencher: Bencher) {
    let element = first_element(&message(1));
    bencher.bench_local(|| black_box(herald_stream::serialise::to_string(&element)));
}

/// A copy of a message as the push benchmark's recipients get it (archived: a stanza-id and
/// an origin-id), as the push module's offline hook made one for every push before it lent
/// the stanza instead.
#[divan::bench]
fn clone_archived_message(bencher: Bencher) {
    let element = first_element(
        "<message type='chat' id='m1' to='bob@localhost' from='alice@localhost/phone'>\
         <body>Hello Bob, message number 1</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='0a1b2c3d-1'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='1764850000000000000' by='bob@localhost'/>\
         </message>",
    );
    bencher.bench_local(|| black_box(element.clone()));
}
