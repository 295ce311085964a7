#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[meshrpc::service]
pub trait S {
    async fn go(&self) -> Result<Option<meshrpc::Stream<u8>>, E>;
}

fn main() {}
