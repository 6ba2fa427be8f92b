//! The command line: `serve` and the operator's commands.

mod admin_client;
mod keys;
mod logging;
mod pool;
mod redis_offline;

use crate::config::{self, Config, FlagOverrides};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "claude-route",
    version,
    about = "Shares a pool of Claude subscription accounts with many clients"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalFlags {
    /// Config file (default: config/claude-route.toml, optional)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Store URL: sqlite:<path> or redis://host:port/db
    #[arg(long, global = true)]
    store: Option<String>,
    /// Account directory (holds <tier>/<name>.json)
    #[arg(long, global = true)]
    account_dir: Option<String>,
    /// Anthropic API base URL
    #[arg(long, global = true)]
    upstream: Option<String>,
    /// OAuth token endpoint URL
    #[arg(long, global = true)]
    oauth_token_url: Option<String>,
    /// Admin API base URL the CLI calls (default: derived from the listen address)
    #[arg(long, global = true)]
    admin_url: Option<String>,
    /// Also append the log to this file
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// Print the admin API's JSON answer instead of a table (pool, recover, sync, status,
    /// keys list, keys show)
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy
    Serve,
    /// Make a new client key of a tier
    Keygen(keys::KeygenArgs),
    /// List, show or revoke client keys
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Show every tier's accounts, slots and status
    Pool,
    /// Lift an account's blacklist and reset its refresh failures
    Recover { account: String },
    /// Reconcile the account directory with the store now
    Sync,
    /// Version, uptime, store health, refresh timers, last sync
    Status,
}

impl Command {
    /// Whether `--json` means something to this command.
    fn prints_json(&self) -> bool {
        match self {
            Command::Pool | Command::Recover { .. } | Command::Sync | Command::Status => true,
            Command::Keys { action } => action.prints_json(),
            Command::Serve | Command::Keygen(_) => false,
        }
    }
}

impl GlobalFlags {
    fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            listen: self.listen.clone(),
            store: self.store.clone(),
            account_dir: self.account_dir.clone(),
            upstream: self.upstream.clone(),
            oauth_token_url: self.oauth_token_url.clone(),
            admin_url: self.admin_url.clone(),
        }
    }
}

pub fn run(cli: Cli) -> Result<(), String> {
    let json = cli.global.json;
    if json && !cli.command.prints_json() {
        return Err("--json is for pool, recover, sync, status, keys list and keys show".into());
    }
    let serving = matches!(cli.command, Command::Serve);
    logging::init(serving, cli.global.log_file.as_deref())?;
    let config: Config = config::load(cli.global.config.as_deref(), &cli.global.overrides())
        .map_err(|e| format!("invalid configuration: {e}"))?;
    let done = match cli.command {
        Command::Serve => crate::http::serve(config),
        Command::Keygen(args) => keys::keygen(&config, args),
        Command::Keys { action } => keys::keys(&config, action, json),
        Command::Pool => pool::pool(&config, json),
        Command::Recover { account } => pool::recover(&config, &account, json),
        Command::Sync => pool::sync(&config, json),
        Command::Status => pool::status(&config, json),
    };
    log::logger().flush();
    done
}
