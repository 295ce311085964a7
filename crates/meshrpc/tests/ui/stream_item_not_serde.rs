#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

pub struct NotSerde;

#[meshrpc::service]
pub trait S {
    async fn go(&self) -> Result<meshrpc::Stream<NotSerde>, E>;
}

fn main() {}
