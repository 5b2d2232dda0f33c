//! Bad input on a client stream gets a precise protocol error, never a panic, a hang or
//! unbounded buffering (RFC 6120 section 13.12: resource exhaustion).
//!
//! Deterministic fuzzing for the normal test suite: random bytes and mutations of valid stream
//! fragments go through [`StreamParser`] in random chunk sizes, and every element it frames goes
//! through [`Stanza::parse`] and [`Stanza::error_reply`]. The generator is a fixed-seed xorshift,
//! so a failure reproduces with the same seed; `fuzz/` has the open-ended version.

use std::thread;

use herald_stream::stanza::Stanza;
use herald_stream::{Frame, FrameError, StreamHeader, StreamParser};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

/// The server's default `max_stanza_size`.
const LIMIT: usize = 65536;

/// Tokio's default worker stack: where the server runs the parser.
const WORKER_STACK: usize = 2 * 1024 * 1024;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators").
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must not be zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn nested(depth: usize) -> String {
    format!(
        "<message><body>{}deep{}</body></message>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    )
}

/// Valid and almost valid pieces of a client stream, mutated and spliced by the tests.
fn fragments() -> Vec<Vec<u8>> {
    let text: &[&str] = &[
        HEADER,
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        "<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type='chat' \
         id='m1'><body>Art thou not Romeo, and a Montague?</body><thread>e0ffe42b</thread></message>",
        "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>balcony</resource></bind></iq>",
        "<iq type='get' id='r1' to='example.com'><query xmlns='jabber:iq:roster' ver=''>\
         <item jid='nurse@example.com' name='Nurse'><group>Servants</group></item></query></iq>",
        "<iq type='error' id='e1'><error type='cancel'><service-unavailable \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        "<presence><show>away</show><status>at the ball</status><priority>5</priority></presence>",
        "<presence type='subscribe' to='juliet@example.com'/>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>\
         biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        "<!-- a comment -->",
        "<message><body><![CDATA[<not markup> & ]]]]></body></message>",
        "<message><body>&amp;&lt;&gt;&apos;&quot;&#65;&#x1F600;&nbsp;&#0;&#xD800;</body></message>",
        "<?xml-stylesheet href='a'?>",
        "<!DOCTYPE stream:stream [<!ENTITY x 'y'>]>",
        "<message xmlns:p='urn:p'><p:x p:a='1' a='2'/><body xml:lang='fr'>salut</body></message>",
        "<message to='a@b@c' from='@/'/><iq type='get'/><presence type='bogus'/>",
        "<foo xmlns='jabber:client'/><message xmlns='jabber:server'/><iq id='x' type='result'/>",
        "<message><body>unclosed",
        "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         </stream:error>",
        "</stream:stream>",
        " \n\t ",
        "<message a='1' a='2'/><message xmlns='x' xmlns='y'/><message xmlns:p='a' xmlns:p='b'/>",
        "<message to='\u{e9}l\u{e8}ve@\u{1F600}.example/\u{200B}'>\u{FEFF}</message>",
    ];
    let mut fragments: Vec<Vec<u8>> = text.iter().map(|t| t.as_bytes().to_vec()).collect();
    fragments.push(b"<message><body>\xff\xfe\xc3\x28\xed\xa0\x80</body></message>".to_vec());
    fragments.push(b"<message><body>a\0b</body></message>\0".to_vec());
    fragments.push(nested(100).into_bytes());
    fragments
}

/// Big pieces, used less often: one per stanza-size-sized class of attack.
fn large_fragments() -> Vec<Vec<u8>> {
    vec![
        nested(10_000).into_bytes(),
        format!("<message id='{}'/>", "x".repeat(70_000)).into_bytes(),
        format!("<message><body>{}</body></message>", "y".repeat(70_000)).into_bytes(),
    ]
}

/// A document: usually a header, then a few fragments, sometimes a close.
fn document(rng: &mut Rng, fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut doc = Vec::new();
    if !rng.one_in(8) {
        doc.extend_from_slice(HEADER.as_bytes());
    }
    for _ in 0..1 + rng.below(4) {
        let fragment = rng.pick(fragments);
        doc.extend_from_slice(fragment);
    }
    if rng.one_in(3) {
        doc.extend_from_slice(b"</stream:stream>");
    }
    doc
}

/// Bytes that change the meaning of XML around them.
const SPECIAL: &[u8] = b"<>/&;'\"=:!?[]-# \0\xff\x80\xc3";

fn mutate(rng: &mut Rng, doc: &mut Vec<u8>, fragments: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let at = rng.below(doc.len() + 1);
        match rng.below(7) {
            0 if at < doc.len() => doc[at] ^= 1 << rng.below(8),
            1 if at < doc.len() => doc[at] = *rng.pick(SPECIAL),
            2 => doc.insert(at, rng.byte()),
            3 => {
                let fragment = rng.pick(fragments).clone();
                doc.splice(at..at, fragment);
            }
            4 => {
                let end = (at + 1 + rng.below(32)).min(doc.len());
                doc.drain(at..end);
            }
            5 => doc.truncate(at),
            _ => {
                let end = (at + 1 + rng.below(64)).min(doc.len());
                let copy = doc[at..end].to_vec();
                doc.splice(at..at, copy);
            }
        }
    }
}

/// How many bytes the next `feed` gets: mostly small, sometimes large, sometimes all.
fn chunk_len(rng: &mut Rng, left: usize) -> usize {
    let len = match rng.below(4) {
        0 => 1,
        1 => 1 + rng.below(16),
        2 => 1 + rng.below(4096),
        _ => left,
    };
    len.min(left)
}

/// A frame as compared between runs; elements are compared whole.
#[derive(Debug, PartialEq)]
enum Seen {
    Open(StreamHeader),
    Element(Element),
    Close,
}

/// What a run of the parser gave: the frames, then the error that ended it, if any.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Seen>,
    error: Option<FrameError>,
}

/// Feed `input` to a fresh parser, in chunks that `chunk` chooses, and check every frame.
///
/// The first error ends the run: the server sends a stream error and closes the stream, so a
/// parser is never fed after an error, and nor is it here.
fn run(limit: usize, input: &[u8], mut chunk: impl FnMut(usize) -> usize) -> Outcome {
    let mut parser = StreamParser::new(limit);
    let mut order = FrameOrder::default();
    let mut frames = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(chunk(rest.len()));
        rest = later;
        let mut out = Vec::new();
        let result = parser.feed(now, &mut out);
        for frame in out {
            frames.push(order.check(frame));
        }
        if let Err(error) = result {
            assert_precise(&error, limit);
            return Outcome {
                frames,
                error: Some(error),
            };
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

fn assert_precise(error: &FrameError, limit: usize) {
    match error {
        FrameError::NotWellFormed(why) => assert!(!why.is_empty()),
        FrameError::TooLarge { limit: reported } => assert_eq!(*reported, limit),
        FrameError::InvalidNamespace => {}
    }
}

/// Checks that frames come in stream order: one header, elements, at most one close.
#[derive(Default)]
struct FrameOrder {
    opened: bool,
    closed: bool,
}

impl FrameOrder {
    fn check(&mut self, frame: Frame) -> Seen {
        assert!(!self.closed, "a frame after </stream:stream>: {frame:?}");
        match frame {
            Frame::StreamOpen(header) => {
                assert!(!self.opened, "a second stream header without a reset");
                self.opened = true;
                Seen::Open(header)
            }
            Frame::Element(element) => {
                assert!(self.opened, "an element before the stream header");
                check_stanza(&element);
                Seen::Element(element)
            }
            Frame::StreamClose => {
                assert!(self.opened, "a close before the stream header");
                self.closed = true;
                Seen::Close
            }
        }
    }
}

/// What the server does with a first-level element: parse it, and answer with an error.
fn check_stanza(element: &Element) {
    match Stanza::parse(element.clone()) {
        Ok(stanza) => {
            let reply = stanza.error_reply(ErrorType::Cancel, DefinedCondition::ServiceUnavailable);
            match reply {
                None => assert!(stanza.is_error()),
                Some(reply) => {
                    assert_eq!(reply.attr("type"), Some("error"));
                    let sender = stanza.from.as_ref().map(ToString::to_string);
                    assert_eq!(reply.attr("to"), sender.as_deref());
                }
            }
        }
        Err(rejected) => assert_eq!(&rejected.element, element),
    }
}

/// Parse `input` in random chunks and again in one piece: the chunking must not change the
/// frames or the error.
fn check_input(rng: &mut Rng, limit: usize, input: &[u8]) {
    let chunked = run(limit, input, |left| chunk_len(rng, left));
    let whole = run(limit, input, |left| left);
    assert_eq!(
        chunked,
        whole,
        "chunking changed the outcome for {:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn random_bytes_never_panic_the_stream_parser() {
    let mut rng = Rng::new(0x5eed_0001);
    for round in 0..4000 {
        let mut input = Vec::new();
        // Most random bytes fail at the first one; behind a valid header they reach further.
        if round % 2 == 0 {
            input.extend_from_slice(HEADER.as_bytes());
        }
        let len = rng.below(512);
        if round % 4 < 2 {
            input.extend((0..len).map(|_| rng.byte()));
        } else {
            // Mostly markup bytes, so that random input forms tags, attributes and references.
            input.extend((0..len).map(|_| *rng.pick(b"<>/&;'\"=:!?[] #xamp\0\xffstream")));
        }
        check_input(&mut rng, LIMIT, &input);
    }
}

#[test]
fn mutated_stream_fragments_end_in_frames_or_a_precise_error() {
    let fragments = fragments();
    let mut rng = Rng::new(0x5eed_0002);
    for _ in 0..16_000 {
        let mut input = document(&mut rng, &fragments);
        mutate(&mut rng, &mut input, &fragments);
        check_input(&mut rng, LIMIT, &input);
    }
}

#[test]
fn mutated_large_documents_end_in_frames_or_a_precise_error() {
    let fragments = fragments();
    let large = large_fragments();
    let mut rng = Rng::new(0x5eed_0003);
    for round in 0..150 {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&large[round % large.len()]);
        let fragment = rng.pick(&fragments);
        input.extend_from_slice(fragment);
        mutate(&mut rng, &mut input, &fragments);
        // Compared whole, a deep element would recurse in `PartialEq`; the run checks the rest.
        run(LIMIT, &input, |left| chunk_len(&mut rng, left));
    }
}

#[test]
fn a_stream_restart_accepts_a_new_header_after_any_stanzas() {
    let fragments = fragments();
    let mut rng = Rng::new(0x5eed_0004);
    for _ in 0..500 {
        let mut parser = StreamParser::new(LIMIT);
        let mut out = Vec::new();
        let mut input = document(&mut rng, &fragments);
        mutate(&mut rng, &mut input, &fragments);
        let at = rng.below(input.len() + 1);
        if parser.feed(&input[..at], &mut out).is_err() {
            continue;
        }
        // After STARTTLS or SASL success the stream restarts (RFC 6120 section 4.3.3).
        parser.reset();
        out.clear();
        parser.feed(HEADER.as_bytes(), &mut out).unwrap();
        assert!(matches!(out.as_slice(), [Frame::StreamOpen(_)]), "{out:?}");
    }
}

#[test]
fn a_megabyte_text_node_is_too_large_before_it_is_buffered() {
    let mut parser = StreamParser::new(LIMIT);
    let mut out = Vec::new();
    parser.feed(HEADER.as_bytes(), &mut out).unwrap();
    parser.feed(b"<message><body>", &mut out).unwrap();
    let chunk = [b'x'; 4096];
    let mut fed = 0;
    let error = loop {
        assert!(fed <= 1 << 20, "a megabyte of text was accepted");
        match parser.feed(&chunk, &mut out) {
            Ok(()) => fed += chunk.len(),
            Err(error) => break error,
        }
    };
    assert_eq!(error, FrameError::TooLarge { limit: LIMIT });
    // A text token is at most `max_stanza_size` bytes, so the refusal comes within about two
    // limits of input, not after the whole megabyte.
    assert!(
        fed <= 2 * LIMIT + chunk.len(),
        "refused only after {fed} bytes"
    );
}

/// Parse `input` on a thread with the server's worker stack, answer every stanza with an error
/// and drop it there; the number of frames.
fn parse_on_worker_stack(limit: usize, input: String) -> Result<usize, FrameError> {
    thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let mut parser = StreamParser::new(limit);
            let mut out = Vec::new();
            parser.feed(input.as_bytes(), &mut out)?;
            eprintln!("parsed");
            if std::env::var("STAGE").as_deref() == Ok("drop") {
                let n = out.len();
                drop(out);
                eprintln!("dropped");
                return Ok(n);
            }
            if std::env::var("STAGE").as_deref() == Ok("clone") {
                if let Frame::Element(e) = &out[1] {
                    let c = e.clone();
                    eprintln!("cloned");
                    std::mem::forget(c);
                }
                return Ok(0);
            }
            if std::env::var("STAGE").as_deref() == Ok("fmt") {
                if let Frame::Element(e) = &out[1] {
                    let s = String::from(e);
                    eprintln!("serialized {}", s.len());
                }
                return Ok(0);
            }
            if std::env::var("STAGE").as_deref() == Ok("forget") {
                std::mem::forget(out);
                return Ok(0);
            }
            for frame in &out {
                if let Frame::Element(element) = frame {
                    if let Ok(stanza) = Stanza::parse(element.clone()) {
                        drop(stanza.error_reply(ErrorType::Modify, DefinedCondition::BadRequest));
                    }
                }
            }
            Ok(out.len())
        })
        .unwrap()
        .join()
        .expect("the parser thread overflowed its stack or panicked")
}

#[test]
fn ten_thousand_nested_elements_are_too_large_under_the_default_limit() {
    let input = format!("{HEADER}{}", nested(10_000));
    assert_eq!(
        parse_on_worker_stack(LIMIT, input).unwrap_err(),
        FrameError::TooLarge { limit: LIMIT }
    );
}

#[test]
fn the_deepest_stanza_the_default_limit_allows_does_not_overflow_the_stack() {
    // `<a>` and `</a>` take 7 bytes a level: about 9,300 levels fit in 65536 bytes.
    let depth = (LIMIT - 64) / 7;
    let frames = parse_on_worker_stack(LIMIT, format!("{HEADER}{}", nested(depth))).unwrap();
    assert_eq!(frames, 2);
}

#[test]
fn ten_thousand_nested_elements_under_a_larger_limit_do_not_overflow_the_stack() {
    let frames = parse_on_worker_stack(1 << 20, format!("{HEADER}{}", nested(10_000))).unwrap();
    assert_eq!(frames, 2);
}

#[test]
fn a_start_tag_with_endless_attributes_is_refused_before_it_ends() {
    let mut parser = StreamParser::new(LIMIT);
    let mut out = Vec::new();
    parser.feed(HEADER.as_bytes(), &mut out).unwrap();
    parser.feed(b"<message", &mut out).unwrap();
    let mut fed = 0;
    let result = (0..).try_for_each(|i| {
        if fed > 16 * LIMIT {
            return Err(None);
        }
        let attribute = format!(" a{i}='{}'", "v".repeat(100));
        fed += attribute.len();
        parser.feed(attribute.as_bytes(), &mut out).map_err(Some)
    });
    match result {
        Err(Some(error)) => assert_eq!(error, FrameError::TooLarge { limit: LIMIT }),
        _ => panic!("{fed} bytes of one start tag were buffered without an error"),
    }
}

#[test]
fn a_stream_header_with_endless_attributes_is_refused_before_it_ends() {
    let mut parser = StreamParser::new(LIMIT);
    let mut out = Vec::new();
    parser
        .feed(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'",
            &mut out,
        )
        .unwrap();
    let mut fed = 0;
    let result = (0..).try_for_each(|i| {
        if fed > 16 * LIMIT {
            return Err(None);
        }
        let attribute = format!(" xmlns:p{i}='urn:{}'", "v".repeat(100));
        fed += attribute.len();
        parser.feed(attribute.as_bytes(), &mut out).map_err(Some)
    });
    assert!(
        matches!(result, Err(Some(_))),
        "{fed} bytes of the stream header were buffered without an error"
    );
}
