//! The command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// herald: an XMPP server built around push notifications (XEP-0357).
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Cli {
    /// The TOML configuration file. Without it herald runs its embedded default:
    /// domain "localhost", data in $HERALD_DATA or ./herald-data, c2s on
    /// 127.0.0.1:5222 with STARTTLS and a self-signed certificate.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// herald's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve,
    /// Manage accounts in the configured store.
    User {
        /// The account operation.
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check the configuration and print what it means, without starting anything.
    CheckConfig,
    /// Push registrations, through the running server's admin API.
    Push {
        /// The push operation.
        #[command(subcommand)]
        command: PushCommand,
    },
    /// Live sessions, through the running server's admin API.
    Session {
        /// The session operation.
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Manage the configured database.
    Db {
        /// The database operation.
        #[command(subcommand)]
        command: DbCommand,
    },
}

/// Push registration operations (the admin API must be configured: docs/operations.md).
#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// List a user's registrations with their last success and error, secrets masked.
    List {
        /// The account's bare JID.
        jid: String,
    },
    /// Disable a user's registration with NODE, or all of them.
    Disable {
        /// The account's bare JID.
        jid: String,
        /// Only the registration with this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Send a test push to one registration (the oldest, or NODE's) and print the app
    /// server's answer; exits 0 only if it was delivered.
    Test {
        /// The account's bare JID.
        jid: String,
        /// The registration with this node.
        #[arg(long)]
        node: Option<String>,
    },
}

/// Live session operations (the admin API must be configured).
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List a user's sessions.
    List {
        /// The account's bare JID.
        jid: String,
    },
    /// Close a user's session with RESOURCE, or all of them.
    Kick {
        /// The account's bare JID.
        jid: String,
        /// Only the session of this resource.
        #[arg(long)]
        resource: Option<String>,
    },
}

/// Database operations.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schema (as `serve` does on start-up) and print the migrations
    /// applied.
    Migrate,
}

/// Account operations.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// The account's bare JID, e.g. alice@localhost; its domain must be served.
        jid: String,
        /// The password; only SCRAM secrets derived from it are stored. Omitted or `-`, it is
        /// read from the first line of standard input (so that it appears in no process list
        /// or shell history).
        password: Option<String>,
    },
    /// Delete an account and its data; while the server runs (its admin API configured),
    /// through the server, which closes the account's live sessions.
    Remove {
        /// The account's bare JID.
        jid: String,
    },
    /// List accounts, one JID per line.
    List {
        /// Only the accounts of this domain.
        domain: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn db_migrate_is_a_command() {
        let cli = Cli::try_parse_from(["herald", "db", "migrate", "-c", "a.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Db {
                command: DbCommand::Migrate
            }
        ));
    }

    #[test]
    fn config_is_accepted_before_and_after_the_subcommand() {
        let before = Cli::try_parse_from(["herald", "--config", "a.toml", "serve"]).unwrap();
        assert_eq!(before.config.unwrap(), PathBuf::from("a.toml"));
        let after = Cli::try_parse_from(["herald", "user", "list", "--config", "b.toml"]).unwrap();
        assert_eq!(after.config.unwrap(), PathBuf::from("b.toml"));
    }
}
