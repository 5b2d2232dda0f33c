//! XML framing of an XMPP stream (RFC 6120 section 4): the stream header, then one complete
//! top-level element at a time.
//!
//! The parser is rxml's namespace-resolving push parser, so the input is checked for
//! well-formedness and namespace well-formedness (RFC 6120 section 11.1 and 11.2) as it
//! arrives. Each top-level element's size is counted in input bytes and checked against
//! the listener's `max_stanza_size` before the element is complete, so an oversized stanza
//! never gets buffered whole.

use minidom::Element;
use rxml::{Event, Parse, error::EndOrError};

use crate::{StreamHeader, ns};

/// One unit read off the stream.
#[derive(Debug)]
pub enum Frame {
    /// The peer's stream header (RFC 6120 section 4.7).
    StreamOpen(StreamHeader),
    /// A complete first-level element: a stanza or a negotiation element.
    Element(Element),
    /// The peer closed its stream with `</stream:stream>` (RFC 6120 section 4.4).
    StreamClose,
}

/// Why the byte stream cannot be read on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes are not well-formed (namespaced) XML, or use a restricted XML feature
    /// (RFC 6120 section 11.1: no comments, processing instructions or DTDs).
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// A first-level element grew beyond the limit.
    #[error("stanza larger than {limit} bytes")]
    TooLarge {
        /// The configured `max_stanza_size`.
        limit: usize,
    },
    /// Elements nested deeper than [`MAX_DEPTH`] (a policy of this server: such documents
    /// only serve to exhaust the stack of whoever walks them).
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The root element is not `<stream:stream/>` in the streams namespace.
    #[error("the root element is not <stream:stream/> in {}", ns::STREAM)]
    InvalidNamespace,
}

/// The deepest nesting of elements accepted inside a stanza. Real payloads stay far below
/// it (Jingle, the deepest common one, is under ten levels).
pub const MAX_DEPTH: usize = 64;

/// A push parser for one stream; after STARTTLS or SASL success the stream restarts and the
/// caller calls [`StreamParser::reset`] (RFC 6120 sections 5.4.3.3 and 6.4.6).
pub struct StreamParser {
    /// rxml's parser. Inline, not boxed: an idle session's connection would keep the hole
    /// its freed box left (measured: 0.6 KiB more per idle session).
    parser: rxml::Parser,
    stack: Vec<Element>,
    in_stream: bool,
    /// A non-whitespace byte of the current document has been seen.
    started: bool,
    /// Bytes consumed since the last frame boundary (stream header, end of a first-level
    /// element, text between elements): the size of what is being built, including the
    /// parts of a start tag the lexer has not finished yet.
    since_boundary: usize,
    max_stanza_size: usize,
    /// The bytes of the current document read before its stream header was complete (the
    /// header is taken from them, then they are dropped).
    before_header: Vec<u8>,
    /// The stream header's start tag as the peer sent it, kept to park the parser.
    header: Option<Box<[u8]>>,
    /// The last bytes read ended a frame (the stream header or a first-level element): the
    /// lexer holds no part of a token.
    at_boundary: bool,
    /// The parser was replaced by a fresh one while idle ([`StreamParser::release_buffers`]),
    /// which reads the stream header again before the next bytes.
    parked: bool,
}

impl StreamParser {
    /// A parser that refuses first-level elements larger than `max_stanza_size` bytes.
    pub fn new(max_stanza_size: usize) -> StreamParser {
        StreamParser {
            parser: Self::fresh_parser(max_stanza_size),
            stack: Vec::new(),
            in_stream: false,
            started: false,
            since_boundary: 0,
            max_stanza_size,
            before_header: Vec::new(),
            header: None,
            at_boundary: false,
            parked: false,
        }
    }

    fn fresh_parser(max_stanza_size: usize) -> rxml::Parser {
        // A single token (attribute value, text chunk) can never be larger than the stanza.
        let options = rxml::Options {
            max_token_length: max_stanza_size.max(1024),
            ..Default::default()
        };
        <rxml::Parser as rxml::WithOptions>::with_options(options)
    }

    /// Forget everything: the next bytes start a new XML document (a stream restart).
    pub fn reset(&mut self) {
        self.parser = Self::fresh_parser(self.max_stanza_size);
        self.stack.clear();
        self.in_stream = false;
        self.started = false;
        self.since_boundary = 0;
        self.before_header = Vec::new();
        self.header = None;
        self.at_boundary = false;
        self.parked = false;
    }

    /// Give back the lexer's buffers while the peer is quiet: rxml reserves a token's largest
    /// size (here the stanza size limit) for each of its two scratch buffers and keeps them.
    /// They grow again with the next bytes; a partial token keeps what it holds.
    ///
    /// Between two stanzas the parser is replaced by a fresh one too (parked): what it keeps
    /// for the open stream element (its namespace declarations, their interned names) took
    /// about 900 bytes, against the ~150 bytes of the stream header it is rebuilt from. The
    /// fresh parser reads the peer's own start tag again before the next bytes, so every
    /// prefix the header declared still holds; nothing is framed from it a second time.
    pub fn release_buffers(&mut self) {
        self.parser.release_temporaries();
        self.stack.shrink_to_fit();
        // Only at a frame boundary with nothing read since: the lexer then holds no part of
        // a token. (Whitespace between stanzas is not a boundary: its text ends only at the
        // next `<`, which the lexer has then taken.)
        if self.in_stream && self.at_boundary && self.header.is_some() {
            self.parser = Self::fresh_parser(self.max_stanza_size);
            self.parked = true;
        }
    }

    /// A fresh parser for a parked stream, fed the stream header.
    fn unpark(&mut self) -> Result<(), FrameError> {
        self.parked = false;
        let parser = &mut self.parser;
        let mut header: &[u8] = self.header.as_deref().unwrap_or_default();
        loop {
            match parser.parse(&mut header, false) {
                // The start tag ends the header: it is consumed whole.
                Ok(Some(Event::StartElement(..))) => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) | Err(EndOrError::NeedMoreData) => {
                    return Err(FrameError::NotWellFormed(
                        "the stream header did not parse again".into(),
                    ));
                }
                Err(EndOrError::Error(e)) => return Err(FrameError::NotWellFormed(e.to_string())),
            }
        }
    }

    /// Parse `data` completely, appending every finished frame to `out`.
    ///
    /// On error the stream is unusable; the caller sends the matching stream error.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Frame>) -> Result<(), FrameError> {
        if self.parked && !data.is_empty() {
            self.unpark()?;
        }
        if !self.in_stream && self.header.is_none() {
            // Bounded: past max_stanza_size bytes without a header the stream is refused.
            self.before_header.extend_from_slice(data);
        }
        if !self.started {
            // A document starts with `<` (after optional whitespace). Anything else, such
            // as an HTTP request, would otherwise sit in the lexer until a `<` arrives.
            // XML whitespace (XML 1.0 production 3): space, tab, CR, LF; not form feed.
            match data
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                None => {}
                Some(b'<') => self.started = true,
                Some(_) => {
                    return Err(FrameError::NotWellFormed(
                        "text before the stream header".into(),
                    ));
                }
            }
        }
        loop {
            let before = data.len();
            let result = self.parser.parse(&mut data, false);
            // Every byte counts toward the element being built, even while the lexer still
            // holds it: an endless start tag or stream header is refused this way.
            self.since_boundary += before - data.len();
            if self.since_boundary > self.max_stanza_size {
                return Err(FrameError::TooLarge {
                    limit: self.max_stanza_size,
                });
            }
            if before != data.len() {
                self.at_boundary = false;
            }
            match result {
                Ok(Some(event)) => self.at_boundary = self.event(event, out)?,
                Ok(None) => return Ok(()),
                Err(EndOrError::NeedMoreData) => return Ok(()),
                Err(EndOrError::Error(e)) => return Err(FrameError::NotWellFormed(e.to_string())),
            }
        }
    }

    /// Handle one event; whether it ended a frame.
    fn event(&mut self, event: Event, out: &mut Vec<Frame>) -> Result<bool, FrameError> {
        match event {
            Event::XmlDeclaration(..) => {}
            Event::StartElement(_, (namespace, name), attrs) => {
                if !self.in_stream {
                    if name.as_str() != "stream" || namespace.as_str() != ns::STREAM {
                        return Err(FrameError::InvalidNamespace);
                    }
                    self.in_stream = true;
                    self.since_boundary = 0;
                    let before = std::mem::take(&mut self.before_header);
                    self.header = start_tag(&before).map(Box::from);
                    out.push(Frame::StreamOpen(StreamHeader::from_attrs(&attrs)));
                    return Ok(true);
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(FrameError::TooDeep);
                }
                let mut element = Element::bare(name.as_str(), namespace.as_str());
                *element.attrs_mut() = attrs;
                self.stack.push(element);
            }
            Event::Text(_, text) => match self.stack.last_mut() {
                Some(top) => top.append_text(text),
                // Between first-level elements only whitespace keepalives are sent
                // (RFC 6120 section 4.6.1); text there has no meaning and is dropped.
                None => self.since_boundary = 0,
            },
            Event::EndElement(_) => match self.stack.pop() {
                Some(element) => match self.stack.last_mut() {
                    Some(parent) => {
                        parent.append_child(element);
                    }
                    None => {
                        self.since_boundary = 0;
                        out.push(Frame::Element(element));
                        return Ok(true);
                    }
                },
                None => {
                    self.in_stream = false;
                    out.push(Frame::StreamClose);
                }
            },
        }
        Ok(false)
    }
}

/// The root element's start tag in the first bytes of a document that rxml read as one
/// (so well-formed up to it): after whitespace and an XML declaration, from `<` to the first
/// `>` outside an attribute value.
fn start_tag(document: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    loop {
        while document
            .get(at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            at += 1;
        }
        if document[at..].starts_with(b"<?") {
            let end = document[at..].windows(2).position(|w| w == b"?>")?;
            at += end + 2;
            continue;
        }
        break;
    }
    if document.get(at) != Some(&b'<') {
        return None;
    }
    let mut quote = None;
    for (i, &b) in document[at..].iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b'>') => return Some(&document[at..at + i + 1]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn frames(parser: &mut StreamParser, input: &str) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        parser.feed(input.as_bytes(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn header_then_stanzas_then_close_are_framed() {
        let mut p = StreamParser::new(65536);
        let out = frames(
            &mut p,
            &format!("{HEADER} <message to='a@b'><body>hi &amp; bye</body></message>\n<presence/></stream:stream>"),
        )
        .unwrap();
        assert_eq!(out.len(), 4);
        let Frame::StreamOpen(h) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(h.to.as_deref(), Some("localhost"));
        assert_eq!(h.version.as_deref(), Some("1.0"));
        let Frame::Element(m) = &out[1] else { panic!() };
        assert!(m.is("message", ns::CLIENT));
        assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "hi & bye");
        assert!(matches!(&out[2], Frame::Element(p) if p.is("presence", ns::CLIENT)));
        assert!(matches!(out[3], Frame::StreamClose));
    }

    #[test]
    fn input_split_at_every_byte_gives_the_same_frames() {
        let input = format!("{HEADER}<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
        let mut p = StreamParser::new(65536);
        let mut out = Vec::new();
        for b in input.as_bytes() {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out.len(), 2);
        let Frame::Element(iq) = &out[1] else {
            panic!()
        };
        assert!(iq.has_child("ping", "urn:xmpp:ping"));
    }

    #[test]
    fn garbage_is_not_well_formed() {
        let mut p = StreamParser::new(65536);
        let err = frames(&mut p, &format!("{HEADER}<message></presence>")).unwrap_err();
        assert!(matches!(err, FrameError::NotWellFormed(_)));
    }

    #[test]
    fn an_undeclared_prefix_is_not_well_formed() {
        let mut p = StreamParser::new(65536);
        assert!(matches!(
            frames(&mut p, &format!("{HEADER}<foo:bar/>")),
            Err(FrameError::NotWellFormed(_))
        ));
    }

    #[test]
    fn text_before_the_stream_header_is_refused_at_once() {
        let mut p = StreamParser::new(65536);
        assert!(matches!(
            frames(&mut p, "  GET / HTTP/1.1"),
            Err(FrameError::NotWellFormed(_))
        ));
    }

    #[test]
    fn a_root_other_than_stream_is_an_invalid_namespace() {
        let mut p = StreamParser::new(65536);
        assert_eq!(
            frames(&mut p, "<html>").unwrap_err(),
            FrameError::InvalidNamespace
        );
    }

    #[test]
    fn a_stanza_above_the_limit_is_refused_before_it_ends() {
        let mut p = StreamParser::new(1024);
        frames(&mut p, HEADER).unwrap();
        let big = format!("<message><body>{}", "x".repeat(2000));
        assert_eq!(
            frames(&mut p, &big).unwrap_err(),
            FrameError::TooLarge { limit: 1024 }
        );
    }

    #[test]
    fn many_small_stanzas_do_not_add_up_to_the_limit() {
        let mut p = StreamParser::new(1024);
        frames(&mut p, HEADER).unwrap();
        for _ in 0..100 {
            let out = frames(
                &mut p,
                "<message><body>0123456789012345678901234567890</body></message>",
            )
            .unwrap();
            assert_eq!(out.len(), 1);
        }
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_refused() {
        let mut p = StreamParser::new(1 << 20);
        frames(&mut p, HEADER).unwrap();
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(frames(&mut p, &deep).unwrap_err(), FrameError::TooDeep);
        let mut p = StreamParser::new(1 << 20);
        frames(&mut p, HEADER).unwrap();
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert_eq!(frames(&mut p, &ok).unwrap().len(), 1);
    }

    #[test]
    fn an_unfinished_start_tag_counts_toward_the_limit() {
        let mut p = StreamParser::new(1024);
        frames(&mut p, HEADER).unwrap();
        let refused = (0..100).any(|i| {
            let start = if i == 0 { "<message " } else { " " };
            frames(&mut p, &format!("{start}a{i}='{}'", "v".repeat(50))).is_err()
        });
        assert!(refused);
    }

    #[test]
    fn reset_accepts_a_new_stream_header() {
        let mut p = StreamParser::new(65536);
        frames(
            &mut p,
            &format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        )
        .unwrap();
        p.reset();
        let out = frames(&mut p, HEADER).unwrap();
        assert!(matches!(out[0], Frame::StreamOpen(_)));
    }

    /// What a parser frames from `chunks`, the parser released between every two of them.
    fn framed_with_releases(chunks: &[&[u8]]) -> Result<Vec<String>, FrameError> {
        let mut p = StreamParser::new(65536);
        let mut out = Vec::new();
        for chunk in chunks {
            p.feed(chunk, &mut out)?;
            p.release_buffers();
        }
        Ok(out.iter().map(|frame| format!("{frame:?}")).collect())
    }

    #[test]
    fn a_parser_released_between_any_two_bytes_frames_the_same() {
        let input = "<?xml version='1.0'?>\n<stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' xmlns:x='urn:x' to='a>b' version='1.0'>\
            <message to='a@b'><body>one</body></message> <x:ping/>\n\
            <iq type='get' id='1'><query xmlns='urn:q'><x:item k='&lt;'/></query></iq>\
            </stream:stream>";
        let bytes = input.as_bytes();
        let whole = framed_with_releases(&[bytes]).unwrap();
        assert_eq!(whole.len(), 5, "{whole:?}");
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                framed_with_releases(&[a, b]).unwrap(),
                whole,
                "split at {split}"
            );
        }
        let every_byte: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(framed_with_releases(&every_byte).unwrap(), whole);
    }

    #[test]
    fn a_parked_parser_keeps_the_headers_prefixes_and_refuses_what_it_refused() {
        let mut p = StreamParser::new(65536);
        let header = "<stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' xmlns:x='urn:x'>";
        frames(&mut p, &format!("{header}<presence/>")).unwrap();
        p.release_buffers();
        assert!(p.parked, "released at a frame boundary");
        let out = frames(&mut p, "<x:a/>").unwrap();
        let Frame::Element(a) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(a.is("a", "urn:x"), "{a:?}");
        p.release_buffers();
        assert!(matches!(
            frames(&mut p, "<y:a/>"),
            Err(FrameError::NotWellFormed(_))
        ));
    }

    #[test]
    fn a_parser_in_the_middle_of_a_stanza_is_not_parked() {
        let mut p = StreamParser::new(65536);
        frames(&mut p, HEADER).unwrap();
        frames(&mut p, "<message><bo").unwrap();
        p.release_buffers();
        assert!(!p.parked);
        frames(&mut p, " ").unwrap();
        p.release_buffers();
        assert!(!p.parked, "whitespace held by the lexer");
        let mut p = StreamParser::new(65536);
        frames(&mut p, "<?xml version='1.0'?><stream:str").unwrap();
        p.release_buffers();
        assert!(!p.parked, "no header yet");
    }

    #[test]
    fn the_start_tag_is_found_after_the_declaration_and_outside_quotes() {
        assert_eq!(
            start_tag(b" <?xml version='1.0'?>\n<s a='>' b=\"'>\">tail"),
            Some(&b"<s a='>' b=\"'>\">"[..])
        );
        assert_eq!(start_tag(b"<s a='unfinished"), None);
        assert_eq!(start_tag(b"text"), None);
    }
}
