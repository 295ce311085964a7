//! Streams of items in a service trait (`meshrpc::Stream<T, E>`), and the encoded form
//! every layer carries them in ([`Items`]).
//!
//! A method may return `Result<Stream<T, E>, _>` (a server stream), take one
//! `Stream<T, E>` argument (a client stream), or both (bidirectional). An item stream
//! ends cleanly, or with one error: `E`, the item error type (by default
//! [`meshrpc::Error`](crate::Error); any `E: From<meshrpc::Error>` carries transport
//! failures as well).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures_core::Stream as FuturesStream;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    call::{Items, Polled, Reply},
    codec::Codec,
    error::Error,
};

/// A stream of typed items in a service trait: what a streaming method returns, or the
/// one streaming argument it takes.
///
/// Build one from anything that yields items ([`Stream::iter`], [`Stream::new`],
/// [`Stream::channel`]); read one with [`next`](Stream::next) or as a
/// `futures_core::Stream`. It ends after its last item or after its first error.
/// Dropping it stops the other side: a caller that drops a server stream cancels the
/// call, and the producer on the server is dropped.
///
/// ```
/// # async fn demo() {
/// let mut numbers: meshrpc::Stream<u32> = meshrpc::Stream::iter([3, 2, 1]);
/// while let Some(n) = numbers.next().await {
///     println!("{}", n.unwrap());
/// }
/// # }
/// ```
pub struct Stream<T, E = Error> {
    inner: Pin<Box<dyn FuturesStream<Item = Result<T, E>> + Send>>,
    /// Set after the first error: nothing comes after it.
    ended: bool,
}

impl<T, E> std::fmt::Debug for Stream<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl<T: Send + 'static, E: Send + 'static> Stream<T, E> {
    /// A stream of whatever `inner` yields; it ends at `inner`'s first error.
    pub fn new(inner: impl FuturesStream<Item = Result<T, E>> + Send + 'static) -> Self {
        Stream { inner: Box::pin(inner), ended: false }
    }

    /// The items of an iterator, then the end.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::new(Oks(Box::new(items.into_iter()), std::marker::PhantomData))
    }

    /// A stream with no items.
    pub fn empty() -> Self {
        Stream::iter(std::iter::empty())
    }

    /// A stream that fails at once with `error`.
    pub fn failed(error: E) -> Self {
        Stream::new(Iter(Box::new(std::iter::once(Err(error)))))
    }

    /// A stream fed by a task: items sent through the [`StreamSender`] arrive in order;
    /// the stream ends when every sender is dropped. At most `buffer` items wait: a
    /// sender whose reader is slow waits in [`send`](StreamSender::send).
    pub fn channel(buffer: usize) -> (StreamSender<T, E>, Stream<T, E>) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        (StreamSender { tx }, Stream::new(Receiver(rx)))
    }
}

impl<T: Send + 'static, E: From<Error> + Send + 'static> Stream<T, E> {
    /// The same stream, ended with `timeout` if it runs past `deadline`.
    pub(crate) fn until(self, deadline: Instant) -> Stream<T, E> {
        Stream::new(Until::new(self, deadline))
    }
}

/// A stream cut at a deadline: past it, one `timeout` error ends it.
struct Until<S> {
    stream: S,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> Until<S> {
    fn new(stream: S, deadline: Instant) -> Self {
        Until { stream, sleep: Box::pin(tokio::time::sleep_until(deadline.into())), done: false }
    }

    /// Polls `next` from the stream unless it ended; once the deadline passes, ends it with
    /// `expired` (a `timeout`), made only then.
    fn poll_until<R>(
        &mut self,
        cx: &mut Context<'_>,
        next: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<R>,
        ended: R,
        expired: impl FnOnce() -> R,
    ) -> Poll<R> {
        if self.done {
            return Poll::Ready(ended);
        }
        if let Poll::Ready(next) = next(&mut self.stream, cx) {
            return Poll::Ready(next);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.done = true;
        Poll::Ready(expired())
    }
}

impl<S, T, E> FuturesStream for Until<S>
where
    S: FuturesStream<Item = Result<T, E>> + Unpin,
    E: From<Error>,
{
    type Item = Result<T, E>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let expired = || Some(Err(E::from(Error::Timeout)));
        self.poll_until(cx, |stream, cx| Pin::new(stream).poll_next(cx), None, expired)
    }
}

/// Encoded items until a deadline: items the inner source encodes in place stay so.
impl crate::call::ItemSource for Until<Items> {
    fn poll_into(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Polled> {
        let expired = || Polled::Next(Some(Err(Error::Timeout)));
        self.poll_until(cx, |items, cx| items.poll_into(cx, out), Polled::Next(None), expired)
    }
}

impl<T, E> Stream<T, E> {
    /// The next item; `None` once the stream ended (cleanly or after an error).
    pub async fn next(&mut self) -> Option<Result<T, E>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T, E> FuturesStream for Stream<T, E> {
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = self.inner.as_mut().poll_next(cx);
        if matches!(next, Poll::Ready(Some(Err(_)) | None)) {
            self.ended = true;
        }
        next
    }
}

struct Iter<X>(Box<dyn Iterator<Item = X> + Send>);

impl<X> FuturesStream for Iter<X> {
    type Item = X;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<X>> {
        Poll::Ready(self.0.next())
    }
}

/// Plain items, each wrapped as `Ok`.
struct Oks<T, E>(Box<dyn Iterator<Item = T> + Send>, std::marker::PhantomData<fn() -> E>);

impl<T, E> FuturesStream for Oks<T, E> {
    type Item = Result<T, E>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.next().map(Ok))
    }
}

struct Receiver<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> FuturesStream for Receiver<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// The sending half of [`Stream::channel`].
pub struct StreamSender<T, E = Error> {
    tx: tokio::sync::mpsc::Sender<Result<T, E>>,
}

impl<T, E> Clone for StreamSender<T, E> {
    fn clone(&self) -> Self {
        StreamSender { tx: self.tx.clone() }
    }
}

impl<T, E> std::fmt::Debug for StreamSender<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender").field("closed", &self.tx.is_closed()).finish()
    }
}

/// The reader of a stream is gone (the caller dropped it, the call was cancelled or its
/// connection closed): stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream's reader is gone")]
pub struct StreamClosed;

impl<T, E> StreamSender<T, E> {
    /// Sends an item, waiting while the reader is `buffer` items behind.
    pub async fn send(&self, item: T) -> Result<(), StreamClosed> {
        self.tx.send(Ok(item)).await.map_err(|_| StreamClosed)
    }

    /// Ends the stream with `error` (the reader sees it after the items before it).
    pub async fn fail(self, error: E) -> Result<(), StreamClosed> {
        self.tx.send(Err(error)).await.map_err(|_| StreamClosed)
    }

    /// Resolves when the reader is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// True once the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Encoded items fed and bounded here, where the typed streams live.
impl Items {
    /// Items fed through a channel: at most `buffer` wait, and a sender whose reader is
    /// slow waits (send an `Err` or a `Reply::AppError` last to end them with an error).
    pub fn channel(buffer: usize) -> (tokio::sync::mpsc::Sender<Result<Reply, Error>>, Items) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        (tx, Items::new(Receiver(rx)))
    }

    /// The same items, ended with `timeout` if they run past `deadline`.
    pub(crate) fn until(self, deadline: Instant) -> Items {
        Items::from_source(Until::new(self, deadline))
    }
}

use std::future::Future as _;

/// Encodes a typed stream in `codec`: each item as `Reply::Ok`, an error as
/// `Reply::AppError` (an item or error the codec cannot carry ends it with `internal`).
pub(crate) fn encode<T, E>(codec: Codec, stream: Stream<T, E>) -> Items
where
    T: Serialize + Send + 'static,
    E: Serialize + Send + 'static,
{
    Items::from_source(Encode { codec, stream, index: 0, done: false, buf: bytes::BytesMut::new() })
}

struct Encode<T, E> {
    codec: Codec,
    stream: Stream<T, E>,
    index: u64,
    done: bool,
    /// Items are encoded one after another into this buffer and split off it.
    buf: bytes::BytesMut,
}

/// Room an item buffer makes at a time (items share it until it is full).
const ENCODE_CHUNK: usize = 16 * 1024;

impl<T: Serialize, E: Serialize> Encode<T, E> {
    /// Takes the producer's next item and encodes it onto the end of `out` (`Ok`), or gives
    /// what ends the stream (`Err`): the end, the encoded item error, or the failure of an
    /// item the codec cannot carry (`out` is then left as it was).
    fn poll_encode(&mut self, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Result<(), Ended>> {
        if self.done {
            return Poll::Ready(Err(None));
        }
        let next = std::task::ready!(Pin::new(&mut self.stream).poll_next(cx));
        let index = self.index;
        self.index += 1;
        let start = out.len();
        let end = match next {
            Some(Ok(item)) => match self.codec.encode_into(&item, out) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) => {
                    out.truncate(start);
                    Some(Err(e))
                }
            },
            Some(Err(e)) => Some(self.codec.encode(&e).map(Reply::AppError)),
            None => None,
        };
        self.done = true;
        Poll::Ready(Err(end.map(|r| r.map_err(|e| e.context(&format!("stream item {index}"))))))
    }
}

/// What ends an encoded stream: nothing (its end), or its last answer.
type Ended = Option<Result<Reply, Error>>;

impl<T: Serialize, E: Serialize> FuturesStream for Encode<T, E> {
    type Item = Result<Reply, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.done && this.buf.capacity() - this.buf.len() < 256 {
            this.buf.reserve(ENCODE_CHUNK);
        }
        let mut buf = std::mem::take(&mut this.buf);
        let polled = this.poll_encode(cx, &mut buf);
        this.buf = buf;
        Poll::Ready(match std::task::ready!(polled) {
            Ok(()) => Some(Ok(Reply::Ok(this.buf.split().freeze()))),
            Err(end) => end,
        })
    }
}

impl<T: Serialize + Send, E: Serialize + Send> crate::call::ItemSource for Encode<T, E> {
    /// Encodes an item straight into the sender's buffer.
    fn poll_into(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut bytes::BytesMut) -> Poll<Polled> {
        Poll::Ready(match std::task::ready!(self.poll_encode(cx, out)) {
            Ok(()) => Polled::Appended,
            Err(end) => Polled::Next(end),
        })
    }
}

/// Decodes encoded items into a typed stream. An item that does not decode ends it with
/// `bad_request` naming the item's index; a failure of the transport arrives as
/// `E::from(meshrpc::Error)`.
pub(crate) fn decode<T, E>(codec: Codec, items: Items) -> Stream<T, E>
where
    T: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + From<Error> + Send + 'static,
{
    Stream::new(Decode { codec, items, index: 0, _types: std::marker::PhantomData })
}

struct Decode<T, E> {
    codec: Codec,
    items: Items,
    index: u64,
    _types: std::marker::PhantomData<fn() -> (T, E)>,
}

impl<T: DeserializeOwned + 'static, E: DeserializeOwned + From<Error>> FuturesStream for Decode<T, E> {
    type Item = Result<T, E>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = match Pin::new(&mut self.items).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        let index = self.index;
        self.index += 1;
        let bad = |e: Error| Error::bad_request(format!("stream item {index}: {e}"));
        Poll::Ready(next.map(|next| match next {
            Ok(Reply::Ok(bytes)) => self.codec.decode_owned::<T>(bytes).map_err(|e| E::from(bad(e))),
            Ok(Reply::AppError(bytes)) => Err(self.codec.decode::<E>(&bytes).unwrap_or_else(|e| E::from(bad(e)))),
            Ok(Reply::Stream(_)) => Err(E::from(Error::protocol("a stream inside a stream"))),
            Err(e) => Err(E::from(e)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Input;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Oops(String);

    impl From<Error> for Oops {
        fn from(e: Error) -> Self {
            Oops(e.to_string())
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    #[test]
    fn items_round_trip_through_both_codecs_and_end_at_the_first_error() {
        block(async {
            for codec in [Codec::Json, Codec::Postcard] {
                let (tx, typed) = Stream::<u32, Oops>::channel(4);
                tokio::spawn(async move {
                    tx.send(1).await.unwrap();
                    tx.send(2).await.unwrap();
                    tx.clone().fail(Oops("broken".into())).await.unwrap();
                    let _ = tx.send(3).await; // after the error: never seen
                });
                let mut back = decode::<u32, Oops>(codec, encode(codec, typed));
                assert_eq!(back.next().await, Some(Ok(1)));
                assert_eq!(back.next().await, Some(Ok(2)));
                assert_eq!(back.next().await, Some(Err(Oops("broken".into()))));
                assert_eq!(back.next().await, None);
            }
        })
    }

    /// An item whose encoding fails half-way (after some bytes are out).
    struct HalfWritten(u32);

    impl serde::Serialize for HalfWritten {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeTuple};
            let mut tuple = s.serialize_tuple(2)?;
            tuple.serialize_element(&self.0)?;
            if self.0 == 3 {
                return Err(S::Error::custom("three is not allowed"));
            }
            tuple.serialize_element(&self.0)?;
            tuple.end()
        }
    }

    #[test]
    fn items_encoded_in_place_are_those_encoded_alone_and_a_bad_one_leaves_no_bytes() {
        block(async {
            async fn poll(items: &mut Items, out: &mut bytes::BytesMut) -> Poll<Polled> {
                std::future::poll_fn(|cx| Poll::Ready(items.poll_into(cx, out))).await
            }
            let typed = Stream::<HalfWritten, Error>::iter((1..5).map(HalfWritten));
            let mut items = encode(Codec::Postcard, typed);
            let mut out = bytes::BytesMut::from(&b"before|"[..]);
            let Poll::Ready(Polled::Appended) = poll(&mut items, &mut out).await else { panic!() };
            let Poll::Ready(Polled::Appended) = poll(&mut items, &mut out).await else { panic!() };
            assert_eq!(&out[..], b"before|\x01\x01\x02\x02");
            // The third fails after writing its first half: the stream ends there, naming
            // the item, and the bytes it began to write are gone.
            let Poll::Ready(Polled::Next(Some(Err(e)))) = poll(&mut items, &mut out).await else { panic!() };
            assert!(e.to_string().contains("stream item 2"), "{e}");
            assert_eq!(&out[..], b"before|\x01\x01\x02\x02");
            let Poll::Ready(Polled::Next(None)) = poll(&mut items, &mut out).await else { panic!() };
        })
    }

    #[test]
    fn an_undecodable_item_ends_the_stream_naming_its_index() {
        block(async {
            let raw = Items::new(Iter(Box::new(
                vec![Ok(Reply::Ok("1".into())), Ok(Reply::Ok("\"x\"".into())), Ok(Reply::Ok("3".into()))].into_iter(),
            )));
            let mut typed = decode::<u32, Error>(Codec::Json, raw);
            assert_eq!(typed.next().await, Some(Ok(1)));
            let Some(Err(Error::BadRequest { message })) = typed.next().await else { panic!() };
            assert!(message.starts_with("stream item 1: "), "{message}");
            assert_eq!(typed.next().await, None);
        })
    }

    #[test]
    fn input_goes_out_once() {
        let input = Input::new(Items::new(Iter(Box::new(std::iter::empty()))));
        let retry = input.clone();
        assert!(input.take().is_some());
        assert!(!retry.available() && retry.take().is_none());
    }
}
