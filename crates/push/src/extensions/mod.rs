//! What a client may ask for at enable beyond XEP-0357: Tigase's push extensions, as Siskin,
//! Snikket iOS and Beagle send them, kept with the registration ([`Extensions`]) and applied
//! to every notification to it.
//!
//! | child of `<enable/>` | namespace | effect |
//! |---|---|---|
//! | `<encrypt alg='aes-128-gcm' key='…'/>` | `tigase:push:encrypt:0` | the notification's details travel encrypted ([`encrypt`]) |
//! | `<priority/>` | `tigase:push:priority:0` | each notification says `high` (calls) or `low` |
//! | `<muted><item jid='…'/></muted>` | `tigase:push:filter:muted:0` | no notification for these conversations |
//! | `<groupchat><room jid='…' allow='always\|mentioned\|never' nick='…'/></groupchat>` | `tigase:push:filter:groupchat:0` | room messages notified as each room says; rooms not listed are not notified |
//! | `<jingle/>` | `tigase:push:jingle:0` | the client handles call notifications (the call's details are added) |
//!
//! The server advertises each namespace (and `tigase:push:encrypt:aes-128-gcm`) in disco.

use std::collections::BTreeSet;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use herald_stream::Bare;
use jid::{BareJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::{
    error::RequestError,
    vocabulary::{Kind, Payload, Skip},
};

/// Encryption of the notification's details.
pub const ENCRYPT: &str = "tigase:push:encrypt:0";
/// The one algorithm offered, as disco advertises it.
pub const AES_128_GCM: &str = "tigase:push:encrypt:aes-128-gcm";
/// Priorities on notifications.
pub const PRIORITY: &str = "tigase:push:priority:0";
/// Muted conversations.
pub const MUTED: &str = "tigase:push:filter:muted:0";
/// Which rooms notify, and when.
pub const GROUPCHAT: &str = "tigase:push:filter:groupchat:0";
/// Call notifications.
pub const JINGLE: &str = "tigase:push:jingle:0";

/// Every namespace the server advertises for these extensions.
pub const FEATURES: [&str; 6] = [ENCRYPT, AES_128_GCM, PRIORITY, MUTED, GROUPCHAT, JINGLE];

/// Most JIDs in a muted list, and rooms in a groupchat filter.
pub const MAX_ITEMS: usize = 1000;

/// The largest encrypted payload, in bytes of JSON before encryption, when the client names
/// none: with its tag and base64 it stays well inside APNs' 4 KiB once the app server wraps it.
pub const DEFAULT_MAX_SIZE: usize = 2048;

/// What the client asked for at enable beyond XEP-0357. Stored with the registration as JSON
/// (`herald_options`); what is not asked for is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extensions {
    /// The key to encrypt the notification's details with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encryption>,
    /// Whether each notification says its priority.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub priority: bool,
    /// Whether the client handles call notifications.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jingle: bool,
    /// Conversations (bare JIDs) never notified.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub muted: BTreeSet<String>,
    /// When set, only the rooms listed notify, as each says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groupchat: Option<Vec<RoomRule>>,
}

/// The client's key for `aes-128-gcm`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The 16-byte key, base64 as the client sent it.
    key: String,
    /// The largest payload before encryption, in bytes.
    max_size: usize,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("key", &"[redacted]")
            .field("max_size", &self.max_size)
            .finish()
    }
}

/// One room of the groupchat filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRule {
    /// The room's bare JID.
    pub room: String,
    /// Which of its messages notify.
    pub allow: Allow,
    /// The user's nickname there, which a mention contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
}

/// Which messages of a room notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allow {
    /// Every message.
    Always,
    /// Those whose body contains the nickname.
    Mentioned,
    /// None.
    Never,
}

impl Extensions {
    /// The extensions among the children of `<enable/>`; unknown children are ignored.
    pub fn parse(enable: &Element) -> Result<Extensions, RequestError> {
        let mut extensions = Extensions::default();
        for child in enable.children() {
            match (child.name(), child.ns().as_str()) {
                ("encrypt", ENCRYPT) => extensions.encrypt = Some(Encryption::parse(child)?),
                ("priority", PRIORITY) => extensions.priority = true,
                ("jingle", JINGLE) => extensions.jingle = true,
                ("muted", MUTED) => extensions.muted = muted(child)?,
                ("groupchat", GROUPCHAT) => extensions.groupchat = Some(rooms(child)?),
                _ => {}
            }
        }
        Ok(extensions)
    }

    /// Whether the client asked for nothing beyond XEP-0357.
    pub fn is_empty(&self) -> bool {
        self == &Extensions::default()
    }

    /// The extensions as stored.
    pub fn to_stored(&self) -> String {
        if self.is_empty() {
            return "{}".to_owned();
        }
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The extensions stored as `text`; `None` when it does not parse.
    pub fn from_stored(text: &str) -> Option<Extensions> {
        if text == "{}" || text.is_empty() {
            return Some(Extensions::default());
        }
        serde_json::from_str(text).ok()
    }

    /// Whether the client set a filter (muted conversations, a groupchat filter).
    pub fn has_filters(&self) -> bool {
        !self.muted.is_empty() || self.groupchat.is_some()
    }

    /// Whether the client's filters let a message of `conversation` (the sender's bare JID,
    /// or the room's) notify, `body` giving its body when a mention is looked for: a muted
    /// conversation does not; with a groupchat filter, a room message notifies as its room
    /// says. Calls always notify.
    pub fn filter(
        &self,
        conversation: &BareJid,
        body: impl FnOnce() -> String,
        payload: &Payload,
    ) -> Result<(), Skip> {
        if payload.subject().kind.is_call() {
            return Ok(());
        }
        if self.muted.contains(conversation.as_str()) {
            return Err(Skip::Muted);
        }
        if payload.subject().kind != Kind::Groupchat {
            return Ok(());
        }
        let Some(rooms) = &self.groupchat else {
            return Ok(());
        };
        let rule = rooms
            .iter()
            .find(|rule| rule.room == conversation.as_str())
            .ok_or(Skip::NotMentioned)?;
        match rule.allow {
            Allow::Always => Ok(()),
            Allow::Never => Err(Skip::Muted),
            Allow::Mentioned => {
                let body = body();
                match &rule.nick {
                    Some(nick) if mentions(&body, nick) => Ok(()),
                    _ => Err(Skip::NotMentioned),
                }
            }
        }
    }

    /// The key to encrypt with, if the client gave one.
    pub fn encryption(&self) -> Option<&Encryption> {
        self.encrypt.as_ref()
    }
}

/// Whether `body` mentions `nick`: the nickname appears, ignoring case, not inside a longer
/// word.
pub fn mentions(body: &str, nick: &str) -> bool {
    if nick.is_empty() {
        return false;
    }
    let body = body.to_lowercase();
    let nick = nick.to_lowercase();
    body.match_indices(&nick).any(|(at, found)| {
        let before = body[..at].chars().next_back();
        let after = body[at + found.len()..].chars().next();
        let apart = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        apart(before) && apart(after)
    })
}

impl Encryption {
    fn parse(encrypt: &Element) -> Result<Encryption, RequestError> {
        if encrypt.attr("alg") != Some("aes-128-gcm") {
            return Err(RequestError::NotImplemented(
                "the only encryption offered is aes-128-gcm",
            ));
        }
        let key = encrypt
            .attr("key")
            .ok_or(RequestError::BadRequest("encrypt needs a key"))?;
        let bytes = BASE64
            .decode(key.trim())
            .map_err(|_| RequestError::BadRequest("the encryption key is not base64"))?;
        if bytes.len() != 16 {
            return Err(RequestError::BadRequest("an aes-128-gcm key has 16 bytes"));
        }
        let max_size = match encrypt.attr("max-size") {
            None => DEFAULT_MAX_SIZE,
            Some(text) => text
                .parse::<usize>()
                .map_err(|_| RequestError::BadRequest("max-size is not a number"))?
                .clamp(256, 4096),
        };
        Ok(Encryption {
            key: BASE64.encode(bytes),
            max_size,
        })
    }

    /// The key's 16 bytes.
    fn key(&self) -> Option<[u8; 16]> {
        BASE64.decode(&self.key).ok()?.try_into().ok()
    }

    /// The largest payload before encryption, in bytes.
    pub fn max_size(&self) -> usize {
        self.max_size
    }
}

fn jid_attr(element: &Element) -> Result<BareJid, RequestError> {
    let text = element
        .attr("jid")
        .ok_or(RequestError::BadRequest("an item needs a jid"))?;
    Jid::new(text)
        .map(|jid| jid.bare())
        .map_err(|_| RequestError::BadRequest("an item's jid is not a valid JID"))
}

fn muted(element: &Element) -> Result<BTreeSet<String>, RequestError> {
    let mut muted = BTreeSet::new();
    for item in element.children().filter(|c| c.is("item", MUTED)) {
        if muted.len() == MAX_ITEMS {
            return Err(RequestError::BadRequest("too many muted conversations"));
        }
        muted.insert(jid_attr(item)?.to_string());
    }
    Ok(muted)
}

fn rooms(element: &Element) -> Result<Vec<RoomRule>, RequestError> {
    let mut rooms: Vec<RoomRule> = Vec::new();
    for room in element.children().filter(|c| c.is("room", GROUPCHAT)) {
        if rooms.len() == MAX_ITEMS {
            return Err(RequestError::BadRequest("too many rooms in the filter"));
        }
        let allow = match room.attr("allow") {
            Some("always") => Allow::Always,
            Some("mentioned") => Allow::Mentioned,
            Some("never") => Allow::Never,
            _ => {
                return Err(RequestError::BadRequest(
                    "a room's allow is always, mentioned or never",
                ));
            }
        };
        let jid = jid_attr(room)?.to_string();
        rooms.retain(|rule| rule.room != jid);
        rooms.push(RoomRule {
            room: jid,
            allow,
            nick: room.attr("nick").map(str::to_owned),
        });
    }
    Ok(rooms)
}

/// The placeholder sent instead of an end-to-end encrypted message's fallback body.
pub const PLACEHOLDER: &str = "New message";

/// The notification's details as JSON, for [`encrypt`]: `unread`, `sender`, `type`,
/// `message` (the body, or [`PLACEHOLDER`] for an end-to-end encrypted message), `nickname`
/// in a room; for a call, `sid` and `media`. The body is cut (at a character boundary) so
/// that the whole stays within `max_size` bytes.
pub fn details(payload: &Payload, max_size: usize) -> Vec<u8> {
    let about = payload.subject();
    let mut json = serde_json::Map::new();
    if let Some(count) = payload.get("message-count") {
        json.insert(
            "unread".into(),
            count
                .parse::<u64>()
                .map_or_else(|_| count.into(), serde_json::Value::from),
        );
    }
    let sender = payload
        .get("last-message-sender")
        .or_else(|| payload.get("message-sender"));
    if let Some(sender) = sender {
        // A room's sender is the room; the occupant is the nickname.
        let bare = match about.kind {
            Kind::Groupchat => sender.split('/').next().unwrap_or(sender),
            _ => sender,
        };
        json.insert("sender".into(), bare.into());
    }
    json.insert("type".into(), about.kind.as_str().into());
    if let Some(nickname) = &about.nickname {
        json.insert("nickname".into(), nickname.as_str().into());
    }
    if about.kind.is_call() {
        if let Some(sid) = payload.get("jingle-session-id") {
            json.insert("sid".into(), sid.into());
        }
        if !about.media.is_empty() {
            json.insert("media".into(), about.media.clone().into());
        }
    }
    let body = match payload.get("last-message-body") {
        Some(_) if about.end_to_end => Some(PLACEHOLDER.to_owned()),
        Some(body) => Some(body.to_owned()),
        None => None,
    };
    let Some(mut body) = body else {
        return serde_json::to_vec(&json).unwrap_or_default();
    };
    loop {
        json.insert("message".into(), body.as_str().into());
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        if bytes.len() <= max_size || body.is_empty() {
            return bytes;
        }
        // Cut by what is over, and a little more for escapes; at a character boundary.
        let over = bytes.len() - max_size;
        let mut keep = body.len().saturating_sub(over.max(4) + 3);
        while keep > 0 && !body.is_char_boundary(keep) {
            keep -= 1;
        }
        body.truncate(keep);
        if !body.is_empty() {
            body.push('…');
        }
    }
}

/// What [`encrypt`] gives: the 12-byte nonce and the ciphertext with its 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The initialisation vector, base64.
    pub iv: String,
    /// The ciphertext followed by the authentication tag, base64.
    pub data: String,
}

/// Seal `plaintext` with the client's key under a fresh random 12-byte nonce
/// (AES-128-GCM, NIST SP 800-38D; no associated data). `None` if the key cannot be used or
/// no random nonce is available (the notification then goes without details).
pub fn encrypt(encryption: &Encryption, plaintext: &[u8]) -> Option<Sealed> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).ok()?;
    seal(&encryption.key()?, nonce, plaintext)
}

/// Seal with a given nonce (for [`encrypt`], and test vectors).
pub fn seal(key: &[u8; 16], nonce: [u8; 12], plaintext: &[u8]) -> Option<Sealed> {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).ok()?);
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .ok()?;
    Some(Sealed {
        iv: BASE64.encode(nonce),
        data: BASE64.encode(data),
    })
}

/// Open what [`seal`] sealed: the plaintext, or `None` when the key, nonce or tag do not
/// match (what a client does; for tests and the admin API).
pub fn open(key: &[u8; 16], sealed: &Sealed) -> Option<Vec<u8>> {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).ok()?);
    let nonce: [u8; 12] = BASE64.decode(&sealed.iv).ok()?.try_into().ok()?;
    let mut data = BASE64.decode(&sealed.data).ok()?;
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests;
