#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[meshrpc::service]
pub trait S {
    async fn go(&self, a: meshrpc::Stream<u8>, b: meshrpc::Stream<u8>) -> Result<(), E>;
}

fn main() {}
