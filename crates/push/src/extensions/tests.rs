use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use herald_stream::Bare;

use super::*;
use crate::{events::Message, vocabulary::About};

/// [`Extensions::filter`] for `message`.
fn filter(extensions: &Extensions, message: &Message, payload: &Payload) -> Result<(), Skip> {
    extensions.filter(
        &message.from.bare(),
        || message.first_body().unwrap_or_default(),
        payload,
    )
}

fn enable(children: &str) -> Result<Extensions, RequestError> {
    let element: Element = format!(
        "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='n'>{children}</enable>"
    )
    .parse()
    .unwrap();
    Extensions::parse(&element)
}

fn message(xml: &str) -> Message {
    Message::parse(xml.parse().unwrap()).unwrap()
}

fn chat(from: &str, body: &str) -> (Message, Payload) {
    let message = message(&format!(
        "<message xmlns='jabber:client' from='{from}' to='bob@example.com' type='chat'>\
         <body>{body}</body></message>"
    ));
    let payload = Payload::summary(1, from, body);
    (message, payload)
}

fn groupchat(body: &str) -> (Message, Payload) {
    let message = message(&format!(
        "<message xmlns='jabber:client' from='room@muc.example.com/carol' to='bob@example.com' \
         type='groupchat'><body>{body}</body></message>"
    ));
    let payload = Payload::summary(1, "room@muc.example.com/carol", body).about(About {
        kind: Kind::Groupchat,
        nickname: Some("carol".into()),
        ..About::default()
    });
    (message, payload)
}

/// The vectors in `tests/vectors/tigase-encrypt.json`, made by another implementation.
fn vectors() -> Vec<serde_json::Value> {
    serde_json::from_str(include_str!("../../tests/vectors/tigase-encrypt.json")).unwrap()
}

fn key_of(vector: &serde_json::Value) -> [u8; 16] {
    BASE64
        .decode(vector["key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn an_enable_without_extensions_asks_for_nothing() {
    let extensions = enable("<x xmlns='jabber:x:data' type='submit'/>").unwrap();
    assert!(extensions.is_empty());
    assert_eq!(extensions.to_stored(), "{}");
    assert_eq!(Extensions::from_stored("{}"), Some(Extensions::default()));
}

#[test]
fn every_extension_is_parsed_and_round_trips_through_storage() {
    let extensions = enable(
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='AAECAwQFBgcICQoLDA0ODw==' max-size='3000'/>\
         <priority xmlns='tigase:push:priority:0'/>\
         <jingle xmlns='tigase:push:jingle:0'/>\
         <muted xmlns='tigase:push:filter:muted:0'><item jid='Quiet@Example.com/phone'/></muted>\
         <groupchat xmlns='tigase:push:filter:groupchat:0'>\
           <room jid='room@muc.example.com' allow='mentioned' nick='Bob'/>\
           <room jid='loud@muc.example.com' allow='always'/></groupchat>",
    )
    .unwrap();
    assert_eq!(extensions.encryption().unwrap().max_size(), 3000);
    assert!(extensions.priority && extensions.jingle);
    assert!(extensions.muted.contains("quiet@example.com"));
    assert_eq!(extensions.groupchat.as_ref().unwrap().len(), 2);
    let stored = extensions.to_stored();
    assert!(!stored.contains("AAECAwQFBgcICQoLDA0ODw==") || stored.contains("\"key\""));
    assert_eq!(Extensions::from_stored(&stored), Some(extensions.clone()));
    assert!(
        !format!("{extensions:?}").contains("AAECAw"),
        "the key stays out of logs"
    );
    assert_eq!(Extensions::from_stored("not json"), None);
}

#[test]
fn a_bad_extension_is_a_precise_error() {
    let alg = enable(
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-256-cbc' key='AAECAwQFBgcICQoLDA0ODw=='/>",
    );
    assert!(matches!(alg, Err(RequestError::NotImplemented(_))));
    for bad in [
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm'/>",
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='not base64!'/>",
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='AAEC'/>",
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='AAECAwQFBgcICQoLDA0ODw==' max-size='big'/>",
        "<muted xmlns='tigase:push:filter:muted:0'><item/></muted>",
        "<muted xmlns='tigase:push:filter:muted:0'><item jid='@bad'/></muted>",
        "<groupchat xmlns='tigase:push:filter:groupchat:0'><room jid='r@m' allow='sometimes'/></groupchat>",
    ] {
        assert!(
            matches!(enable(bad), Err(RequestError::BadRequest(_))),
            "{bad}"
        );
    }
    let items: String = (0..=MAX_ITEMS)
        .map(|n| format!("<item jid='u{n}@example.com'/>"))
        .collect();
    assert!(
        enable(&format!(
            "<muted xmlns='tigase:push:filter:muted:0'>{items}</muted>"
        ))
        .is_err()
    );
}

#[test]
fn a_muted_conversation_does_not_notify_but_a_call_from_it_does() {
    let extensions =
        enable("<muted xmlns='tigase:push:filter:muted:0'><item jid='alice@example.com'/></muted>")
            .unwrap();
    let (from_alice, payload) = chat("alice@example.com/phone", "hi");
    assert_eq!(filter(&extensions, &from_alice, &payload), Err(Skip::Muted));
    let (from_carol, payload) = chat("carol@example.com/phone", "hi");
    assert_eq!(filter(&extensions, &from_carol, &payload), Ok(()));
    let call = Payload::call("alice@example.com", "propose", "s1");
    assert_eq!(filter(&extensions, &from_alice, &call), Ok(()));
}

#[test]
fn a_room_filtered_to_mentions_notifies_only_a_mention_of_the_nick() {
    let extensions = enable(
        "<groupchat xmlns='tigase:push:filter:groupchat:0'>\
         <room jid='room@muc.example.com' allow='mentioned' nick='Bob'/></groupchat>",
    )
    .unwrap();
    let (message, payload) = groupchat("lunch anyone?");
    assert_eq!(
        filter(&extensions, &message, &payload),
        Err(Skip::NotMentioned)
    );
    let (message, payload) = groupchat("bob: lunch?");
    assert_eq!(filter(&extensions, &message, &payload), Ok(()));
    let (message, payload) = groupchat("bobby tables");
    assert_eq!(
        filter(&extensions, &message, &payload),
        Err(Skip::NotMentioned)
    );
    // One-to-one messages are not the room filter's business.
    let (message, payload) = chat("carol@example.com/phone", "hi");
    assert_eq!(filter(&extensions, &message, &payload), Ok(()));
}

#[test]
fn rooms_not_listed_or_never_do_not_notify_and_always_does() {
    let extensions = enable(
        "<groupchat xmlns='tigase:push:filter:groupchat:0'>\
         <room jid='other@muc.example.com' allow='always'/></groupchat>",
    )
    .unwrap();
    let (message, payload) = groupchat("hello");
    assert_eq!(
        filter(&extensions, &message, &payload),
        Err(Skip::NotMentioned)
    );
    let always = enable(
        "<groupchat xmlns='tigase:push:filter:groupchat:0'>\
         <room jid='room@muc.example.com' allow='always'/></groupchat>",
    )
    .unwrap();
    assert_eq!(filter(&always, &message, &payload), Ok(()));
    let never = enable(
        "<groupchat xmlns='tigase:push:filter:groupchat:0'>\
         <room jid='room@muc.example.com' allow='never' nick='Bob'/></groupchat>",
    )
    .unwrap();
    let (message, payload) = groupchat("Bob!");
    assert_eq!(filter(&never, &message, &payload), Err(Skip::Muted));
}

#[test]
fn mentions_are_whole_words_ignoring_case() {
    assert!(mentions("Hey Bob, lunch?", "bob"));
    assert!(mentions("@bob", "Bob"));
    assert!(!mentions("bobby", "bob"));
    assert!(!mentions("anything", ""));
    assert!(mentions("Ünïcode wörd ok", "wörd"));
}

#[test]
fn the_details_are_the_json_the_clients_decrypt() {
    let payload = Payload::summary(3, "romeo@montague.example", "Wherefore art thou, Romeo?");
    let vector = &vectors()[0];
    assert_eq!(
        String::from_utf8(details(&payload, DEFAULT_MAX_SIZE)).unwrap(),
        vector["plaintext"].as_str().unwrap()
    );
    let (_, room) = groupchat("hi all");
    let json: serde_json::Value =
        serde_json::from_slice(&details(&room, DEFAULT_MAX_SIZE)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"unread": 1, "sender": "room@muc.example.com", "type": "groupchat",
                           "nickname": "carol", "message": "hi all"})
    );
    let mut call = Payload::call("juliet@capulet.example", "propose", "s1");
    let mut about = call.subject().clone();
    about.media = vec!["audio".into(), "video".into()];
    call = call.about(about);
    let json: serde_json::Value =
        serde_json::from_slice(&details(&call, DEFAULT_MAX_SIZE)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"sender": "juliet@capulet.example", "type": "call", "sid": "s1",
                           "media": ["audio", "video"]})
    );
    let omemo = Payload::summary(1, "a@x", "I sent you an OMEMO encrypted message").about(About {
        end_to_end: true,
        ..About::default()
    });
    let json: serde_json::Value =
        serde_json::from_slice(&details(&omemo, DEFAULT_MAX_SIZE)).unwrap();
    assert_eq!(json["message"], PLACEHOLDER);
}

#[test]
fn a_long_body_is_cut_to_the_size_at_a_character_boundary() {
    let body = "é".repeat(5000);
    let payload = Payload::summary(1, "a@x", &body);
    let bytes = details(&payload, 512);
    assert!(bytes.len() <= 512, "{}", bytes.len());
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let message = json["message"].as_str().unwrap();
    assert!(message.ends_with('…') && message.len() > 300, "{message}");
}

#[test]
fn sealing_matches_vectors_made_by_another_implementation() {
    for vector in vectors() {
        let key = key_of(&vector);
        let nonce: [u8; 12] = BASE64
            .decode(vector["iv"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let plaintext = match vector.get("plaintext_hex") {
            Some(hex) => (0..hex.as_str().unwrap().len() / 2)
                .map(|_| 0u8)
                .collect::<Vec<u8>>(),
            None => vector["plaintext"].as_str().unwrap().as_bytes().to_vec(),
        };
        let sealed = seal(&key, nonce, &plaintext).unwrap();
        assert_eq!(
            sealed.data,
            vector["sealed"].as_str().unwrap(),
            "{}",
            vector["source"]
        );
        assert_eq!(open(&key, &sealed).unwrap(), plaintext);
    }
}

#[test]
fn an_altered_tag_or_ciphertext_or_key_does_not_decrypt() {
    let vector = &vectors()[0];
    let key = key_of(vector);
    let sealed = Sealed {
        iv: vector["iv"].as_str().unwrap().to_owned(),
        data: vector["sealed"].as_str().unwrap().to_owned(),
    };
    assert!(open(&key, &sealed).is_some());
    let mut bytes = BASE64.decode(&sealed.data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the tag's last byte
    let altered_tag = Sealed {
        data: BASE64.encode(&bytes),
        ..sealed.clone()
    };
    assert_eq!(open(&key, &altered_tag), None);
    let mut bytes = BASE64.decode(&sealed.data).unwrap();
    bytes[0] ^= 0x80;
    let altered_text = Sealed {
        data: BASE64.encode(&bytes),
        ..sealed.clone()
    };
    assert_eq!(open(&key, &altered_text), None);
    let mut other_key = key;
    other_key[0] ^= 1;
    assert_eq!(open(&other_key, &sealed), None);
}

#[test]
fn each_notification_gets_a_fresh_nonce() {
    let extensions = enable(
        "<encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='AAECAwQFBgcICQoLDA0ODw=='/>",
    )
    .unwrap();
    let key = extensions.encryption().unwrap();
    let a = encrypt(key, b"same").unwrap();
    let b = encrypt(key, b"same").unwrap();
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.data, b.data);
    assert_eq!(open(&key.key().unwrap(), &a).unwrap(), b"same");
}
