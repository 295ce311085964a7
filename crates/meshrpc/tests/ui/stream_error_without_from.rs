#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

pub struct NoFrom;

#[meshrpc::service]
pub trait S {
    async fn go(&self, items: meshrpc::Stream<u8, NoFrom>) -> Result<(), E>;
}

fn main() {}
