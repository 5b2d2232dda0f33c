//! What the modules that keep per-user data (`storage::UserDataStore`: blocking, vCards,
//! PEP) share: their rows go with the account.

use std::sync::Arc;

use herald_storage::UserDataStore;

use crate::{
    Server,
    hooks::{Flow, Handler, UserRemoved},
};

/// `user_removed`: delete every per-user row of the account (each module that keeps such
/// rows attaches one; the second removal finds nothing).
pub(crate) struct RemoveUserData(pub(crate) Arc<dyn UserDataStore>);

#[async_trait::async_trait]
impl Handler<UserRemoved> for RemoveUserData {
    async fn call(&self, _server: &Server, event: &mut UserRemoved) -> Flow {
        if let Err(error) = self.0.remove_user(&event.user).await {
            tracing::error!(user = %event.user, %error, "cannot remove the account's module data");
        }
        Flow::Continue
    }
}
