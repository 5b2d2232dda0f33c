//! `jabber:iq:roster` (RFC 6121 sections 2.2 to 2.5, XEP-0237): roster get with versions,
//! roster set and remove, parsed into a [`RosterRequest`] before anything is done.

use std::sync::Arc;

use herald_stream::Bare;
use herald_stream::stanza::IqType;
use jid::{BareJid, FullJid};
use xmpp_parsers::{
    roster::{Roster as RosterQuery, Subscription},
    stanza_error::{DefinedCondition, ErrorType},
};

use super::{Roster, query};
use crate::{
    Server,
    module::{IqError, IqHandler, IqRequest, IqResponse},
};

/// The longest item name or group name accepted, in bytes (RFC 6121 section 2.3.3 lets the
/// server choose; 1023 is what MongooseIM-era servers commonly allow).
const MAX_TEXT: usize = 1023;

/// A roster request, checked.
#[derive(Debug, PartialEq, Eq)]
enum RosterRequest {
    /// Section 2.2 with XEP-0237: the roster, or nothing when `ver` is current.
    Get { ver: Option<String> },
    /// Section 2.3: add or change an item.
    Set {
        contact: BareJid,
        name: Option<String>,
        groups: Vec<String>,
    },
    /// Section 2.5: remove an item.
    Remove { contact: BareJid },
}

fn error(type_: ErrorType, condition: DefinedCondition) -> IqError {
    IqError::new(type_, condition)
}

impl RosterRequest {
    /// Section 2.3.3: the errors a roster set can get.
    fn parse(kind: IqType, payload: &minidom::Element) -> Result<RosterRequest, IqError> {
        let query = RosterQuery::try_from(payload.clone()).map_err(|_| IqError::bad_request())?;
        match kind {
            IqType::Get => {
                if !query.items.is_empty() {
                    return Err(IqError::bad_request());
                }
                Ok(RosterRequest::Get { ver: query.ver })
            }
            IqType::Set => {
                // "The <query/> element contains more than one <item/> child element."
                let [item] = <[_; 1]>::try_from(query.items).map_err(|_| IqError::bad_request())?;
                if item.subscription == Subscription::Remove {
                    return Ok(RosterRequest::Remove { contact: item.jid });
                }
                // Subscription and ask values other than remove are ignored (section 2.1.2.5).
                let name = item.name.filter(|name| !name.is_empty());
                if name.as_ref().is_some_and(|name| name.len() > MAX_TEXT) {
                    return Err(error(ErrorType::Modify, DefinedCondition::NotAcceptable));
                }
                let mut groups = Vec::with_capacity(item.groups.len());
                for group in item.groups {
                    // "The <group/> element contains no XML character data" or is too long.
                    if group.0.is_empty() || group.0.len() > MAX_TEXT {
                        return Err(error(ErrorType::Modify, DefinedCondition::NotAcceptable));
                    }
                    // "The <item/> element contains more than one <group/> element, but there
                    // are duplicate groups."
                    if groups.contains(&group.0) {
                        return Err(IqError::bad_request());
                    }
                    groups.push(group.0);
                }
                Ok(RosterRequest::Set {
                    contact: item.jid,
                    name,
                    groups,
                })
            }
            IqType::Result | IqType::Error => Err(IqError::bad_request()),
        }
    }
}

/// The `jabber:iq:roster` handler.
pub(super) struct RosterIq(pub(super) Arc<Roster>);

#[async_trait::async_trait]
impl IqHandler for RosterIq {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        // Section 2.1.5 (and 2.3.3 for sets): only the user's own resources use the roster;
        // a request from or to another entity is forbidden.
        let Ok(sender) = request.sender.try_as_full() else {
            return Err(error(ErrorType::Auth, DefinedCondition::Forbidden));
        };
        let user = sender.bare();
        if !request.target.same_bare(&user) {
            return Err(error(ErrorType::Auth, DefinedCondition::Forbidden));
        }
        let parsed = RosterRequest::parse(request.kind, request.payload)?;
        let outcome = match parsed {
            RosterRequest::Get { ver } => self.get(server, sender, &user, ver).await,
            RosterRequest::Set {
                contact,
                name,
                groups,
            } => match self.0.has_room(server, &user, &contact).await {
                // RFC 6121 section 2.3.3: a roster at its size limit refuses new items.
                Ok(false) => return Err(error(ErrorType::Cancel, DefinedCondition::NotAllowed)),
                Ok(true) => self
                    .0
                    .set_item(server, &user, &contact, name, groups)
                    .await
                    .map(|()| None),
                Err(error) => Err(error),
            },
            RosterRequest::Remove { contact } => {
                match self.0.remove_item(server, &user, &contact).await {
                    Ok(Some(_)) => Ok(None),
                    // Section 2.5.3: removing an item that is not in the roster.
                    Ok(None) => return Err(IqError::item_not_found()),
                    Err(error) => Err(error),
                }
            }
        };
        outcome.map_err(|error| {
            tracing::error!(%user, %error, "roster request failed");
            IqError::internal()
        })
    }
}

impl RosterIq {
    async fn get(
        &self,
        server: &Server,
        sender: &FullJid,
        user: &BareJid,
        ver: Option<String>,
    ) -> Result<Option<minidom::Element>, herald_storage::StorageError> {
        // Section 2.1.6: a resource that asked for the roster is "interested" and gets
        // roster pushes from now on.
        if let Some(session) = server.sessions.get(sender) {
            super::RosterInterest::mark(&session);
        }
        let visible = Roster::visible(self.0.items(server, user).await?);
        // XEP-0237 section 2.2: a client that supports versioning sends `ver`, possibly
        // empty; others get the roster without a version.
        let version = match ver {
            Some(known) => {
                let current = self.0.version(server, user, &visible).await?;
                if current.as_ref() == Some(&known) {
                    // Section 2.4: up to date; changes will come as roster pushes.
                    return Ok(None);
                }
                current
            }
            None => None,
        };
        Ok(Some(query(&visible, version)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: IqType, xml: &str) -> Result<RosterRequest, IqError> {
        RosterRequest::parse(kind, &xml.parse().unwrap())
    }

    fn jid(text: &str) -> BareJid {
        BareJid::new(text).unwrap()
    }

    #[test]
    fn a_get_carries_the_clients_version() {
        assert_eq!(
            parse(IqType::Get, "<query xmlns='jabber:iq:roster'/>"),
            Ok(RosterRequest::Get { ver: None })
        );
        assert_eq!(
            parse(IqType::Get, "<query xmlns='jabber:iq:roster' ver='ver14'/>"),
            Ok(RosterRequest::Get {
                ver: Some("ver14".into())
            })
        );
    }

    #[test]
    fn a_set_from_rfc_6121_example_2_3_1_is_read() {
        let parsed = parse(
            IqType::Set,
            "<query xmlns='jabber:iq:roster'><item jid='nurse@example.com' name='Nurse'>\
             <group>Servants</group></item></query>",
        );
        assert_eq!(
            parsed,
            Ok(RosterRequest::Set {
                contact: jid("nurse@example.com"),
                name: Some("Nurse".into()),
                groups: vec!["Servants".into()],
            })
        );
    }

    #[test]
    fn subscription_remove_is_a_removal() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='nurse@example.com' subscription='remove'/></query>"
            ),
            Ok(RosterRequest::Remove {
                contact: jid("nurse@example.com")
            })
        );
    }

    #[test]
    fn other_subscription_values_in_a_set_are_ignored() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='nurse@example.com' subscription='both' ask='subscribe'/></query>"
            ),
            Ok(RosterRequest::Set {
                contact: jid("nurse@example.com"),
                name: None,
                groups: Vec::new(),
            })
        );
    }

    #[test]
    fn two_items_in_a_set_are_a_bad_request() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='a@b'/><item jid='c@d'/></query>"
            ),
            Err(IqError::bad_request())
        );
        assert_eq!(
            parse(IqType::Set, "<query xmlns='jabber:iq:roster'/>"),
            Err(IqError::bad_request())
        );
    }

    #[test]
    fn duplicate_groups_are_a_bad_request_and_an_empty_group_is_not_acceptable() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='a@b'><group>G</group><group>G</group></item></query>"
            ),
            Err(IqError::bad_request())
        );
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='a@b'><group/></item></query>"
            ),
            Err(error(ErrorType::Modify, DefinedCondition::NotAcceptable))
        );
    }

    #[test]
    fn a_name_that_is_too_long_is_not_acceptable() {
        let long = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            parse(
                IqType::Set,
                &format!("<query xmlns='jabber:iq:roster'><item jid='a@b' name='{long}'/></query>")
            ),
            Err(error(ErrorType::Modify, DefinedCondition::NotAcceptable))
        );
    }

    #[test]
    fn an_item_with_a_full_jid_is_a_bad_request() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:roster'><item jid='a@b/c'/></query>"
            ),
            Err(IqError::bad_request())
        );
    }
}
