//! Writes the man pages of `gateway` and its subcommands into DIR, from the same clap
//! definitions as `--help` (`gateway::config::cli::Cli`): `gateway.1`, `gateway-jail.1`,
//! `gateway-jail-init.1`, `gateway-jail-check.1`, `gateway-demo.1`. Run by
//! `scripts/build-deb.sh`: `cargo run --example mangen -p gateway -- DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use gateway::config::cli::Cli;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: mangen DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    // One page per command, each subcommand's named after its path (`gateway-jail-init.1`).
    match clap_mangen::generate_to(Cli::command(), &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mangen: {}: {error}", dir.display());
            ExitCode::FAILURE
        }
    }
}
