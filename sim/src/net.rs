//! turmoil's simulated network as the nodes' [`Network`]: their mesh ports, the
//! connections between them and their gossip all go through it, so its partitions,
//! holds, loss and latency reach every byte a node sends.

use std::{io, net::SocketAddr};

use futures_util::future::BoxFuture;
use meshrpc::transport::{Datagrams, Listener, Network, StreamLink};

/// turmoil's network, for the node of the host it runs on.
pub struct SimNet;

impl Network for SimNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<StreamLink>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(StreamLink::new(stream, addr))
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn bind_datagrams(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Datagrams>>> {
        Box::pin(async move {
            let socket = turmoil::net::UdpSocket::bind(addr).await?;
            Ok(Box::new(SimSocket(socket)) as Box<dyn Datagrams>)
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("a bound listener has an address")
    }

    fn accept(&self) -> BoxFuture<'_, io::Result<(StreamLink, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((StreamLink::new(stream, peer), peer))
        })
    }
}

struct SimSocket(turmoil::net::UdpSocket);

impl Datagrams for SimSocket {
    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr().expect("a bound socket has an address")
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.0.recv_from(buf))
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.try_send_to(datagram, to)
    }
}
