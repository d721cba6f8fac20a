//! `llmbox spoke token create|list|revoke` and `llmbox spoke list|revoke`: join tokens and
//! enrolled spokes on the hub's state file. Safe to run beside a running hub (every change is a
//! locked read-modify-write; the hub reloads the file).

use std::io::Write;
use std::path::PathBuf;

use argh::FromArgs;

use crate::cluster::{ClusterError, tokens};
use crate::paths::{self, FileKind};
use crate::store::Store;
use crate::util::duration::format_duration;
use crate::util::time::utc;
use crate::util::unix_now;

use super::{CliError, parse_duration_flag};

/// Subcommands of `llmbox spoke`.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub(crate) enum Command {
    /// Join tokens.
    Token(TokenArgs),
    /// Enrolled spokes.
    List(ListArgs),
    /// Remove an enrolled spoke.
    Revoke(RevokeArgs),
}

/// Manage one-time join tokens.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "token")]
pub(crate) struct TokenArgs {
    #[argh(subcommand)]
    command: TokenCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum TokenCommand {
    Create(CreateArgs),
    List(TokenListArgs),
    Revoke(TokenRevokeArgs),
}

/// Mint a join token for a new spoke; it is printed once.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
struct CreateArgs {
    /// the spoke's name (one DNS label; not "local")
    #[argh(option)]
    name: String,
    /// how long the token stays valid (default 1h)
    #[argh(option, default = "String::from(\"1h\")")]
    ttl: String,
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
    /// the hub's spoke-plane URL to show in the printed command (default ws://HUB:8081)
    #[argh(option, default = "String::from(\"ws://HUB:8081\")")]
    hub: String,
    /// mint the token even though a spoke is enrolled under this name: the host that enrolls
    /// with it replaces that spoke (whose connection is then closed)
    #[argh(switch)]
    replace: bool,
}

/// List outstanding join tokens (ids only; tokens are never shown again).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct TokenListArgs {
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

/// Revoke join tokens by id prefix or by spoke name.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "revoke")]
struct TokenRevokeArgs {
    /// token id (or a unique prefix of it) from `token list`
    #[argh(option)]
    id: Option<String>,
    /// revoke every token for this spoke name
    #[argh(option)]
    name: Option<String>,
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

/// List enrolled spokes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub(crate) struct ListArgs {
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

/// Remove an enrolled spoke and its tokens; a running hub drops its connection.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "revoke")]
pub(crate) struct RevokeArgs {
    /// the spoke's name
    #[argh(option)]
    name: String,
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

/// Runs a subcommand.
///
/// # Errors
/// Usage errors for bad names or durations; runtime errors for the state file.
pub fn run(command: Command) -> Result<(), CliError> {
    let mut out = String::new();
    match command {
        Command::Token(t) => match t.command {
            TokenCommand::Create(a) => create(a, &mut out)?,
            TokenCommand::List(a) => token_list(&a.state, &mut out)?,
            TokenCommand::Revoke(a) => token_revoke(a, &mut out)?,
        },
        Command::List(a) => spoke_list(&a.state, &mut out)?,
        Command::Revoke(a) => {
            let store = open(&a.state)?;
            if tokens::revoke_spoke(&store, &a.name).map_err(cluster_err)? {
                out.push_str(&format!(
                    "revoked spoke {:?} and its join tokens in {}; a running hub closes its connection within one heartbeat\n",
                    a.name,
                    store.path().display()
                ));
            } else {
                return Err(CliError::runtime(format!(
                    "no spoke or join token named {:?} in {}",
                    a.name,
                    store.path().display()
                )));
            }
        }
    }
    print(&out)
}

/// Writes a command's output to stdout; a closed pipe is not a failure.
pub(super) fn print(text: &str) -> Result<(), CliError> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::runtime(e)),
        _ => Ok(()),
    }
}

/// An EXPIRES column cell: the instant, marked when it has passed.
pub(super) fn expires_cell(at: i64, now: i64) -> String {
    if at <= now {
        format!("{} (expired)", utc(at))
    } else {
        utc(at)
    }
}

/// Locates the hub's state file for a command (`--state`, else the defaults of
/// [`crate::paths`]) and says on stderr which one it used when no flag named it: a command run
/// from another directory must not quietly work on another file.
///
/// # Errors
/// No default could be chosen (exit 1).
pub(super) fn state_path(flag: &Option<PathBuf>) -> Result<PathBuf, CliError> {
    let located = paths::locate(FileKind::State, flag.as_deref()).map_err(CliError::runtime)?;
    if located.source != paths::Source::Flag {
        eprintln!("llmbox: using {located}");
    }
    Ok(located.path)
}

/// Opens the hub's state file for a command; see [`state_path`].
///
/// # Errors
/// No default path, or a state file that cannot be read (exit 1).
pub(super) fn open(flag: &Option<PathBuf>) -> Result<Store, CliError> {
    Store::open(state_path(flag)?).map_err(CliError::runtime)
}

fn cluster_err(e: ClusterError) -> CliError {
    match e {
        ClusterError::Invalid(msg) => CliError::usage(msg),
        other => CliError::runtime(other),
    }
}

fn create(a: CreateArgs, out: &mut String) -> Result<(), CliError> {
    // Every check before the state file is touched: bad input creates nothing, not even a lock.
    let ttl = parse_duration_flag("--ttl", &a.ttl)?;
    tokens::validate_ttl(ttl).map_err(|e| CliError::usage(format!("--ttl: {e}")))?;
    tokens::validate_spoke_name(&a.name).map_err(cluster_err)?;
    let store = open(&a.state)?;
    if !a.replace
        && let Some(enrolled) = store
            .load()
            .map_err(CliError::runtime)?
            .spokes
            .iter()
            .find(|s| s.name == a.name)
    {
        return Err(CliError::runtime(takeover_refusal(
            &a.name,
            enrolled.enrolled,
        )));
    }
    let (token, record) = tokens::create_token(&store, &a.name, ttl).map_err(cluster_err)?;
    let state = std::fs::canonicalize(store.path()).unwrap_or(store.path().to_path_buf());
    out.push_str(&format!(
        "join token {} for spoke {:?}, valid for {} (until {}), stored as its hash in {}\n\
         it is shown only now; on the spoke host run:\n\n  llmbox spoke --hub {} --token {token}\n",
        record.id(),
        record.name,
        format_duration(ttl),
        utc(record.expires),
        state.display(),
        a.hub,
    ));
    Ok(())
}

/// Why `token create` refuses a name that is enrolled: a host enrolling with the token would
/// take the name over and cut the live spoke off.
fn takeover_refusal(name: &str, enrolled: i64) -> String {
    format!(
        "spoke {name:?} is already enrolled (since {}): a host that enrolls with a new token for this name replaces it, and a running hub closes the current {name:?}'s connection (that spoke then exits). Pick another name for a new host, or pass --replace to move {name:?} to another host on purpose (`llmbox spoke revoke --name {name}` removes it outright)",
        utc(enrolled)
    )
}

fn token_list(state: &Option<PathBuf>, out: &mut String) -> Result<(), CliError> {
    let store = open(state)?;
    let st = store.load().map_err(CliError::runtime)?;
    let now = unix_now();
    out.push_str("ID            NAME                 CREATED                 EXPIRES\n");
    for t in &st.join_tokens {
        let expires = expires_cell(t.expires, now);
        out.push_str(&format!(
            "{:<13} {:<20} {:<23} {expires}\n",
            t.id(),
            t.name,
            utc(t.created)
        ));
    }
    Ok(())
}

fn token_revoke(a: TokenRevokeArgs, out: &mut String) -> Result<(), CliError> {
    let store = match (&a.id, &a.name) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(CliError::usage(
                "give exactly one of --id PREFIX or --name NAME\nusage: llmbox spoke token revoke (--id PREFIX | --name N) [--state FILE]",
            ));
        }
        (Some(id), None) => {
            tokens::validate_token_id_prefix(id).map_err(cluster_err)?;
            open(&a.state)?
        }
        _ => open(&a.state)?,
    };
    if let Some(id) = &a.id {
        let gone = tokens::revoke_token_by_id(&store, id).map_err(cluster_err)?;
        out.push_str(&format!(
            "revoked join token {} for spoke {:?}\n",
            gone.id(),
            gone.name
        ));
    } else if let Some(name) = &a.name {
        let n = tokens::revoke_tokens_by_name(&store, name).map_err(cluster_err)?;
        if n == 0 {
            return Err(CliError::runtime(format!(
                "no join token for spoke {name:?}"
            )));
        }
        out.push_str(&format!("revoked {n} join token(s) for spoke {name:?}\n"));
    }
    Ok(())
}

fn spoke_list(state: &Option<PathBuf>, out: &mut String) -> Result<(), CliError> {
    let store = open(state)?;
    let st = store.load().map_err(CliError::runtime)?;
    out.push_str("NAME                 ENROLLED\n");
    for s in &st.spokes {
        out.push_str(&format!("{:<20} {}\n", s.name, utc(s.enrolled)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_random_source_is_a_runtime_failure_and_bad_input_a_usage_error() {
        use crate::cluster::ClusterError;
        let random = super::cluster_err(ClusterError::Random(getrandom::Error::UNEXPECTED));
        assert_eq!(random.code, crate::cli::EXIT_RUNTIME, "{random}");
        assert!(random.message.starts_with("random source: "), "{random}");
        let usage = super::cluster_err(ClusterError::Invalid("bad name".into()));
        assert_eq!(usage.code, crate::cli::EXIT_USAGE);
    }
}
