//! The relay app (`meshrpc_tests::relay`) as a binary whose main is the library's:
//! `MESHRPC_PLACEMENT=FILE MESHRPC_PLACEMENT_GROUP=N relayapp`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    meshrpc::init_logging("warn");
    match meshrpc_tests::relay::app().run_from_env().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayapp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
