fn main() -> std::process::ExitCode {
    meshrpc_cli::run()
}
