//! The command line (clap derive): the gateway's flags, mapped onto Pingora's `Opt` flags, and
//! the `portico admin` subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Portico: a load-balancing HTTP gateway on Pingora.
#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The configuration file (YAML; JSON accepted).
    #[arg(
        short = 'c',
        long = "conf",
        visible_alias = "config",
        value_name = "FILE"
    )]
    pub conf: Option<PathBuf>,

    /// Load and validate the whole configuration and what start-up needs (directories, user,
    /// backends that resolve); print every problem found, and exit (2 on error).
    #[arg(short = 't', long = "test")]
    pub test: bool,

    /// Print the effective configuration (defaults filled in, secrets masked) as YAML, and exit.
    #[arg(short = 'T', long = "dump")]
    pub dump: bool,

    /// Run in the background (Pingora's daemon mode).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,

    /// Also serve three demo origins on 127.0.0.1:9001-9003, each answering with its name.
    #[arg(long)]
    pub demo: bool,

    /// Accepted for compatibility with Pingora's own command line; has no effect.
    #[arg(long, hide = true)]
    pub nocapture: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to a running gateway's admin API (status, add, remove, drain, enable, weight).
    Admin(AdminArgs),
}

/// `portico admin [-c FILE | --admin URL] [--token T] <action>`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Read the admin address (`admin.listen`) and token (`admin.token`) from this
    /// configuration file [default: conf/portico.yaml, else http://127.0.0.1:8081].
    #[arg(
        short = 'c',
        long = "conf",
        visible_alias = "config",
        value_name = "FILE",
        conflicts_with = "admin"
    )]
    pub conf: Option<PathBuf>,

    /// The admin API's address, e.g. http://127.0.0.1:8081 (instead of a configuration file).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,

    /// The admin bearer token [default: $PORTICO_ADMIN_TOKEN, else `admin.token`].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// Every backend: health, in-flight requests, requests, errors, weight.
    Status {
        /// Print the raw JSON document of `GET /status`.
        #[arg(long)]
        json: bool,
    },
    /// Add a backend to the pool.
    Add {
        /// http://host:port or https://host:port
        url: String,
        /// Its weight (1 to 256) [default: 1].
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a backend: no new requests, those in flight finish.
    Remove { url: String },
    /// Keep a backend in the pool (and probed) but send it no new requests.
    Drain { url: String },
    /// Undo `drain`: the backend takes new requests again (when healthy).
    Enable { url: String },
    /// Change a backend's weight.
    Weight { url: String, weight: u32 },
}
