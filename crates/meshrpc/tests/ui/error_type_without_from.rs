#[derive(serde::Serialize, serde::Deserialize)]
pub struct E;
impl From<meshrpc::Error> for E {
    fn from(_: meshrpc::Error) -> Self {
        E
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Plain;

#[meshrpc::service]
pub trait S {
    async fn go(&self) -> Result<(), Plain>;
}

fn main() {}
