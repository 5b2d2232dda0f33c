//! One notification as MongoosePush wants it (push.md section 8): `POST
//! <path_prefix><api_version>/notification/<device_id>` with a JSON body built from the
//! registration's publish-options and the notification's payload.
//!
//! | JSON key | from |
//! |---|---|
//! | `service` | option `service` (required) |
//! | `mode`, `priority`, `topic`, `mutable_content`, `time_to_live` | the options of that name, as strings, when present |
//! | `data` | option `silent` exactly `"true"`: every payload field, `message-count` as an integer |
//! | `alert` | otherwise: `body` (last message body), `title` and `tag` (sender), `badge` (message count, integer), plus options `click_action` and `sound` when present |
//!
//! Option `tags` (and every other option) is never forwarded.

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use super::ApiVersion;
use crate::{plugin::Payload, registrations::PublishOptions};

/// Options copied into the request as strings when present.
pub const COPIED_OPTIONS: [&str; 5] = [
    "mode",
    "priority",
    "topic",
    "mutable_content",
    "time_to_live",
];

/// Options copied into the `alert` when present.
pub const ALERT_OPTIONS: [&str; 2] = ["click_action", "sound"];

/// A notification ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Option `device_id`: the last segment of the path.
    pub device_id: String,
    /// The JSON body.
    pub body: Bytes,
}

/// Why a registration's options cannot make a request; counted as a skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSkip {
    /// No (or an empty) option `service`.
    MissingService,
    /// No (or an empty) option `device_id`.
    MissingDeviceId,
}

/// What a call's topic ends with by default (Apple's PushKit topic: the app's bundle id and
/// `.voip`).
pub const VOIP_TOPIC_SUFFIX: &str = ".voip";

impl Notification {
    /// The request for `payload` to the device the `options` name, or why there is none; a
    /// call's topic takes [`VOIP_TOPIC_SUFFIX`].
    pub fn build(payload: &Payload, options: &PublishOptions) -> Result<Notification, RequestSkip> {
        Notification::build_with(payload, options, VOIP_TOPIC_SUFFIX)
    }

    /// [`Notification::build`] with a call's topic suffix (`calls.voip_topic_suffix`). A
    /// call (a proposal or its end, XEP-0353) goes as MongooseIM 6.10 sends it: data only
    /// (`data`, never `alert`, so that the app rings or stops ringing itself), `priority`
    /// `high`, and the `topic` option, when there is one, with `voip_topic_suffix` appended.
    pub fn build_with(
        payload: &Payload,
        options: &PublishOptions,
        voip_topic_suffix: &str,
    ) -> Result<Notification, RequestSkip> {
        let present = |name: &str| {
            options
                .get(name)
                .map(String::as_str)
                .filter(|value| !value.is_empty())
        };
        let service = present("service").ok_or(RequestSkip::MissingService)?;
        let device_id = present("device_id").ok_or(RequestSkip::MissingDeviceId)?;
        let mut json = Map::new();
        json.insert("service".into(), service.into());
        for name in COPIED_OPTIONS {
            if let Some(value) = options.get(name) {
                json.insert(name.into(), value.as_str().into());
            }
        }
        if payload.subject().kind.is_call() {
            json.insert("priority".into(), "high".into());
            if let Some(topic) = options.get("topic") {
                json.insert("topic".into(), format!("{topic}{voip_topic_suffix}").into());
            }
            json.insert("data".into(), Value::Object(data(payload)));
        } else if options.get("silent").map(String::as_str) == Some("true") {
            json.insert("data".into(), Value::Object(data(payload)));
        } else {
            json.insert("alert".into(), Value::Object(alert(payload, options)));
        }
        let body = serde_json::to_vec(&Value::Object(json))
            .map(Bytes::from)
            .unwrap_or_default();
        Ok(Notification {
            device_id: device_id.to_owned(),
            body,
        })
    }

    /// The request path: `prefix` (ends with `/`), the API version, `/notification/` and the
    /// device id, percent-encoded so that no id can leave its path segment.
    pub fn path(&self, prefix: &str, api_version: ApiVersion) -> String {
        let mut path = String::with_capacity(prefix.len() + 16 + self.device_id.len() * 3);
        path.push_str(prefix);
        path.push_str(api_version.as_str());
        path.push_str("/notification/");
        // RFC 3986 section 3.3: unreserved characters and ':' stand as they are in a segment.
        const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b':');
        path.extend(utf8_percent_encode(&self.device_id, SEGMENT));
        path
    }
}

/// `message-count` as a JSON integer when it is one, as its string otherwise.
fn count(value: &str) -> Value {
    value
        .parse::<u64>()
        .map_or_else(|_| value.into(), Value::from)
}

/// The silent notification's `data`: the payload's fields.
fn data(payload: &Payload) -> Map<String, Value> {
    payload
        .fields()
        .iter()
        .map(|(name, value)| {
            let value = if name == "message-count" {
                count(value)
            } else {
                value.as_str().into()
            };
            (name.clone(), value)
        })
        .collect()
}

/// The visible notification's `alert`. A payload without a message summary (a call from the
/// hints plugin) has the caller as title and no body or badge.
fn alert(payload: &Payload, options: &PublishOptions) -> Map<String, Value> {
    let mut alert = Map::new();
    if let Some(body) = payload.get("last-message-body") {
        alert.insert("body".into(), body.into());
    }
    if let Some(sender) = payload
        .get("last-message-sender")
        .or_else(|| payload.get("message-sender"))
    {
        alert.insert("title".into(), sender.into());
        alert.insert("tag".into(), sender.into());
    }
    if let Some(messages) = payload.get("message-count") {
        alert.insert("badge".into(), count(messages));
    }
    for name in ALERT_OPTIONS {
        if let Some(value) = options.get(name) {
            alert.insert(name.into(), value.as_str().into());
        }
    }
    alert
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn options(pairs: &[(&str, &str)]) -> PublishOptions {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn body(notification: &Notification) -> Value {
        serde_json::from_slice(&notification.body).unwrap()
    }

    fn summary() -> Payload {
        Payload::summary(1, "bob@example.com", "Hi!")
    }

    #[test]
    fn a_visible_notification_has_an_alert_with_an_integer_badge() {
        let notification = Notification::build(
            &summary(),
            &options(&[("service", "apns"), ("device_id", "D1"), ("secret", "s")]),
        )
        .unwrap();
        assert_eq!(notification.device_id, "D1");
        assert_eq!(
            body(&notification),
            json!({"service": "apns", "alert": {"body": "Hi!", "title": "bob@example.com",
                   "tag": "bob@example.com", "badge": 1}})
        );
    }

    #[test]
    fn a_silent_notification_carries_the_payload_as_data() {
        let notification = Notification::build(
            &summary(),
            &options(&[
                ("service", "fcm"),
                ("device_id", "D1"),
                ("silent", "true"),
                ("priority", "high"),
                ("click_action", "open"),
            ]),
        )
        .unwrap();
        assert_eq!(
            body(&notification),
            json!({"service": "fcm", "priority": "high", "data": {"message-count": 1,
                   "last-message-sender": "bob@example.com", "last-message-body": "Hi!"}})
        );
    }

    #[test]
    fn only_silent_exactly_true_is_silent() {
        for silent in ["false", "TRUE", "1", ""] {
            let notification = Notification::build(
                &summary(),
                &options(&[("service", "fcm"), ("device_id", "D"), ("silent", silent)]),
            )
            .unwrap();
            assert!(body(&notification).get("alert").is_some(), "{silent:?}");
        }
    }

    #[test]
    fn copied_options_are_strings_and_tags_are_never_forwarded() {
        let notification = Notification::build(
            &summary(),
            &options(&[
                ("service", "apns"),
                ("device_id", "D"),
                ("mode", "prod"),
                ("priority", "normal"),
                ("topic", "com.example.app"),
                ("mutable_content", "true"),
                ("time_to_live", "3600"),
                ("tags", "a b"),
                ("click_action", "OPEN"),
                ("sound", "bing.caf"),
            ]),
        )
        .unwrap();
        assert_eq!(
            body(&notification),
            json!({"service": "apns", "mode": "prod", "priority": "normal",
                   "topic": "com.example.app", "mutable_content": "true",
                   "time_to_live": "3600",
                   "alert": {"body": "Hi!", "title": "bob@example.com",
                             "tag": "bob@example.com", "badge": 1,
                             "click_action": "OPEN", "sound": "bing.caf"}})
        );
    }

    #[test]
    fn a_missing_or_empty_service_or_device_id_is_a_skip() {
        assert_eq!(
            Notification::build(&summary(), &options(&[("device_id", "D")])),
            Err(RequestSkip::MissingService)
        );
        assert_eq!(
            Notification::build(&summary(), &options(&[("service", ""), ("device_id", "D")])),
            Err(RequestSkip::MissingService)
        );
        assert_eq!(
            Notification::build(&summary(), &options(&[("service", "fcm")])),
            Err(RequestSkip::MissingDeviceId)
        );
        assert_eq!(
            Notification::build(
                &summary(),
                &options(&[("service", "fcm"), ("device_id", "")])
            ),
            Err(RequestSkip::MissingDeviceId)
        );
    }

    #[test]
    fn a_call_goes_data_only_with_high_priority_and_the_voip_topic() {
        let call = Payload::call("bob@example.com", "propose", "s1");
        let with_topic = options(&[
            ("service", "apns"),
            ("device_id", "D"),
            ("topic", "com.example.app"),
            ("priority", "normal"),
        ]);
        let notification = Notification::build(&call, &with_topic).unwrap();
        assert_eq!(
            body(&notification),
            json!({"service": "apns", "priority": "high", "topic": "com.example.app.voip",
                   "data": {"message-sender": "bob@example.com", "jingle-message": "propose",
                            "jingle-session-id": "s1"}})
        );
        let suffixed = Notification::build_with(&call, &with_topic, ".call").unwrap();
        assert_eq!(body(&suffixed)["topic"], "com.example.app.call");
        // Without a topic option, none is made up; a retraction goes the same way.
        let ended = Payload::call("bob@example.com", "retract", "s1");
        let notification =
            Notification::build(&ended, &options(&[("service", "fcm"), ("device_id", "D")]))
                .unwrap();
        assert_eq!(
            body(&notification),
            json!({"service": "fcm", "priority": "high",
                   "data": {"message-sender": "bob@example.com", "jingle-message": "retract",
                            "jingle-session-id": "s1"}})
        );
    }

    #[test]
    fn the_path_is_prefix_version_and_encoded_device_id() {
        let notification = Notification {
            device_id: "abc:DEF_1-2.3~/x y%".into(),
            body: Bytes::new(),
        };
        assert_eq!(
            notification.path("/", ApiVersion::V3),
            "/v3/notification/abc:DEF_1-2.3~%2Fx%20y%25"
        );
        assert_eq!(
            notification.path("/push/", ApiVersion::V2),
            "/push/v2/notification/abc:DEF_1-2.3~%2Fx%20y%25"
        );
    }
}
