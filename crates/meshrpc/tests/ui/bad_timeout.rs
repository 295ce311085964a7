#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[meshrpc::service]
pub trait S {
    #[meshrpc(timeout = "fast")]
    async fn go(&self) -> Result<(), E>;
    #[meshrpc(timeout = 200)]
    async fn again(&self) -> Result<(), E>;
    #[meshrpc(timeout = "0ms")]
    async fn never(&self) -> Result<(), E>;
}

fn main() {}
