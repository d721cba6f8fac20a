//! `llmbox hub`.

use argh::FromArgs;

use super::CliError;

/// Placeholder until this command is built.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "hub")]
pub struct Args {}

/// Runs the command.
///
/// # Errors
/// Always, until it is built.
pub fn run(_args: Args) -> Result<(), CliError> {
    Err(CliError::runtime("llmbox hub is not built yet"))
}
