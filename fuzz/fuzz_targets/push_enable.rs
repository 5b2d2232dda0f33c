//! Arbitrary XML through the push enable/disable parser (XEP-0357 section 5, push.md section 3):
//! every element is a request or a precise error, never a panic.
//!
//! Input: the element's text (UTF-8); inputs that are not one well-formed element are skipped.

#![no_main]

use herald_push::iq::{MAX_FORM_FIELDS, MAX_FORM_TEXT, PushRequest};
use herald_stream::stanza::IqType;
use libfuzzer_sys::fuzz_target;
use minidom::Element;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(element) = text.parse::<Element>() else {
        return;
    };
    for kind in [IqType::Set, IqType::Get] {
        if let Ok(PushRequest::Enable(enable)) = PushRequest::parse(kind, &element) {
            assert!(!enable.node.is_empty() && enable.node.len() <= MAX_FORM_TEXT);
            assert!(enable.form.len() <= MAX_FORM_FIELDS);
        }
    }
});
