//! Calls a greeter node directly: `greeter-client 127.0.0.1:11999 Max`.
//! Shows the substitution: the same code takes a local `MyGreeter` or a remote client.

use std::sync::Arc;

use greeter::{Greeter, GreeterClient, MyGreeter, Postcard};

async fn greet_twice(svc: &impl Greeter, name: &str) -> Result<String, greeter::GreetError> {
    let first = svc.greet(name.to_owned()).await?;
    Ok(format!("{first} / {}", svc.greet(format!("{name} again")).await?))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11999".into());
    let name = args.next().unwrap_or_else(|| "Max".into());

    let local = MyGreeter::default();
    let remote = GreeterClient::new(meshrpc::connect(addr.as_str()).await?);
    println!("local:  {}", greet_twice(&local, &name).await?);
    println!("remote: {}", greet_twice(&remote, &name).await?);

    // The monolith case: code holding an `Arc<dyn Greeter>` does not know which it got.
    let svc: Arc<dyn Greeter> = Arc::new(remote);
    svc.send_postcard(Postcard {
        picture_url: "https://example.com/p.png".into(),
        address: "World".into(),
        recipient: name.clone(),
        message: "Hello".into(),
    })
    .await?;
    println!("postcard sent to {name}");
    Ok(())
}
