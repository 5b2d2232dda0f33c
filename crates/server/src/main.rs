//! The `herald` binary: command line, configuration, start-up and shutdown.
//!
//! `main` reads as the start-up sequence: parse the command line, load the configuration,
//! then run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use herald_server::{
    app,
    cli::{Cli, Command, DbCommand, PushCommand, SessionCommand, UserCommand},
    config::Config,
};

/// Exit code for a configuration error (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("herald: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::embedded_default(),
    };
    match cli.command {
        Command::CheckConfig => app::check_modules(&config).map(|()| {
            println!("{}", app::describe(&config, cli.config.as_deref()));
            ExitCode::SUCCESS
        }),
        Command::Serve => {
            app::init_logging(&config).and_then(|()| runtime()?.block_on(app::serve(config)))
        }
        Command::User { command } => {
            runtime().and_then(|rt| rt.block_on(run_user(&config, command)))
        }
        Command::Push { command } => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    PushCommand::List { jid } => app::push_list(&config, &jid).await,
                    PushCommand::Disable { jid, node } => {
                        app::push_disable(&config, &jid, node.as_deref()).await
                    }
                    PushCommand::Test { jid, node } => {
                        app::push_test(&config, &jid, node.as_deref()).await
                    }
                }
            })
        }),
        Command::Session { command } => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    SessionCommand::List { jid } => app::session_list(&config, &jid).await,
                    SessionCommand::Kick { jid, resource } => {
                        app::session_kick(&config, &jid, resource.as_deref()).await
                    }
                }
            })
        }),
        Command::Db {
            command: DbCommand::Migrate,
        } => runtime().and_then(|rt| rt.block_on(app::db_migrate(&config))),
    }
    .unwrap_or_else(|error| {
        eprintln!("herald: {error}");
        ExitCode::from(error.exit_code())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, app::AppError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(app::AppError::Runtime)
}

async fn run_user(config: &Config, command: UserCommand) -> Result<ExitCode, app::AppError> {
    match command {
        UserCommand::Add { jid, password } => {
            let password = match password.filter(|p| p != "-") {
                Some(password) => password,
                None => password_from_stdin()?,
            };
            app::user_add(config, &jid, &password).await
        }
        UserCommand::Remove { jid } => app::user_remove(config, &jid).await,
        UserCommand::List { domain } => app::user_list(config, domain.as_deref()).await,
    }
}

/// The first line of standard input, without its line ending: `user add`'s password when
/// it is not on the command line.
fn password_from_stdin() -> Result<String, app::AppError> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|error| {
        app::AppError::Usage(format!("cannot read the password from stdin: {error}"))
    })?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(app::AppError::Usage(
            "no password: give it as an argument or on standard input".to_owned(),
        ));
    }
    Ok(password)
}
