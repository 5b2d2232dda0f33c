//! A PEP node's configuration (XEP-0060 section 16.4, `pubsub#node_config`): the fields a
//! client may set at creation, with publish-options or by configuring the node, checked and
//! normalised here so that preconditions (XEP-0060 section 7.1.5) compare like with like.

use std::collections::BTreeMap;

use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::module::IqError;

/// XEP-0004's namespace.
pub(super) const DATA: &str = "jabber:x:data";
/// The FORM_TYPE of node configuration.
pub(super) const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// The FORM_TYPE of publish-options.
pub(super) const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// XEP-0060's error namespace.
pub(super) const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// Who may retrieve a node's items and receive its notifications (XEP-0060 section 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone (OMEMO device lists and bundles).
    Open,
    /// Contacts subscribed to the owner's presence (PEP's default, XEP-0163 section 4).
    Presence,
    /// Contacts in the roster groups of `pubsub#roster_groups_allowed`.
    Roster,
    /// Only the owner (private data such as bookmarks, XEP-0402).
    Whitelist,
}

/// A node's configuration: every field by its `var`, values normalised (booleans as `true` or
/// `false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeConfig(BTreeMap<String, Vec<String>>);

/// The fields herald knows, with their defaults.
const DEFAULTS: &[(&str, &str)] = &[
    ("pubsub#access_model", "presence"),
    ("pubsub#deliver_notifications", "true"),
    ("pubsub#deliver_payloads", "true"),
    ("pubsub#max_items", "1"),
    ("pubsub#notify_delete", "true"),
    ("pubsub#notify_retract", "true"),
    ("pubsub#persist_items", "true"),
    ("pubsub#publish_model", "publishers"),
    ("pubsub#send_last_published_item", "on_sub_and_presence"),
];

const BOOLEANS: &[&str] = &[
    "pubsub#deliver_notifications",
    "pubsub#deliver_payloads",
    "pubsub#notify_config",
    "pubsub#notify_delete",
    "pubsub#notify_retract",
    "pubsub#persist_items",
    "pubsub#presence_based_delivery",
];

fn not_acceptable(specific: &'static str) -> IqError {
    IqError::new(ErrorType::Modify, DefinedCondition::NotAcceptable).with_specific(specific, ERRORS)
}

impl NodeConfig {
    /// The configuration of a new node.
    pub fn defaults() -> NodeConfig {
        NodeConfig(
            DEFAULTS
                .iter()
                .map(|(var, value)| ((*var).to_owned(), vec![(*value).to_owned()]))
                .collect(),
        )
    }

    fn value(&self, var: &str) -> Option<&str> {
        self.0.get(var)?.first().map(String::as_str)
    }

    /// The access model.
    pub fn access_model(&self) -> AccessModel {
        match self.value("pubsub#access_model") {
            Some("open") => AccessModel::Open,
            Some("roster") => AccessModel::Roster,
            Some("whitelist") => AccessModel::Whitelist,
            _ => AccessModel::Presence,
        }
    }

    /// The roster groups allowed under the roster access model.
    pub fn roster_groups(&self) -> &[String] {
        self.0
            .get("pubsub#roster_groups_allowed")
            .map_or(&[], Vec::as_slice)
    }

    /// How many items the node keeps, at most `cap` (`max_items_node`); "max" is the cap.
    /// A node that does not persist items keeps its last one, for the last-item delivery.
    pub fn max_items(&self, cap: usize) -> usize {
        if self.value("pubsub#persist_items") == Some("false") {
            return 1;
        }
        match self.value("pubsub#max_items") {
            Some("max") => cap,
            Some(n) => n.parse::<usize>().map_or(1, |n| n.clamp(1, cap)),
            None => 1,
        }
    }

    fn flag(&self, var: &str) -> bool {
        self.value(var) != Some("false")
    }

    /// Whether subscribers get the last item when they come online (XEP-0163 section 4.3.2).
    pub fn sends_last_item(&self) -> bool {
        self.value("pubsub#send_last_published_item") != Some("never")
    }

    /// Whether notifications carry the item's payload.
    pub fn delivers_payloads(&self) -> bool {
        self.flag("pubsub#deliver_payloads")
    }

    /// Whether notifications are sent at all.
    pub fn delivers_notifications(&self) -> bool {
        self.flag("pubsub#deliver_notifications")
    }

    /// Whether deleting the node is notified.
    pub fn notifies_delete(&self) -> bool {
        self.flag("pubsub#notify_delete")
    }

    /// Apply submitted fields (creation, publish-options, configuration), each checked.
    pub fn apply(&mut self, fields: &Fields) -> Result<(), IqError> {
        for (var, values) in fields {
            if var == "FORM_TYPE" {
                continue;
            }
            let values = normalise(var, values)?;
            self.0.insert(var.clone(), values);
        }
        Ok(())
    }

    /// Whether the node's configuration meets publish-options (XEP-0060 section 7.1.5): each
    /// field equal once normalised; a field the node lacks is compared with nothing.
    pub fn meets(&self, fields: &Fields) -> Result<bool, IqError> {
        for (var, values) in fields {
            if var == "FORM_TYPE" {
                continue;
            }
            let wanted = normalise(var, values)?;
            if self.0.get(var).map(Vec::as_slice).unwrap_or(&[]) != wanted.as_slice() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The configuration as a form (XEP-0060 section 8.2.1).
    pub fn form(&self) -> Element {
        let mut form = super::element("x", DATA, "type", "form");
        form.append_child(field(
            "FORM_TYPE",
            Some("hidden"),
            &[NODE_CONFIG.to_owned()],
        ));
        for (var, values) in &self.0 {
            form.append_child(field(var, None, values));
        }
        form
    }
}

fn field(var: &str, type_: Option<&str>, values: &[String]) -> Element {
    let mut field = super::element("field", DATA, "var", var);
    if let Some(type_) = type_ {
        herald_stream::stanza::set_attr(&mut field, "type", type_);
    }
    for value in values {
        let mut element = Element::bare("value", DATA);
        element.append_text_node(value.clone());
        field.append_child(element);
    }
    field
}

/// Check one field's values and put them in normal form.
fn normalise(var: &str, values: &[String]) -> Result<Vec<String>, IqError> {
    let one = || values.first().map(String::as_str).unwrap_or("");
    if BOOLEANS.contains(&var) {
        return match one() {
            "1" | "true" => Ok(vec!["true".to_owned()]),
            "0" | "false" => Ok(vec!["false".to_owned()]),
            _ => Err(IqError::bad_request()),
        };
    }
    match var {
        "pubsub#access_model" => match one() {
            "open" | "presence" | "roster" | "whitelist" => Ok(vec![one().to_owned()]),
            _ => Err(not_acceptable("unsupported-access-model")),
        },
        "pubsub#max_items" => match one() {
            "max" => Ok(vec!["max".to_owned()]),
            n if n.parse::<u64>().is_ok_and(|n| n >= 1) => {
                Ok(vec![n.parse::<u64>().unwrap_or(1).to_string()])
            }
            _ => Err(IqError::bad_request()),
        },
        "pubsub#send_last_published_item" => match one() {
            "never" | "on_sub" | "on_sub_and_presence" => Ok(vec![one().to_owned()]),
            _ => Err(IqError::bad_request()),
        },
        _ => Ok(values.to_vec()),
    }
}

/// A submitted form's fields, by `var`.
pub type Fields = BTreeMap<String, Vec<String>>;

/// The fields of a data form of type submit (XEP-0004), after checking its FORM_TYPE.
pub fn submitted(form: &Element, form_type: &str) -> Result<Fields, IqError> {
    if !form.is("x", DATA) || !matches!(form.attr("type"), Some("submit")) {
        return Err(IqError::bad_request());
    }
    let mut fields = Fields::new();
    for field in form.children().filter(|child| child.is("field", DATA)) {
        let Some(var) = field.attr("var") else {
            return Err(IqError::bad_request());
        };
        let values = field
            .children()
            .filter(|child| child.is("value", DATA))
            .map(Element::text)
            .collect();
        fields.insert(var.to_owned(), values);
    }
    match fields.get("FORM_TYPE").and_then(|values| values.first()) {
        Some(value) if value == form_type => Ok(fields),
        _ => Err(IqError::bad_request()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(var, value)| ((*var).to_owned(), vec![(*value).to_owned()]))
            .collect()
    }

    #[test]
    fn publish_options_apply_and_then_are_met_whatever_the_boolean_spelling() {
        let mut config = NodeConfig::defaults();
        assert_eq!(config.access_model(), AccessModel::Presence);
        let options = fields(&[
            ("FORM_TYPE", PUBLISH_OPTIONS),
            ("pubsub#access_model", "open"),
            ("pubsub#persist_items", "1"),
        ]);
        config.apply(&options).unwrap();
        assert_eq!(config.access_model(), AccessModel::Open);
        assert!(config.meets(&options).unwrap());
        assert!(
            config
                .meets(&fields(&[("pubsub#persist_items", "true")]))
                .unwrap()
        );
        assert!(
            !config
                .meets(&fields(&[("pubsub#access_model", "presence")]))
                .unwrap()
        );
        assert!(!config.meets(&fields(&[("urn:x:unknown", "x")])).unwrap());
    }

    #[test]
    fn bad_values_are_refused_with_the_right_condition() {
        let mut config = NodeConfig::defaults();
        let error = config
            .apply(&fields(&[("pubsub#access_model", "authorize")]))
            .unwrap_err();
        assert_eq!(error.specific, Some(("unsupported-access-model", ERRORS)));
        assert!(config.apply(&fields(&[("pubsub#max_items", "0")])).is_err());
        assert!(
            config
                .apply(&fields(&[("pubsub#persist_items", "yes")]))
                .is_err()
        );
    }

    #[test]
    fn max_items_is_capped_and_max_means_the_cap() {
        let mut config = NodeConfig::defaults();
        assert_eq!(config.max_items(100), 1);
        config
            .apply(&fields(&[("pubsub#max_items", "max")]))
            .unwrap();
        assert_eq!(config.max_items(100), 100);
        config
            .apply(&fields(&[("pubsub#max_items", "1000")]))
            .unwrap();
        assert_eq!(config.max_items(100), 100);
        config
            .apply(&fields(&[("pubsub#persist_items", "false")]))
            .unwrap();
        assert_eq!(config.max_items(100), 1);
    }
}
