//! Software Version (XEP-0092), `[modules.mod_version]`: the server answers with its name and
//! version (section 2), and with the operating system only when `os_info` is on
//! (MongooseIM's option; off by default, since it tells an attacker what to aim at).

use std::sync::Arc;

use herald_stream::stanza::IqType;
use minidom::Element;

use crate::{
    Server,
    config::{Invalid, KeyPath, Section},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

/// XEP-0092's namespace.
pub const NS: &str = "jabber:iq:version";

/// `[modules.mod_version]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionConfig {
    /// `os_info`: include the operating system (default false).
    pub os_info: bool,
}

/// `[modules.mod_version]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawVersion {
    /// See [`VersionConfig::os_info`].
    pub os_info: Option<bool>,
}

impl Section for VersionConfig {
    type Raw = RawVersion;

    fn from_raw(raw: RawVersion, _at: &KeyPath) -> Result<Self, Invalid> {
        Ok(VersionConfig {
            os_info: raw.os_info.unwrap_or(false),
        })
    }
}

/// The version module.
pub struct Version(pub VersionConfig);

impl Module for Version {
    fn name(&self) -> &'static str {
        "mod_version"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(NS);
        r.iq(IqScope::Server, NS, self);
    }
}

#[async_trait::async_trait]
impl IqHandler for Version {
    async fn handle(&self, _server: &Server, request: IqRequest<'_>) -> IqResponse {
        if request.kind != IqType::Get {
            return Err(IqError::bad_request());
        }
        let mut query = Element::bare("query", NS);
        let mut field = |name: &str, text: &str| {
            let mut child = Element::bare(name, NS);
            child.append_text_node(text);
            query.append_child(child);
        };
        field("name", "herald");
        field("version", env!("CARGO_PKG_VERSION"));
        if self.0.os_info {
            field("os", std::env::consts::OS);
        }
        Ok(Some(query))
    }
}
