//! Generated code is hygienic: argument names and types a user may pick do not collide
//! with the names the generated server and client use inside.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Fail(String);

impl From<meshrpc::Error> for Fail {
    fn from(e: meshrpc::Error) -> Self {
        Fail(e.to_string())
    }
}

/// A user type named like a generic parameter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct T(u8);

#[meshrpc::service]
pub trait Clash {
    #[allow(clippy::too_many_arguments)]
    async fn all(
        &self,
        service: String,
        codec: String,
        payload: String,
        method: String,
        args: String,
        channel: String,
        inner: String,
        t: T,
    ) -> Result<String, Fail>;
    async fn more(&self, result: u8, future: u8, __args: u8, spec: u8, client: u8, server: u8) -> Result<u8, Fail>;
}

struct Impl;

#[meshrpc::async_trait]
impl Clash for Impl {
    async fn all(
        &self,
        service: String,
        codec: String,
        payload: String,
        method: String,
        args: String,
        channel: String,
        inner: String,
        t: T,
    ) -> Result<String, Fail> {
        Ok([service, codec, payload, method, args, channel, inner, t.0.to_string()].join(","))
    }

    async fn more(&self, result: u8, future: u8, __args: u8, spec: u8, client: u8, server: u8) -> Result<u8, Fail> {
        Ok(result + future + __args + spec + client + server)
    }
}

#[tokio::test]
async fn argument_names_that_generated_code_uses_inside_still_work() {
    let server = meshrpc::Server::bind("127.0.0.1:0").await.unwrap();
    server.publish(ClashServer::new(Impl));
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    for codec in [meshrpc::Codec::Json, meshrpc::Codec::Postcard] {
        let clash = ClashClient::new(meshrpc::connect(addr).await.unwrap()).with_codec(codec);
        let s = |v: &str| v.to_owned();
        let all = clash.all(s("s"), s("c"), s("p"), s("m"), s("a"), s("ch"), s("i"), T(7)).await.unwrap();
        assert_eq!(all, "s,c,p,m,a,ch,i,7");
        assert_eq!(clash.more(1, 2, 3, 4, 5, 6).await.unwrap(), 21);
    }
    let spec = ClashClient::SPEC.method("all").unwrap();
    assert_eq!(spec.args, ["service", "codec", "payload", "method", "args", "channel", "inner", "t"]);
}

/// Default method bodies are allowed: the node runs the default unless its
/// implementation overrides it; the client always calls the node.
#[meshrpc::service]
pub trait Defaults {
    async fn plain(&self) -> Result<u8, Fail>;
    async fn with_default(&self, x: u8) -> Result<u8, Fail> {
        Ok(x + 100)
    }
}

struct OnlyPlain;

#[meshrpc::async_trait]
impl Defaults for OnlyPlain {
    async fn plain(&self) -> Result<u8, Fail> {
        Ok(1)
    }
}

#[tokio::test]
async fn a_default_method_body_runs_on_the_node() {
    let server = meshrpc::Server::bind("127.0.0.1:0").await.unwrap();
    server.publish(DefaultsServer::new(OnlyPlain));
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let remote = DefaultsClient::new(meshrpc::connect(addr).await.unwrap());
    assert_eq!(remote.plain().await.unwrap(), 1);
    assert_eq!(remote.with_default(5).await.unwrap(), 105);
}
