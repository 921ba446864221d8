//! The `celery-backend-operator` binary: parses the command line and runs a subcommand.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cbo::cli::{run_check, run_cleanup, run_crd, run_operator, run_uri, Cli, Command};

fn main() -> ExitCode {
    cbo::stores::tls::install_crypto_provider();
    let cli = Cli::parse();
    let out = match &cli.command {
        Command::Crd(args) => run_crd(args),
        Command::Uri(args) => run_uri(args),
        Command::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run_operator(args)).map(|()| String::new()),
            Err(e) => Err(e.into()),
        },
        Command::Check(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run_check(args)),
            Err(e) => Err(e.into()),
        },
        Command::Cleanup(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run_cleanup(args)),
            Err(e) => Err(e.into()),
        },
    };
    match out {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
