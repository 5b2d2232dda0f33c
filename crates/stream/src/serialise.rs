//! Elements to bytes on the hot path: every stanza a connection writes, every message stored
//! offline or archived, every publish kept for a retry.
//!
//! minidom's writer (`Element::write_to`, `String::from(&Element)`) drives rxml's encoder one
//! item at a time, each into a fresh buffer, with a namespace tracker of maps: a chat message
//! cost it 17 allocations and a push publish 113, and stanza serialisation was an eighth of
//! the server's samples in a profile of the push benchmark (docs/BENCHMARKS.md, "Serialising
//! stanzas").
//! This writer appends to the caller's buffer directly. It writes what minidom writes for the
//! elements herald meets (checked byte for byte in the tests): an element's namespace declared
//! as the default one (`xmlns='...'`) where it differs from its parent's or where the element
//! was parsed with that declaration, attributes in single quotes, `xml:` attributes, text and
//! attribute values escaped as rxml escapes them (XML 1.0 section 2.4 and section 3.3.3's
//! attribute-value normalisation kept at bay with character references). Anything else (a namespace prefix declared on an element, an attribute in
//! another namespace, a name this writer does not vouch for) is handed to minidom's writer
//! whole.
//!
//! A character XML forbids (section 2.2: the C0 controls but tab, newline and carriage return;
//! U+FFFE and U+FFFF) cannot be written, not even as a character reference; the parser never
//! lets one in, but a string herald builds could hold one. minidom's writer panics there; this
//! one writes U+FFFD (the replacement character) instead and logs a warning, so a stray
//! character is shown differently but never ends the task that writes it. (The rare elements
//! handed to minidom keep minidom's behaviour.)

use minidom::{Element, Node};

use crate::ns;

/// Namespaces compared first, so that the common ones are written without copying the
/// element's own (minidom hands out an element's namespace only as a new `String`).
const KNOWN: &[&str] = &[
    ns::CLIENT,
    "jabber:component:accept",
    "jabber:server",
    "urn:xmpp:sid:0",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:hints",
    "urn:xmpp:delay",
    "http://jabber.org/protocol/pubsub",
    "urn:xmpp:push:0",
    "jabber:x:data",
    "urn:xmpp:mam:2",
    "urn:xmpp:forward:0",
    "urn:xmpp:carbons:2",
    "urn:ietf:params:xml:ns:xmpp-stanzas",
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
];

/// Room made before writing into a buffer, enough for a chat message (about 300 bytes): a
/// buffer grown from empty piece by piece was reallocated a dozen times a stanza. Kept under
/// 1 KiB: glibc serves a request from 1,008 bytes from its large bins, after merging every
/// small free chunk (`malloc_consolidate`), which cost more than the growth saved.
const RESERVE: usize = 512;

/// The XML namespace (XML Namespaces 1.0 section 3): its attributes are written `xml:name`.
const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Where the writer appends.
trait Sink {
    fn put(&mut self, text: &str);
    /// Whether what is put is written (not only counted): a replaced character is logged
    /// then.
    fn writes(&self) -> bool {
        true
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

impl Sink for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Append `element` to `out`, as minidom's `write_to` would; on an error nothing of the
/// element is left in `out`.
pub fn write(element: &Element, out: &mut Vec<u8>) -> Result<(), minidom::Error> {
    write_with(element, None, out)
}

/// Append `element` moved from namespace `from` to namespace `to` (itself and its
/// descendants), as [`crate::stanza::with_namespace`] followed by [`write()`] would, without
/// building the moved copy: a stanza written to a component's or a server's stream.
pub fn write_moving(
    element: &Element,
    from: &str,
    to: &str,
    out: &mut Vec<u8>,
) -> Result<(), minidom::Error> {
    write_with(element, Some((from, to)), out)
}

/// [`write()`], moving a namespace if `moving` says so; minidom's writer (on a moved copy)
/// for what this one leaves to it.
fn write_with(
    element: &Element,
    moving: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<(), minidom::Error> {
    if out.capacity() == 0 {
        out.reserve(RESERVE);
    }
    let start = out.len();
    let mut writer = Writer {
        out: &mut *out,
        moving,
    };
    if writer.element(element, None).is_some() {
        return Ok(());
    }
    out.truncate(start);
    let written = match moving {
        Some((from, to)) => crate::stanza::with_namespace(element.clone(), from, to).write_to(out),
        None => element.write_to(out),
    };
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// `element` as text, as `String::from(&Element)` makes it.
///
/// The string is allocated at its exact length (a first pass counts it): these strings are
/// kept (offline and archive rows, the outbox's copy), and a buffer sized by guess either
/// grows or keeps unused room.
pub fn to_string(element: &Element) -> String {
    let mut count = Count(0);
    if write_element(element, &mut count).is_some() {
        let mut out = String::with_capacity(count.0);
        if write_element(element, &mut out).is_some() {
            return out;
        }
    }
    String::from(element)
}

/// A sink that only counts the bytes it would be given.
struct Count(usize);

impl Sink for Count {
    fn put(&mut self, text: &str) {
        self.0 += text.len();
    }
    fn writes(&self) -> bool {
        false
    }
}

/// The writer: where it appends, and the namespace it moves (`(from, to)`), if any.
struct Writer<'a, S> {
    out: &'a mut S,
    moving: Option<(&'a str, &'a str)>,
}

/// A written element's namespace: the element's own, and the one written (its own, or the
/// namespace it was moved to).
#[derive(Clone, Copy)]
struct Namespaces<'a> {
    own: &'a str,
    written: &'a str,
}

impl<S: Sink> Writer<'_, S> {
    /// Write `element` whose parent's namespaces are `parent` (`None` at the top); `None`
    /// when it needs minidom's writer (what was written is then discarded by the caller).
    fn element(&mut self, element: &Element, parent: Option<Namespaces<'_>>) -> Option<()> {
        if element
            .prefixes
            .declared_prefixes()
            .keys()
            .any(Option::is_some)
        {
            return None;
        }
        let name = element.name();
        if !plain_name(name) {
            return None;
        }
        self.out.put("<");
        self.out.put(name);
        let owned;
        let own = match parent {
            Some(parent) if element.has_ns(parent.own) => parent.own,
            _ => match KNOWN.iter().find(|known| element.has_ns(**known)) {
                Some(known) => *known,
                None => {
                    owned = element.ns();
                    owned.as_str()
                }
            },
        };
        let written = match self.moving {
            Some((from, to)) if own == from => to,
            _ => own,
        };
        // A default namespace declared on the element itself (a parsed element keeps those
        // of its source): minidom writes it again even where the parent's is the same, and
        // so does this writer. A moved element is a fresh copy without them.
        let kept = match self.moving {
            None => element.prefixes.declared_prefixes().get(&None),
            Some(_) => None,
        };
        if kept.is_some_and(|kept| kept != own) {
            return None;
        }
        let declared = kept.is_some()
            || match parent {
                Some(parent) => parent.written != written,
                // An element in no namespace at the top needs no declaration.
                None => !written.is_empty(),
            };
        if declared {
            self.out.put(" xmlns='");
            escape(written, true, self.out);
            self.out.put("'");
        }
        for ((attribute_ns, attribute), value) in element.attrs() {
            self.out.put(" ");
            if !attribute_ns.is_none() {
                if attribute_ns.as_str() != XML {
                    return None;
                }
                self.out.put("xml:");
            }
            self.out.put(attribute.as_str());
            self.out.put("='");
            escape(value, true, self.out);
            self.out.put("'");
        }
        let mut nodes = element.nodes().peekable();
        if nodes.peek().is_none() {
            self.out.put("/>");
            return Some(());
        }
        self.out.put(">");
        let namespaces = Namespaces { own, written };
        for node in nodes {
            match node {
                Node::Element(child) => self.element(child, Some(namespaces))?,
                Node::Text(text) => escape(text, false, self.out),
            }
        }
        self.out.put("</");
        self.out.put(name);
        self.out.put(">");
        Some(())
    }
}

/// Write `element` (no namespace moved); `None` when it needs minidom's writer.
fn write_element<S: Sink>(element: &Element, out: &mut S) -> Option<()> {
    Writer { out, moving: None }.element(element, None)
}

/// An element name this writer vouches for without rxml's check: ASCII letters, digits, `-`,
/// `_` and `.`, not starting with a digit, `-` or `.` (a subset of XML's NCName; anything
/// else goes to minidom, which checks it).
fn plain_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphabetic() || *first == b'_' => {}
        _ => return false,
    }
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Bytes that need a look in text (`0`) and in attribute values (`1`): what is escaped, what
/// XML forbids, and the bytes that end U+FFFE and U+FFFF.
const SPECIAL: [[bool; 256]; 2] = {
    let mut table = [[false; 256]; 2];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        let always = matches!(b, b'<' | b'>' | b'&' | b'\r' | 0xbe | 0xbf)
            || (b < 0x20 && !matches!(b, b'\t' | b'\n'));
        table[0][byte] = always;
        table[1][byte] = always || matches!(b, b'"' | b'\'' | b'\n' | b'\t');
        byte += 1;
    }
    table
};

/// Append `text` escaped (XML 1.0 section 2.4): `<`, `>` and `&` always, `\r` as a character
/// reference (section 2.11 would turn it into `\n`), and in an attribute value the quotes and
/// `\n` and `\t` too (section 3.3.3 would turn those into spaces). A character XML forbids is
/// written as U+FFFD (see the module's doc). Text with nothing to escape, the usual case, is
/// appended in one piece.
fn escape<S: Sink>(text: &str, attribute: bool, out: &mut S) {
    let special = &SPECIAL[usize::from(attribute)];
    let bytes = text.as_bytes();
    let mut from = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|b| special[usize::from(*b)]) {
        let i = at + found;
        at = i + 1;
        let byte = bytes[i];
        // What to write instead of bytes `start..=i`.
        let (start, replacement) = match byte {
            b'<' => (i, "&lt;"),
            b'>' => (i, "&gt;"),
            b'&' => (i, "&amp;"),
            b'\r' => (i, "&#xd;"),
            b'"' => (i, "&#34;"),
            b'\'' => (i, "&#39;"),
            b'\n' => (i, "&#xa;"),
            b'\t' => (i, "&#x9;"),
            // The last byte of U+FFFE (EF BF BE) or U+FFFF (EF BF BF).
            0xbe | 0xbf if i >= 2 && bytes[i - 2] == 0xef && bytes[i - 1] == 0xbf => (
                i - 2,
                forbidden(0xff00 | u32::from(byte) | 0x40, out.writes()),
            ),
            // Another character's continuation byte.
            0xbe | 0xbf => continue,
            _ => (i, forbidden(u32::from(byte), out.writes())),
        };
        // Replaced bytes are ASCII or a whole three-byte character, never escaped before:
        // `from <= start`, and both are character boundaries.
        out.put(&text[from..start]);
        out.put(replacement);
        from = at;
    }
    out.put(&text[from..]);
}

/// The replacement of a character XML forbids, logged when it is written.
fn forbidden(code: u32, written: bool) -> &'static str {
    if written {
        tracing::warn!(
            character = format_args!("U+{code:04X}"),
            "a character XML forbids was written as U+FFFD"
        );
    }
    "\u{fffd}"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(xml: &str) -> Element {
        xml.parse().expect("test XML parses")
    }

    /// What minidom writes.
    fn minidom(element: &Element) -> String {
        String::from(element)
    }

    fn ours(element: &Element) -> String {
        let text = to_string(element);
        let mut bytes = b"before".to_vec();
        write(element, &mut bytes).expect("writes");
        assert_eq!(&bytes[..6], b"before");
        assert_eq!(std::str::from_utf8(&bytes[6..]).unwrap(), text);
        text
    }

    const CORPUS: &[&str] = &[
        "<message xmlns='jabber:client' type='chat' id='m1' to='bob@localhost' \
         from='alice@localhost/phone'><body>Hello Bob</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o-1'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='123' by='bob@localhost'/></message>",
        "<iq xmlns='jabber:client' type='set' id='p1' from='localhost' to='push.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n1'><item>\
         <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
         <field var='last-message-body'><value>OH, HAI!</value></field></x></notification>\
         </item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#publish-options</value></field></x>\
         </publish-options></pubsub></iq>",
        "<message xmlns='jabber:client' xml:lang='en'><body xml:lang='de'>Hallo</body></message>",
        "<message xmlns='jabber:client'><body>a &lt; b &amp;&amp; c &gt; d \"q\" 'a' \
         tab\there\nnew line &#xd; carriage</body></message>",
        "<presence xmlns='jabber:client' to='a&amp;b@x' id='&quot;&apos;&lt;&gt;&#xA;&#x9;&#xD;'/>",
        "<message xmlns='jabber:client'><body>日本語 ünïcödé 🎉 ¾¿\u{ffbe}\u{ffbf}</body>\
         <x xmlns='urn:example:unknown:namespace:that:is:long'><y>z</y><w xmlns=''/></x></message>",
        "<a xmlns='urn:a'>text<b/>more<c xmlns='urn:c'>in c<d/></c>tail</a>",
        "<empty xmlns='urn:a'></empty>",
        "<a xmlns='urn:a'><b xmlns=''><c/></b></a>",
        "<a xmlns='urn:a' b-c='1' d_e.f='2' _g='3'/>",
        "<a xmlns='urn:a'><b xmlns='urn:a'><c xmlns='urn:c'><d xmlns='urn:c'/></c></b></a>",
    ];

    #[test]
    fn writes_what_minidom_writes_for_the_stanzas_herald_meets() {
        for xml in CORPUS {
            let element = parsed(xml);
            assert_eq!(ours(&element), minidom(&element), "for {xml}");
        }
    }

    #[test]
    fn what_it_writes_parses_back_into_the_same_element() {
        for xml in CORPUS {
            let element = parsed(xml);
            assert_eq!(parsed(&ours(&element)), element, "for {xml}");
        }
    }

    #[test]
    fn built_elements_are_written_as_minidom_writes_them() {
        let mut message = Element::builder("message", ns::CLIENT)
            .attr(rxml::NcName::try_from("to").unwrap(), "bob@localhost")
            .append(
                Element::builder("body", ns::CLIENT)
                    .append("line one\r\nline two <&>")
                    .build(),
            )
            .build();
        message.append_child(Element::bare("stanza-id", "urn:xmpp:sid:0"));
        message.append_child(Element::bare("other", "urn:example:other"));
        assert_eq!(ours(&message), minidom(&message));
    }

    #[test]
    fn prefixed_elements_and_attributes_are_left_to_minidom() {
        for xml in [
            "<a xmlns='urn:a' xmlns:p='urn:p'><p:b p:c='1'/></a>",
            "<a xmlns='urn:a' xmlns:p='urn:p' p:c='1'/>",
            "<p:a xmlns:p='urn:p'><p:b/></p:a>",
        ] {
            let element = parsed(xml);
            assert!(write_element(&element, &mut String::new()).is_none());
            assert_eq!(ours(&element), minidom(&element), "for {xml}");
        }
    }

    #[test]
    fn a_forbidden_character_is_written_as_the_replacement_character() {
        for (bad, written) in [
            ("bell\u{7}", "bell\u{fffd}"),
            ("\u{0}a\u{1f}", "\u{fffd}a\u{fffd}"),
            ("\u{fffe}", "\u{fffd}"),
            ("x\u{ffff}y<", "x\u{fffd}y&lt;"),
            ("\u{fffd}\u{10000}\u{ffef}", "\u{fffd}\u{10000}\u{ffef}"),
        ] {
            let mut element = Element::builder("body", ns::CLIENT).append(bad).build();
            element.set_attr(
                rxml::Namespace::NONE,
                rxml::NcName::try_from("a").unwrap(),
                bad,
            );
            let attribute = written.replace('<', "&lt;");
            let expected = format!("<body xmlns='jabber:client' a='{attribute}'>{written}</body>");
            assert_eq!(ours(&element), expected, "for {bad:?}");
            parsed(&expected);
        }
    }

    #[test]
    fn names_outside_the_plain_subset_are_left_to_minidom() {
        assert!(plain_name("message"));
        assert!(plain_name("stanza-id"));
        assert!(plain_name("_x.y-z9"));
        for name in ["", "9a", "-a", ".a", "a:b", "ünï", "a b"] {
            assert!(!plain_name(name), "{name:?}");
        }
        let element = parsed("<ünï xmlns='urn:a'/>");
        assert_eq!(ours(&element), minidom(&element));
    }

    #[test]
    fn a_moved_element_is_written_as_its_moved_copy_would_be() {
        let component = "jabber:component:accept";
        for xml in CORPUS.iter().chain(&[
            "<iq xmlns='jabber:client' type='result'><query xmlns='jabber:component:accept'>\
             <item xmlns='jabber:client'/></query><error/></iq>",
            "<a xmlns='urn:a' xmlns:p='urn:p'><p:b p:c='1'/><c xmlns='jabber:client'/></a>",
        ]) {
            let element = parsed(xml);
            let copy = crate::stanza::with_namespace(element.clone(), ns::CLIENT, component);
            let mut bytes = b"before".to_vec();
            write_moving(&element, ns::CLIENT, component, &mut bytes).expect("writes");
            assert_eq!(
                std::str::from_utf8(&bytes[6..]).unwrap(),
                minidom(&copy),
                "for {xml}"
            );
        }
    }
}
