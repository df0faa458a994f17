//! The command line (clap derive), mapped onto Pingora's `Opt` flags.

use std::path::PathBuf;

use clap::Parser;

/// Portico: a load-balancing HTTP gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about)]
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
}
