//! `llmbox spoke`.

use argh::FromArgs;

use super::CliError;

/// Placeholder until this command is built.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "spoke")]
pub struct Args {}

/// Runs the command.
///
/// # Errors
/// Always, until it is built.
pub fn run(_args: Args) -> Result<(), CliError> {
    Err(CliError::runtime("llmbox spoke is not built yet"))
}
