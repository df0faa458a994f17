//! The `portico` binary: command line -> configuration -> `portico::build` -> run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use portico::cli::Cli;
use portico::config::{Config, DEFAULT_CONFIG_PATH};
use portico::{lifecycle, logging, RunOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Used by `--demo` when no configuration file is given and the default one is absent.
const DEMO_CONFIG: &str = include_str!("../conf/portico.yaml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let path = cli
        .conf
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let loaded = if cli.demo && cli.conf.is_none() && !Path::new(DEFAULT_CONFIG_PATH).exists() {
        Config::from_text_all(DEMO_CONFIG)
    } else {
        Config::load_all(&path)
    };
    let config = match loaded {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("portico: configuration {}: {e}", path.display());
            }
            return ExitCode::from(2);
        }
    };
    if cli.dump {
        print!("{}", config.effective_yaml());
        return ExitCode::SUCCESS;
    }
    if cli.test {
        return check(config, &path);
    }
    let built_in = cli.demo && cli.conf.is_none() && !Path::new(DEFAULT_CONFIG_PATH).exists();
    let opts = RunOptions {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        demo: cli.demo,
        config_path: (!built_in).then(|| path.clone()),
    };
    let (server, run_args) = match portico::build(config, opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portico: {e}");
            return ExitCode::from(1);
        }
    };
    let pid_file = PathBuf::from(&server.configuration.pid_file);
    server.run(run_args);
    lifecycle::remove_own_pid_file(&pid_file);
    ExitCode::SUCCESS
}

/// `portico -t`: every problem found, one per line on stderr; warnings do not fail the check.
fn check(config: Config, path: &Path) -> ExitCode {
    let found = portico::preflight::check(&config);
    let mut errors = found.errors;
    for w in &found.warnings {
        eprintln!("portico: warning: configuration {}: {w}", path.display());
    }
    match portico::prepare(config) {
        Ok(p) => {
            for w in p.warnings {
                eprintln!("portico: warning: configuration {}: {w}", path.display());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        println!("portico: configuration {} is valid", path.display());
        return ExitCode::SUCCESS;
    }
    for e in errors {
        eprintln!("portico: configuration {}: {e}", path.display());
    }
    ExitCode::from(2)
}
