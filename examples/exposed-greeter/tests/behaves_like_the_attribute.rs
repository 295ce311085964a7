//! The exposed files behave like the attribute's expansion, over a real socket.

use std::sync::Arc;

use exposed_greeter::{GreetError, Greeter, GreeterClient, GreeterServer, Local, Postcard};

#[tokio::test]
async fn generated_files_serve_and_call_over_tcp() {
    let server = meshrpc::Server::bind("127.0.0.1:0").await.unwrap();
    server.publish(GreeterServer::new(Local));
    let addr = server.local_addr();
    tokio::spawn(server.serve());

    let client = GreeterClient::new(meshrpc::connect(addr).await.unwrap());
    assert_eq!(client.greet("Max".into()).await.unwrap(), "Hello, Max");
    let dynamic: Arc<dyn Greeter> = Arc::new(client);
    let card =
        Postcard { picture_url: String::new(), address: "W".into(), recipient: String::new(), message: "m".into() };
    assert_eq!(dynamic.send_postcard(card).await.unwrap_err(), GreetError::NoRecipient);
    // Same name and methods as the attribute-generated greeter: the two interoperate.
    assert_eq!(GreeterClient::SPEC.fingerprint(), greeter::GreeterClient::SPEC.fingerprint());
    let from_macro = greeter::GreeterClient::new(meshrpc::connect(addr).await.unwrap());
    assert_eq!(greeter::Greeter::greet(&from_macro, "Ann".into()).await.unwrap(), "Hello, Ann");
    // Streams too: the macro's client reads the exposed server's countdown.
    let mut lines = greeter::Greeter::countdown(&from_macro, 2).await.unwrap();
    let mut got = Vec::new();
    while let Some(line) = lines.next().await {
        got.push(line.unwrap());
    }
    assert_eq!(got, ["2…", "1…", "Hello!"]);
}
