//! Generated code is hygienic: argument names and types a user may pick do not collide
//! with the names the generated server and client use inside.

use serde::{Deserialize, Serialize};

/// The services' error: the call's error, as text.
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

/// Arguments named as generated code's own locals.
#[meshrpc::service]
pub trait Clash {
    /// Joins its arguments.
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
    /// Adds its arguments.
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
    /// Answers 1.
    async fn plain(&self) -> Result<u8, Fail>;
    /// Answers `x + 100`.
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

/// A bidirectional stream whose argument names are those generated code uses inside.
#[meshrpc::service]
pub trait Pipe {
    /// Adds `input` and `channel` to every item.
    async fn pipe(
        &self,
        input: u8,
        items: meshrpc::Stream<T, Fail>,
        channel: u8,
    ) -> Result<meshrpc::Stream<T, Fail>, Fail>;
}

struct AddBoth;

#[meshrpc::async_trait]
impl Pipe for AddBoth {
    async fn pipe(
        &self,
        input: u8,
        mut items: meshrpc::Stream<T, Fail>,
        channel: u8,
    ) -> Result<meshrpc::Stream<T, Fail>, Fail> {
        let (tx, out) = meshrpc::Stream::channel(4);
        tokio::spawn(async move {
            while let Some(Ok(T(n))) = items.next().await {
                if tx.send(T(n + input + channel)).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}

/// The same generic code runs against a local value and a remote client.
async fn piped(pipe: &(impl Pipe + ?Sized)) -> Vec<u8> {
    let mut out = pipe.pipe(1, meshrpc::Stream::iter([T(10), T(20)]), 2).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = out.next().await {
        got.push(item.unwrap().0);
    }
    got
}

#[tokio::test]
async fn a_stream_method_is_the_same_through_a_local_value_and_a_remote_client() {
    let local: std::sync::Arc<dyn Pipe> = std::sync::Arc::new(AddBoth);
    assert_eq!(piped(&*local).await, [13, 23]);
    let server = meshrpc::Server::bind("127.0.0.1:0").await.unwrap();
    server.publish(PipeServer::from_arc(local));
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    for codec in [meshrpc::Codec::Json, meshrpc::Codec::Postcard] {
        let remote = PipeClient::new(meshrpc::connect(addr).await.unwrap()).with_codec(codec);
        assert_eq!(piped(&remote).await, [13, 23]);
        let dynamic: std::sync::Arc<dyn Pipe> = std::sync::Arc::new(remote);
        assert_eq!(piped(&*dynamic).await, [13, 23]);
    }
    assert_eq!(PipeClient::SPEC.method("pipe").unwrap().args, ["input", "items", "channel"]);
}
