//! Account removal: the one path behind in-band cancellation (XEP-0077 section 3.2) and
//! `herald user remove`.

use herald_storage::StorageError;
use herald_stream::StreamErrorCondition;
use jid::BareJid;

use crate::{Server, hooks::UserRemoved};

impl Server {
    /// Delete an account and what modules keep about it, then end its sessions. Returns
    /// whether the account existed.
    ///
    /// The account goes first, so that nobody logs in to it meanwhile; its live sessions are
    /// asked to close with `<not-authorized/>` (XEP-0077 section 3.2: the server terminates
    /// all active sessions), each writing what was already queued for it (such as the result
    /// of the cancellation request); then the `user_removed` hook runs, where the roster
    /// cancels the account's subscriptions and modules delete their data.
    pub async fn remove_account(&self, user: &BareJid) -> Result<bool, StorageError> {
        if !self.storage.accounts().remove(user).await? {
            return Ok(false);
        }
        tracing::info!(%user, "account removed");
        for resource in self.sessions.resources(user) {
            resource
                .handle
                .control
                .close(StreamErrorCondition::NotAuthorized);
        }
        let mut event = UserRemoved { user: user.clone() };
        self.extensions
            .hooks()
            .user_removed
            .run(self, &mut event)
            .await;
        Ok(true)
    }
}
