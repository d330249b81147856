//! The `tandem` command: parses the command line, runs the VM, and turns
//! the outcome into one line and an exit code.

use std::process::ExitCode;

use clap::Parser;
use tandem::config::{Cli, Command};

fn main() -> ExitCode {
    tandem::process_started();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            // clap's first line says what is wrong; the usage text after it
            // is what --help is for.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "tandem: {} (see tandem run --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Run(args)) => {
            tandem::logger::init(args.log_level);
            match tandem::vmm::run(&args) {
                Ok(code) => ExitCode::from(code as u8),
                Err(err) => {
                    log::error!("{err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Api(args)) => {
            match tandem::api::client::call(
                &args.sock,
                &args.method,
                &args.path,
                args.body.as_deref(),
            ) {
                Ok((status, body)) => {
                    println!("{body}");
                    if (200..300).contains(&status) {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("tandem: HTTP {status}");
                        ExitCode::FAILURE
                    }
                }
                Err(err) => {
                    eprintln!("tandem: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Snapshot(args)) => match tandem::api::client::snapshot(&args) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tandem: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::RebaseMemory(args)) => match tandem::dirty::rebase_files(&args) {
            Ok(bytes) => {
                println!(
                    "{} KiB of {} applied to {}",
                    bytes >> 10,
                    args.diff_path.display(),
                    args.memory_path.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tandem: {err:#}");
                ExitCode::FAILURE
            }
        },
        None => {
            tandem::logger::init(cli.vmm.level.unwrap_or(log::LevelFilter::Info));
            match tandem::vmm::run_firecracker(&cli.vmm) {
                Ok(code) => ExitCode::from(code as u8),
                Err(err) => {
                    log::error!("{err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
