//! Tower middleware on both sides of a call: a client layer adds a token to every call's
//! metadata, a server layer refuses calls without it before any handler runs.
//!
//! `cargo run -p meshrpc --example middleware`

use std::task::{Context, Poll};

use meshrpc::{
    call::{BoxFuture, Call, Reply},
    Error,
};
use serde::{Deserialize, Serialize};
use tower_service::Service;

/// What `echo` fails with: the call's error, as text.
#[derive(Debug, Serialize, Deserialize)]
pub struct EchoError(String);

impl From<meshrpc::Error> for EchoError {
    fn from(e: meshrpc::Error) -> Self {
        EchoError(e.to_string())
    }
}

/// The contract: says back what it is given.
#[meshrpc::service]
pub trait Echo {
    /// Answers `text`.
    async fn echo(&self, text: String) -> Result<String, EchoError>;
}

struct Parrot;

#[meshrpc::async_trait]
impl Echo for Parrot {
    async fn echo(&self, text: String) -> Result<String, EchoError> {
        Ok(text)
    }
}

/// Client side: every call carries the token.
#[derive(Clone)]
struct AddToken<S>(S);

impl<S: Service<Call, Response = Reply, Error = Error>> Service<Call> for AddToken<S> {
    type Response = Reply;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        call.metadata.insert("authorization", "Bearer s3cret");
        self.0.call(call)
    }
}

/// Server side: no token, no call.
#[derive(Clone)]
struct RequireToken<S>(S);

impl<S> Service<Call> for RequireToken<S>
where
    S: Service<Call, Response = Reply, Error = Error, Future = BoxFuture<Result<Reply, Error>>>,
{
    type Response = Reply;
    type Error = Error;
    type Future = BoxFuture<Result<Reply, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if call.metadata.get("authorization") != Some("Bearer s3cret") {
            let refused =
                Error::PermissionDenied { message: format!("{}.{} needs a token", call.service, call.method) };
            return Box::pin(std::future::ready(Err(refused)));
        }
        self.0.call(call)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = meshrpc::Server::bind("127.0.0.1:0").await?.layer(tower_layer::layer_fn(RequireToken));
    server.publish(EchoServer::new(Parrot));
    let addr = server.local_addr();
    tokio::spawn(server.serve());

    let channel = meshrpc::Channel::from(meshrpc::connect(addr).await?);
    let anonymous = EchoClient::new(channel.clone());
    println!("without a token: {:?}", anonymous.echo("hi".into()).await);
    let with_token = EchoClient::new(channel.layer(tower_layer::layer_fn(AddToken)));
    println!("with a token:    {:?}", with_token.echo("hi".into()).await);
    Ok(())
}
