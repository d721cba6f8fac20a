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

// One value per process; argh needs the variants unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Hub(cli::hub::Args),
    Spoke(cli::spoke::Args),
    Reap(cli::reap::Args),
    Apikey(cli::apikey::Args),
    Version(VersionArgs),
}

/// Print the version.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
struct VersionArgs {}

fn main() -> ExitCode {
    let top = match parse_args() {
        Ok(top) => top,
        Err(code) => return code,
    };
    let result = match top.command {
        _ if top.version => print_version(),
        Some(Command::Version(_)) => print_version(),
        Some(Command::Hub(args)) => cli::hub::run(args),
        Some(Command::Spoke(args)) => cli::spoke::run(args),
        Some(Command::Reap(args)) => cli::reap::run(args),
        Some(Command::Apikey(args)) => cli::apikey::run(args),
        None => Err(CliError::usage(
            "no command given; run `llmbox help` for the commands",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("llmbox: {err}");
            if err.code == cli::EXIT_USAGE
                && !err.message.to_lowercase().contains("usage:")
                && let Some(line) = usage_line()
            {
                eprintln!("{line}");
            }
            ExitCode::from(err.code)
        }
    }
}

/// Parses the command line. `--help` prints to stdout and exits 0; a bad flag prints what was
/// wrong and the command's usage line to stderr and exits 2 (argh's own `from_env` exits 1).
fn parse_args() -> Result<Top, ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("llmbox")
        .to_string();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match Top::from_args(&[&name], &rest) {
        Ok(top) => Ok(top),
        Err(exit) if exit.status.is_ok() => {
            print!("{}", exit.output);
            Err(ExitCode::SUCCESS)
        }
        Err(exit) => {
            eprintln!("llmbox: {}", exit.output.trim_end());
            if let Some(line) = usage_line() {
                eprintln!("{line}");
            }
            Err(ExitCode::from(cli::EXIT_USAGE))
        }
    }
}

/// argh's usage line for the (sub)command named on the command line before its first flag.
fn usage_line() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .take_while(|a| !a.starts_with('-'))
        .collect();
    for n in (0..=words.len()).rev() {
        let mut probe = words[..n].to_vec();
        probe.push("--help");
        if let Err(help) = Top::from_args(&["llmbox"], &probe)
            && help.status.is_ok()
        {
            return help.output.lines().next().map(str::to_string);
        }
    }
    None
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
