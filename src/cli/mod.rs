//! One file per command: parse flags into a validated config, wire the parts, run.
//! Only `main` turns a [`CliError`] into an exit code.

pub mod hub;
pub mod reap;
pub mod spoke;
pub mod spoke_token;

use std::fmt;

use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad flags or arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a spoke whose enrollment the hub rejected.
pub const EXIT_REJECTED: u8 = 3;

/// A command's failure: what to print and which exit code `main` uses.
#[derive(Debug)]
pub struct CliError {
    /// One of the `EXIT_*` codes.
    pub code: u8,
    /// The full message, printed after `llmbox: `.
    pub message: String,
}

impl CliError {
    /// A runtime failure (exit 1).
    pub fn runtime(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_RUNTIME,
            message: message.to_string(),
        }
    }

    /// Bad flags or arguments (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// The hub rejected this spoke's enrollment (exit 3).
    pub fn rejected(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_REJECTED,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Default for every command's `--log-level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Parses a `--log-level` value (`off`, `error`, `warn`, `info`, `debug`, `trace`).
///
/// # Errors
/// A usage error naming the accepted levels.
pub fn parse_log_level(level: &str) -> Result<LevelFilter, CliError> {
    level.parse().map_err(|_| {
        CliError::usage(format!(
            "invalid --log-level {level:?}: use off, error, warn, info, debug or trace"
        ))
    })
}

/// Starts logging to stderr at `level`, in colour only when stderr is a terminal.
///
/// # Errors
/// A usage error for a bad level.
pub fn init_logging(level: &str) -> Result<(), CliError> {
    let filter = parse_log_level(level)?;
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Off)
        // tungstenite logs whole messages (join tokens, credentials, codes) at trace level.
        .add_filter_ignore_str("tungstenite")
        .build();
    let colour = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    // A second init (tests that run several commands in one process) keeps the first logger.
    let _ = TermLogger::init(filter, config, TerminalMode::Stderr, colour);
    Ok(())
}

/// Parses a duration flag, naming the flag in the error.
///
/// # Errors
/// A usage error.
pub fn parse_duration_flag(flag: &str, value: &str) -> Result<std::time::Duration, CliError> {
    crate::util::duration::parse_duration(value)
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))
}
