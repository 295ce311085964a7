#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[meshrpc::service]
pub trait S {
    #[meshrpc(idempotent, cached)]
    async fn go(&self) -> Result<(), E>;
}

fn main() {}
