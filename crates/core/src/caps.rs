//! Entity Capabilities (XEP-0115): the `ver` hash of a disco#info result, for the server's
//! own caps and to verify what clients advertise.

use xmpp_parsers::disco::DiscoInfoResult;

/// The Entity Capabilities `ver` of a disco#info result (XEP-0115 section 5.1, SHA-1): the
/// identities, features and extended forms, each list sorted by its own text (i;octet), each
/// item followed by `<`. (xmpp-parsers 0.23 sorts the items with their `<`, which puts
/// `shim#SubID` before `shim` and yields a hash no client computes.)
pub fn caps_ver(info: &DiscoInfoResult) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut s = String::new();
    let mut identities: Vec<String> = info
        .identities
        .iter()
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.category,
                i.type_,
                i.lang.as_deref().unwrap_or_default(),
                i.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = info.features.iter().map(String::as_str).collect();
    features.sort_unstable();
    for item in identities.iter().map(String::as_str).chain(features) {
        s.push_str(item);
        s.push('<');
    }
    /// A form's FORM_TYPE and its other fields with their values.
    type Form = (String, Vec<(String, Vec<String>)>);
    let mut forms: Vec<Form> = info
        .extensions
        .iter()
        .map(|form| {
            let mut fields: Vec<(String, Vec<String>)> = form
                .fields
                .iter()
                .filter_map(|f| Some((f.var.clone()?, f.values.clone())))
                .filter(|(var, _)| var != "FORM_TYPE")
                .collect();
            fields.sort();
            (form.form_type().unwrap_or_default().to_owned(), fields)
        })
        .collect();
    forms.sort();
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, mut values) in fields {
            s.push_str(&var);
            s.push('<');
            values.sort();
            for value in values {
                s.push_str(&value);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::disco::Identity;

    #[test]
    fn caps_ver_matches_xep_0115_examples_and_sorts_prefixes_first() {
        // XEP-0115 section 5.2's simple example.
        let info = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("client", "pc", "", "Exodus 0.9.1")],
            features: [
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ]
            .map(str::to_owned)
            .into_iter()
            .collect(),
            extensions: Vec::new(),
        };
        assert_eq!(caps_ver(&info), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        // What slixmpp 1.17 advertises (a feature that is a prefix of another sorts first).
        let info = DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "client".into(),
                type_: "bot".into(),
                lang: None,
                name: None,
            }],
            features: [
                "http://jabber.org/protocol/disco#info",
                "jabber:x:data",
                "http://jabber.org/protocol/shim",
                "http://jabber.org/protocol/shim#SubID",
                "http://jabber.org/protocol/caps",
                "urn:xmpp:forward:0",
                "urn:xmpp:carbons:2",
                "vcard-temp",
                "jabber:iq:version",
                "urn:xmpp:omemo:2:devices+notify",
            ]
            .map(str::to_owned)
            .into_iter()
            .collect(),
            extensions: Vec::new(),
        };
        assert_eq!(caps_ver(&info), "gFAPEG+EmrKOEnVFN5+ySePdkrg=");
    }
}
