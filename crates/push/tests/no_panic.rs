//! The push enable/disable IQ (XEP-0357 section 5) and its publish-options form, fed hostile
//! input: every request is answered with a parsed request or a precise error, never a panic.
//!
//! Deterministic fuzzing for the normal test suite: mutations of XEP-0357's examples (fields
//! dropped, repeated, renamed, values replaced by long or odd text, attributes removed or
//! garbled), from a fixed-seed xorshift so a failure reproduces. `fuzz/fuzz_targets/
//! push_enable.rs` is the open-ended version.

use herald_push::error::RequestError;
use herald_push::iq::{MAX_FORM_FIELDS, MAX_FORM_TEXT, PushRequest};
use herald_stream::stanza::IqType;
use minidom::Element;

/// xorshift64* (Vigna).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NODES: &[&str] = &["yxs32uqsflafdk3iuqo", "", "n", "a b", "&amp;", "\u{1F600}"];
const JIDS: &[&str] = &[
    "push-5.client.example",
    "",
    "@",
    "a@b@c",
    "user@push.example/resource",
    "[::1]",
    "x..y",
];
const VARS: &[&str] = &[
    "FORM_TYPE",
    "secret",
    "endpoint",
    "service",
    "device_id",
    "",
    "silent",
];
const VALUES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#publish-options",
    "eruio234vzxc2kla-91",
    "",
    "apns",
    "<",
    "true",
];

fn text(rng: &mut Rng, items: &[&str]) -> String {
    match rng.below(10) {
        0 => "x".repeat(MAX_FORM_TEXT + rng.below(3)),
        1 => "\u{FFFD}\u{202E}".to_owned(),
        _ => rng.pick(items).to_owned(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
}

fn request(rng: &mut Rng) -> String {
    let name = ["enable", "disable", "enable", "other"][rng.below(4)];
    let ns = ["urn:xmpp:push:0", "urn:xmpp:push:0", "urn:xmpp:push:1"][rng.below(3)];
    let mut xml = format!("<{name} xmlns='{ns}'");
    if rng.below(5) != 0 {
        xml.push_str(&format!(" jid='{}'", escape(&text(rng, JIDS))));
    }
    if rng.below(4) != 0 {
        xml.push_str(&format!(" node='{}'", escape(&text(rng, NODES))));
    }
    xml.push('>');
    if rng.below(3) != 0 {
        let type_ = ["submit", "submit", "form", ""][rng.below(4)];
        xml.push_str(&format!("<x xmlns='jabber:x:data' type='{type_}'>"));
        let fields = match rng.below(8) {
            0 => MAX_FORM_FIELDS + 2,
            _ => rng.below(6),
        };
        for _ in 0..fields {
            xml.push_str("<field");
            if rng.below(8) != 0 {
                xml.push_str(&format!(" var='{}'", escape(&text(rng, VARS))));
            }
            xml.push('>');
            for _ in 0..[1, 1, 1, 0, 2][rng.below(5)] {
                xml.push_str(&format!("<value>{}</value>", escape(&text(rng, VALUES))));
            }
            xml.push_str("</field>");
        }
        xml.push_str("</x>");
    }
    xml.push_str(&format!("</{name}>"));
    xml
}

#[test]
fn ten_thousand_mutated_requests_get_a_request_or_a_precise_error() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..10_000 {
        let xml = request(&mut rng);
        let Ok(element) = xml.parse::<Element>() else {
            panic!("the generator wrote bad XML: {xml}");
        };
        let kind = [IqType::Set, IqType::Set, IqType::Get][rng.below(3)];
        match PushRequest::parse(kind, &element) {
            Ok(PushRequest::Enable(enable)) => {
                accepted += 1;
                assert!(!enable.node.is_empty() && enable.node.len() <= MAX_FORM_TEXT);
                assert!(enable.form.len() <= MAX_FORM_FIELDS, "{xml}");
                for (var, value) in &enable.form {
                    assert!(var.len() <= MAX_FORM_TEXT && value.len() <= MAX_FORM_TEXT);
                }
            }
            Ok(PushRequest::Disable(_)) => accepted += 1,
            Err(RequestError::BadRequest(_) | RequestError::NotAllowed(_)) => refused += 1,
            Err(other) => panic!("{other:?} for {xml}"),
        }
    }
    // Both outcomes are exercised (most mutations break a rule).
    assert!(accepted > 100 && refused > 1000, "{accepted} {refused}");
}

#[test]
fn the_fuzzing_seeds_parse_as_the_fuzz_target_expects() {
    let seeds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/push_enable");
    let mut count = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let element: Element = text.parse().unwrap();
        assert!(PushRequest::parse(IqType::Set, &element).is_ok(), "{text}");
        count += 1;
    }
    assert!(count > 0, "seeds in {}", seeds.display());
}
