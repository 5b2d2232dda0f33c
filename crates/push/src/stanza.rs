//! The publish IQ (XEP-0357 section 6, push.md section 5): the notification as a PubSub publish
//! from the recipient's server domain to the registration's node.

use herald_stream::{
    ns::CLIENT,
    stanza::{Blank, set_attr},
};
use minidom::Element;

use crate::{extensions, registrations::Registration, vocabulary::Payload};

/// XEP-0060's namespace.
pub const PUBSUB: &str = herald_stream::ns::PUBSUB;
/// XEP-0357's namespace.
pub const PUSH: &str = herald_stream::ns::PUSH;
/// XEP-0004's namespace.
pub const DATA_FORMS: &str = herald_stream::ns::DATA_FORMS;
/// The `FORM_TYPE` of the notification's summary form (XEP-0357 section 6).
pub const SUMMARY: &str = herald_stream::ns::PUSH_SUMMARY;
/// The `FORM_TYPE` of publish-options (XEP-0060 section 7.1.5).
pub const PUBLISH_OPTIONS: &str = herald_stream::ns::PUBSUB_PUBLISH_OPTIONS;

/// The IQ set publishing `payload` to `registration`, from `domain` (the recipient's).
/// It has no `id`: the transport gives one.
///
/// A registration with Tigase's extensions ([`crate::extensions`]) gets them: with a key, the
/// details (sender, body...) leave the summary form, which keeps only `message-count`, and
/// travel in `<encrypted xmlns='tigase:push:encrypt:0' iv='…'>` (base64 of the AES-128-GCM
/// ciphertext and tag); with `priority`, `<priority xmlns='tigase:push:priority:0'>` says
/// `high` for a call (or its end) and `low` otherwise.
pub fn publish_iq(domain: &str, registration: &Registration, payload: &Payload) -> Element {
    let mut notification = Element::bare("notification", PUSH);
    let extensions = &registration.extensions;
    let sealed = extensions
        .encryption()
        .and_then(|key| extensions::encrypt(key, &extensions::details(payload, key.max_size())));
    match sealed {
        Some(sealed) => {
            let count = payload
                .fields()
                .iter()
                .filter(|(var, _)| var == "message-count")
                .map(|(var, value)| (var.as_str(), value.as_str()));
            notification.append_child(form(SUMMARY, count));
            let mut encrypted = Element::bare("encrypted", extensions::ENCRYPT);
            set_attr(&mut encrypted, "iv", &sealed.iv);
            encrypted.append_text_node(sealed.data);
            notification.append_child(encrypted);
        }
        None => {
            let fields = payload
                .fields()
                .iter()
                .map(|(var, value)| (var.as_str(), value.as_str()));
            notification.append_child(form(SUMMARY, fields));
        }
    }
    if extensions.priority {
        let mut priority = Element::bare("priority", extensions::PRIORITY);
        priority.append_text_node(if payload.is_urgent() { "high" } else { "low" });
        notification.append_child(priority);
    }
    // XEP-0357 section 6: the item has no id; the app server assigns one if it keeps items.
    let mut item = Element::bare("item", PUBSUB);
    item.append_child(notification);
    let mut publish = Element::bare("publish", PUBSUB);
    set_attr(&mut publish, "node", registration.key.node.as_str());
    publish.append_child(item);
    let mut pubsub = Element::bare("pubsub", PUBSUB);
    pubsub.append_child(publish);
    // Spec section 5: publish-options is omitted when the stored form has no fields.
    if !registration.form.is_empty() {
        // Lent, not copied: the elements take their own text.
        let fields = registration
            .form
            .iter()
            .map(|(var, value)| (var.as_str(), value.as_str()));
        let mut options = Element::bare("publish-options", PUBSUB);
        options.append_child(form(PUBLISH_OPTIONS, fields));
        pubsub.append_child(options);
    }
    let mut iq = Element::bare("iq", CLIENT);
    set_attr(&mut iq, "type", "set");
    set_attr(&mut iq, "from", domain);
    set_attr(&mut iq, "to", registration.key.pubsub.as_str());
    iq.append_child(pubsub);
    iq
}

/// A submitted data form with a hidden `FORM_TYPE` and one value per field.
fn form<'a>(form_type: &str, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Element {
    static FIELD: Blank = Blank::new("field", DATA_FORMS);
    static VALUE: Blank = Blank::new("value", DATA_FORMS);
    let field = |var: &str, value: &str, hidden: bool| {
        let mut field = FIELD.make();
        set_attr(&mut field, "var", var);
        if hidden {
            set_attr(&mut field, "type", "hidden");
        }
        let mut text = VALUE.make();
        text.append_text_node(value);
        field.append_child(text);
        field
    };
    let mut x = Element::bare("x", DATA_FORMS);
    set_attr(&mut x, "type", "submit");
    x.append_child(field("FORM_TYPE", form_type, true));
    for (var, value) in fields {
        x.append_child(field(var, value, false));
    }
    x
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;
    use crate::registrations::RegistrationKey;

    fn registration(form: &[(&str, &str)]) -> Registration {
        Registration::new(
            RegistrationKey {
                owner: BareJid::new("bob@example.com").unwrap(),
                pubsub: BareJid::new("push.example.com").unwrap(),
                node: "yxs32uqsflafdk3iuqo".into(),
            },
            form.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn domain() -> &'static str {
        "example.com"
    }

    #[test]
    fn the_publish_is_spec_section_5_exactly() {
        let iq = publish_iq(
            domain(),
            &registration(&[("service", "apns"), ("device_id", "TOKEN")]),
            &Payload::summary(1, "alice@example.com", "OH, HAI!"),
        );
        let expected: Element = "<iq xmlns='jabber:client' type='set' from='example.com' to='push.example.com'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='yxs32uqsflafdk3iuqo'>
      <item>
        <notification xmlns='urn:xmpp:push:0'>
          <x xmlns='jabber:x:data' type='submit'>
            <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>
            <field var='message-count'><value>1</value></field>
            <field var='last-message-sender'><value>alice@example.com</value></field>
            <field var='last-message-body'><value>OH, HAI!</value></field>
          </x>
        </notification>
      </item>
    </publish>
    <publish-options>
      <x xmlns='jabber:x:data' type='submit'>
        <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
        <field var='device_id'><value>TOKEN</value></field>
        <field var='service'><value>apns</value></field>
      </x>
    </publish-options>
  </pubsub>
</iq>"
            .parse::<Element>()
            .unwrap();
        assert_eq!(strip_whitespace(iq), strip_whitespace(expected));
    }

    #[test]
    fn the_item_has_no_id_and_empty_options_are_omitted() {
        let iq = publish_iq(
            domain(),
            &registration(&[]),
            &Payload::summary(1, "a@x", "b"),
        );
        let pubsub = iq.get_child("pubsub", PUBSUB).unwrap();
        assert!(!pubsub.has_child("publish-options", PUBSUB));
        let item = pubsub
            .get_child("publish", PUBSUB)
            .unwrap()
            .get_child("item", PUBSUB)
            .unwrap();
        assert_eq!(item.attr("id"), None);
        assert_eq!(iq.attr("id"), None);
    }

    #[test]
    fn the_publish_parses_as_a_pubsub_publish_for_xmpp_parsers() {
        let iq = publish_iq(
            domain(),
            &registration(&[("secret", "s")]),
            &Payload::summary(1, "a@x", "b"),
        );
        let pubsub =
            xmpp_parsers::pubsub::PubSub::try_from(iq.get_child("pubsub", PUBSUB).unwrap().clone())
                .unwrap();
        let xmpp_parsers::pubsub::PubSub::Publish {
            publish,
            publish_options,
        } = pubsub
        else {
            panic!("not a publish");
        };
        assert_eq!(publish.node.0, "yxs32uqsflafdk3iuqo");
        assert_eq!(
            publish_options.unwrap().form.unwrap().form_type(),
            Some(PUBLISH_OPTIONS)
        );
    }

    /// The element without whitespace-only text nodes, for comparing with pretty XML.
    fn strip_whitespace(element: Element) -> Element {
        let mut out = Element::bare(element.name(), element.ns());
        *out.attrs_mut() = element.attrs().clone();
        for node in element.nodes() {
            match node {
                minidom::Node::Element(child) => {
                    out.append_child(strip_whitespace(child.clone()));
                }
                minidom::Node::Text(text) if !text.trim().is_empty() => {
                    out.append_text_node(text.clone());
                }
                minidom::Node::Text(_) => {}
            }
        }
        out
    }
}
