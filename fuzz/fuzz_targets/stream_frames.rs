//! Arbitrary bytes, split at fuzzer-chosen points, through [`StreamParser`], and every framed
//! element through [`Stanza::parse`], [`Stanza::error_reply`] and herald's writer
//! ([`serialise`], which must write what minidom writes): bad input must end in a precise
//! [`FrameError`], never a panic or a hang.
//!
//! Input: `[limit, split, data @ ..]`.
//! * `limit`: bits 0-2 choose `max_stanza_size`, 1 KiB << (0..=6); bit 7 restarts the stream
//!   (as after STARTTLS or SASL success) after the first element, and feeds the rest anew;
//!   bit 6 releases the parser's buffers after every chunk (as an idle connection does,
//!   which parks the parser between stanzas).
//! * `split`: 0 feeds `data` whole; otherwise `data` goes in chunks of 1..=`split` bytes, the
//!   lengths drawn from a xorshift seeded with `split`. Without a restart, the chunked run must
//!   give the same frames and error as the whole one.

#![no_main]

use herald_stream::serialise;
use herald_stream::stanza::Stanza;
use herald_stream::{Frame, FrameError, StreamHeader, StreamParser};
use libfuzzer_sys::fuzz_target;
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

fuzz_target!(|input: &[u8]| {
    let [control, split, data @ ..] = input else {
        return;
    };
    let limit = 1024 << (control & 7).min(6);
    let restart = control & 0x80 != 0;
    let release = control & 0x40 != 0;
    let chunked = run(limit, data, *split, restart, release);
    if !restart {
        assert_eq!(
            chunked,
            run(limit, data, 0, false, false),
            "chunking changed the outcome"
        );
    }
});

/// A frame as compared between runs.
#[derive(Debug, PartialEq)]
enum Seen {
    Open(StreamHeader),
    Element(Element),
    Close,
    /// The stream restarted here.
    Restart,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Seen>,
    error: Option<ErrorKind>,
}

/// A [`FrameError`] without its message, which may name the first bad token differently
/// depending on where the input was split.
#[derive(Debug, PartialEq)]
enum ErrorKind {
    NotWellFormed,
    TooLarge,
    TooDeep,
    InvalidNamespace,
}

impl From<&FrameError> for ErrorKind {
    fn from(error: &FrameError) -> ErrorKind {
        match error {
            FrameError::NotWellFormed(_) => ErrorKind::NotWellFormed,
            FrameError::TooLarge { .. } => ErrorKind::TooLarge,
            FrameError::TooDeep => ErrorKind::TooDeep,
            FrameError::InvalidNamespace => ErrorKind::InvalidNamespace,
        }
    }
}

/// Feed `data` as `split` says; the first error ends the run, as it ends the stream.
fn run(limit: usize, data: &[u8], split: u8, restart: bool, release: bool) -> Outcome {
    let mut parser = StreamParser::new(limit);
    let mut order = Order::default();
    let mut chunks = Chunks(u64::from(split).max(1), split);
    let mut frames = Vec::new();
    let mut restart = restart;
    let mut rest = data;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(chunks.next_len(rest.len()));
        rest = later;
        let mut out = Vec::new();
        let result = parser.feed(now, &mut out);
        if release {
            parser.release_buffers();
        }
        let mut elements = 0;
        for frame in out {
            elements += usize::from(matches!(frame, Frame::Element(_)));
            frames.push(order.check(frame));
        }
        if let Err(error) = result {
            match &error {
                FrameError::NotWellFormed(why) => assert!(!why.is_empty()),
                FrameError::TooLarge { limit: reported } => assert_eq!(*reported, limit),
                FrameError::TooDeep | FrameError::InvalidNamespace => {}
            }
            return Outcome {
                frames,
                error: Some(ErrorKind::from(&error)),
            };
        }
        if restart && elements > 0 {
            restart = false;
            parser.reset();
            order = Order::default();
            frames.push(Seen::Restart);
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Chunk lengths: all at once for 0, else xorshift64 draws in `1..=max`.
struct Chunks(u64, u8);

impl Chunks {
    fn next_len(&mut self, left: usize) -> usize {
        if self.1 == 0 {
            return left;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (1 + (self.0 % u64::from(self.1)) as usize).min(left)
    }
}

/// Frames come in stream order: one header, elements, at most one close.
#[derive(Default)]
struct Order {
    opened: bool,
    closed: bool,
}

impl Order {
    fn check(&mut self, frame: Frame) -> Seen {
        assert!(!self.closed, "a frame after </stream:stream>");
        match frame {
            Frame::StreamOpen(header) => {
                assert!(!self.opened, "a second stream header without a restart");
                self.opened = true;
                Seen::Open(header)
            }
            Frame::Element(element) => {
                assert!(self.opened, "an element before the stream header");
                answer(&element);
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

/// What the server does with a first-level element: parse it, and answer it with an error;
/// and write it out as herald's writer does it, which must be what minidom writes.
fn answer(element: &Element) {
    let written = serialise::to_string(element);
    assert_eq!(written, String::from(element));
    if !element.has_ns("") {
        let back: Element = written.parse().expect("what herald writes parses");
        assert_eq!(&back, element);
    }
    match Stanza::parse(element.clone()) {
        Ok(stanza) => {
            match stanza.error_reply(ErrorType::Cancel, DefinedCondition::ServiceUnavailable) {
                None => assert!(stanza.is_error()),
                Some(reply) => {
                    assert_eq!(reply.attr("type"), Some("error"));
                    let sender = stanza.from.as_ref().map(ToString::to_string);
                    assert_eq!(reply.attr("to"), sender.as_deref());
                    let _ = String::from(&reply);
                }
            }
        }
        Err(rejected) => assert_eq!(&rejected.element, element),
    }
}
