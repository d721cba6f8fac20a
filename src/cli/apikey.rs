//! `llmbox apikey create|list|revoke`: the API keys MCP callers present, on the hub's state
//! file. Safe beside a running hub: every change is a locked read-modify-write and the hub
//! re-reads the file on its next request. Every flag is checked before the file is touched,
//! so a bad command line (exit 2) changes nothing.

use std::path::PathBuf;

use argh::FromArgs;

use super::spoke_token::{expires_cell, open};
use super::{CliError, parse_duration_flag};
use crate::hub::apikeys::{self, ApiKeyError};
use crate::util::time::utc;
use crate::util::unix_now;

/// Manage the API keys MCP callers present (Authorization: Bearer KEY).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "apikey")]
pub struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Create(CreateArgs),
    List(ListArgs),
    Revoke(RevokeArgs),
}

/// Mint an API key; it is printed once, alone on the first line.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
struct CreateArgs {
    /// the key's name (unique; shown in listings and the audit log)
    #[argh(option)]
    name: String,
    /// how long the key stays valid, like 30d (default: until revoked)
    #[argh(option)]
    ttl: Option<String>,
    /// the key sees and acts on every box, not only the ones it created
    #[argh(switch)]
    admin: bool,
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
    /// the hub's MCP URL to show in the printed command (default http://127.0.0.1:8080/mcp)
    #[argh(option, default = "String::from(\"http://127.0.0.1:8080/mcp\")")]
    url: String,
}

/// List API keys (ids and names only; keys are never shown again).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

/// Revoke an API key by id prefix or by name; a running hub refuses it on the next request.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "revoke")]
struct RevokeArgs {
    /// key id (or a unique prefix of it, 4 characters or more) from `apikey list`
    #[argh(option)]
    id: Option<String>,
    /// the key's name
    #[argh(option)]
    name: Option<String>,
    /// hub state file (default $LLMBOX_STATE, else /var/lib/llmbox/llmbox-state.json as root,
    /// else $XDG_STATE_HOME/llmbox/llmbox-state.json)
    #[argh(option)]
    state: Option<PathBuf>,
}

const REVOKE_USAGE: &str = "usage: llmbox apikey revoke (--id PREFIX | --name NAME) [--state FILE]";

/// Runs a subcommand.
///
/// # Errors
/// Usage errors (exit 2) for bad flags, before anything changes; runtime errors (exit 1) for
/// the state file or a key that does not exist.
pub fn run(args: Args) -> Result<(), CliError> {
    let mut out = String::new();
    match args.command {
        Command::Create(a) => create(a, &mut out)?,
        Command::List(a) => list(&a.state, &mut out)?,
        Command::Revoke(a) => revoke(a, &mut out)?,
    }
    super::spoke_token::print(&out)
}

fn key_err(e: ApiKeyError) -> CliError {
    match e {
        ApiKeyError::Invalid(msg) => CliError::usage(msg),
        other => CliError::runtime(other),
    }
}

fn create(a: CreateArgs, out: &mut String) -> Result<(), CliError> {
    let ttl = match &a.ttl {
        Some(t) => {
            let ttl = parse_duration_flag("--ttl", t)?;
            apikeys::validate_ttl(ttl).map_err(key_err)?;
            Some(ttl)
        }
        None => None,
    };
    apikeys::validate_name(&a.name).map_err(key_err)?;
    if !(a.url.starts_with("http://") || a.url.starts_with("https://"))
        || a.url.contains(char::is_whitespace)
    {
        return Err(CliError::usage(format!(
            "invalid --url {:?}: use the hub's MCP URL, like https://hub.example/mcp",
            a.url
        )));
    }
    let store = open(&a.state)?;
    let (key, record) = apikeys::create_key(&store, &a.name, ttl, a.admin).map_err(key_err)?;
    let state = std::fs::canonicalize(store.path()).unwrap_or(store.path().to_path_buf());
    let expires = record.expires.map_or("never".to_string(), utc);
    out.push_str(&format!(
        "{key}\n\
         API key {} {:?}{}, expires {expires}; stored only as its hash in {}. It is shown only now.\n\
         A running hub accepts it at once. Connect a client with:\n\n  \
         claude mcp add --transport http llmbox {} --header \"Authorization: Bearer {key}\"\n",
        record.id(),
        record.name,
        if record.admin { " (admin)" } else { "" },
        state.display(),
        a.url,
    ));
    Ok(())
}

fn list(state: &Option<PathBuf>, out: &mut String) -> Result<(), CliError> {
    let store = open(state)?;
    let st = store.load().map_err(CliError::runtime)?;
    let now = unix_now();
    out.push_str(&format!(
        "{:<13} {:<24} {:<6} {:<23} {:<33} LAST USED\n",
        "ID", "NAME", "ADMIN", "CREATED", "EXPIRES"
    ));
    for k in &st.api_keys {
        let expires = k
            .expires
            .map_or("never".to_string(), |at| expires_cell(at, now));
        out.push_str(&format!(
            "{:<13} {:<24} {:<6} {:<23} {expires:<33} {}\n",
            k.id(),
            k.name,
            if k.admin { "yes" } else { "no" },
            utc(k.created),
            k.last_used.map_or("never".to_string(), utc),
        ));
    }
    Ok(())
}

fn revoke(a: RevokeArgs, out: &mut String) -> Result<(), CliError> {
    let gone = match (&a.id, &a.name) {
        (Some(id), None) => {
            apikeys::validate_id_prefix(id).map_err(key_err)?;
            apikeys::revoke_by_id(&open(&a.state)?, id)
        }
        (None, Some(name)) => {
            apikeys::validate_name(name).map_err(key_err)?;
            apikeys::revoke_by_name(&open(&a.state)?, name)
        }
        _ => {
            return Err(CliError::usage(format!(
                "give exactly one of --id PREFIX or --name NAME\n{REVOKE_USAGE}"
            )));
        }
    }
    .map_err(key_err)?;
    out.push_str(&format!(
        "revoked API key {} {:?}; a running hub refuses it from its next request on\n",
        gone.id(),
        gone.name
    ));
    Ok(())
}
