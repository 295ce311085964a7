//! The `meshrpc` command: a one-line `main` over [`meshrpc_cli::run`].

fn main() -> std::process::ExitCode {
    meshrpc_cli::run()
}
