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
    /// Manage the configured database.
    Db {
        /// The database operation.
        #[command(subcommand)]
        command: DbCommand,
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
    /// Delete an account and its data.
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
