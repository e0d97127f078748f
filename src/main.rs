//! The `evoengineer` command. Errors become a message on stderr and a non-zero exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::logging::init();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", evoengineer::secrets::redact(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
