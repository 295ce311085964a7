#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[meshrpc::service]
pub trait S {
    #[meshrpc(hedge)]
    async fn charge(&self, cents: u64) -> Result<(), E>;
    #[meshrpc(idempotent, hedge)]
    async fn watch(&self) -> Result<meshrpc::Stream<u64>, E>;
}

fn main() {}
