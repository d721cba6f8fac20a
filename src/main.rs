//! The `llmbox` command tree; each command lives in `llmbox::cli`.

use std::process::ExitCode;

use argh::FromArgs;
use llmbox::cli::{self, CliError};

/// llmbox: sandboxed Claude Code boxes for chatbots, on any number of hosts.
#[derive(FromArgs)]
struct Top {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

// Parsed once at start; the size of the biggest flag set does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Hub(cli::hub::Args),
    Spoke(cli::spoke::Args),
    Reap(cli::reap::Args),
    Version(VersionArgs),
}

/// Print the version.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
struct VersionArgs {}

fn main() -> ExitCode {
    let top: Top = argh::from_env();
    let result = match top.command {
        _ if top.version => print_version(),
        Some(Command::Version(_)) => print_version(),
        Some(Command::Hub(args)) => cli::hub::run(args),
        Some(Command::Spoke(args)) => cli::spoke::run(args),
        Some(Command::Reap(args)) => cli::reap::run(args),
        None => Err(CliError::usage(
            "no command given; run `llmbox help` for the commands",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("llmbox: {err}");
            ExitCode::from(err.code)
        }
    }
}

fn print_version() -> Result<(), CliError> {
    use std::io::Write;
    let line = format!("llmbox {}\n", env!("CARGO_PKG_VERSION"));
    match std::io::stdout().write_all(line.as_bytes()) {
        // A closed pipe (`llmbox version | head -c0`) is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::runtime(e)),
        _ => Ok(()),
    }
}
