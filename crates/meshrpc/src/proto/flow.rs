//! Flow control of one direction of one stream: the receiver grants credit in bytes, the
//! sender spends it on items and waits when it has none. A slow reader therefore bounds
//! what its sender holds for it, instead of growing a queue.
//!
//! Credit counts an item's frame length (its payload plus 9), so even empty items are
//! bounded. Each direction of each stream starts with [`STREAM_WINDOW`]; the receiver
//! grants credit back as its reader consumes, in steps of a quarter of its target, never
//! so much that credit held plus items unread exceed the window.
//!
//! The target is the whole window while the stream has its connection to itself, and
//! [`SHARED_WINDOW`] while other calls share it: then the stream keeps less in flight,
//! and their answers wait behind fewer of its bytes (TCP delivers in order). The target
//! is never below two of the largest items received, so a stream of large items keeps
//! two in flight instead of stopping short of its next one.

use crate::error::Error;

/// Credit each direction of a stream starts with, in bytes (1 MiB).
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// The credit a receiver keeps its sender to while other calls share the connection
/// (64 KiB).
pub const SHARED_WINDOW: u32 = STREAM_WINDOW / 16;

/// What an item of `payload` bytes costs in credit: its frame length, at most the whole
/// window (a larger item goes when the credit is full, else it could never go).
pub fn item_cost(payload: usize) -> u32 {
    (payload as u64 + 9).min(u64::from(STREAM_WINDOW)) as u32
}

/// The receiving side: what the sender may still send, and what arrived unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWindow {
    /// Credit the sender still holds.
    open: u32,
    /// Arrived and not yet consumed by the reader.
    unread: u32,
    /// The sender said it lacks credit for its next item: top it up to the whole window.
    blocked: bool,
    /// The cost of the largest item received.
    largest: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow { open: STREAM_WINDOW, unread: 0, blocked: false, largest: 0 }
    }
}

impl RecvWindow {
    /// An item of `cost` arrived. An error: the sender spent credit it did not have.
    pub fn received(&mut self, cost: u32) -> Result<(), Error> {
        self.received_items(cost, cost)
    }

    /// Items costing `cost` together arrived, the largest of them costing `largest` (a
    /// run of items in one frame). An error: the sender spent credit it did not have.
    pub fn received_items(&mut self, cost: u32, largest: u32) -> Result<(), Error> {
        if cost > self.open {
            return Err(Error::protocol(format!(
                "a stream item of {cost} bytes exceeds the sender's credit ({} bytes left)",
                self.open
            )));
        }
        self.open -= cost;
        self.unread += cost;
        self.largest = self.largest.max(largest);
        Ok(())
    }

    /// The reader took items costing `cost`; returns the credit to grant back, if it is
    /// time to: the sender holds less than half of `target` (the window, or
    /// [`SHARED_WINDOW`]; at least two of the largest items received), and at least a
    /// quarter of it can be granted without credit and unread items together exceeding
    /// the window.
    pub fn consumed(&mut self, cost: u32, target: u32) -> Option<u32> {
        self.unread = self.unread.saturating_sub(cost);
        if self.blocked {
            return self.top_up();
        }
        // Below two items, a sender of items larger than half the target would hold
        // credit short of its next item and go on only by saying it is blocked.
        let target = target.max(self.largest.saturating_mul(2)).min(STREAM_WINDOW);
        if self.open >= target / 2 {
            return None;
        }
        let grant = (target - self.open).min(STREAM_WINDOW - self.open - self.unread);
        if grant < target / 4 {
            return None;
        }
        self.open += grant;
        Some(grant)
    }

    /// The sender lacks credit for its next item (a `Credit` of 0 bytes from it): whatever
    /// the target, it is topped up to all the window its unread items leave, now and as the
    /// reader consumes, until nothing is unread (then any item fits: its cost is at most the
    /// window). Without this, a sender holding more than half the target but less than its
    /// next item would wait for a grant that never comes.
    pub fn blocked(&mut self) -> Option<u32> {
        self.blocked = true;
        self.top_up()
    }

    fn top_up(&mut self) -> Option<u32> {
        if self.unread == 0 {
            self.blocked = false;
        }
        let grant = STREAM_WINDOW - self.open - self.unread;
        if grant == 0 {
            return None;
        }
        self.open += grant;
        Some(grant)
    }
}

/// The sending side: credit left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    credit: u32,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow { credit: STREAM_WINDOW }
    }
}

impl SendWindow {
    /// Spends `cost` if the credit covers it; `false`: wait for a grant.
    pub fn spend(&mut self, cost: u32) -> bool {
        if cost > self.credit {
            return false;
        }
        self.credit -= cost;
        true
    }

    /// The receiver granted `bytes` more.
    pub fn grant(&mut self, bytes: u32) {
        self.credit = self.credit.saturating_add(bytes);
    }

    /// Credit left.
    pub fn credit(&self) -> u32 {
        self.credit
    }
}

/// Whether an item may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Send it: its credit is spent.
    Go,
    /// Wait for a credit grant, then ask again.
    Wait,
    /// The call is over: stop sending.
    Gone,
}

/// Flow control of one call's streams, both ways, as either side of a connection keeps it.
#[derive(Debug, Default)]
pub(crate) struct StreamFlow {
    /// Credit for the items this side sends, until they end.
    pub(crate) send: Option<SendWindow>,
    /// The items this side receives, once they flow.
    pub(crate) recv: Option<RecvWindow>,
    /// Calls started on the connection as of this stream's last credit grant.
    seen_started: u64,
}

impl StreamFlow {
    /// No stream yet, as of `started` calls on the connection.
    pub(crate) fn new(started: u64) -> Self {
        StreamFlow { send: None, recv: None, seen_started: started }
    }

    /// The credit this side's items may still spend (`None`: they ended or never were).
    pub(crate) fn credit(&self) -> Option<u32> {
        self.send.as_ref().map(SendWindow::credit)
    }

    /// This side's sender spent `bytes` (checked against [`credit`](Self::credit) first).
    pub(crate) fn spent(&mut self, bytes: u32) {
        if let Some(window) = self.send.as_mut() {
            let ok = window.spend(bytes);
            debug_assert!(ok, "spent more credit than there was");
        }
    }

    /// May an item of `payload` bytes go out now?
    pub(crate) fn spend(&mut self, payload: usize) -> Spend {
        match self.send.as_mut() {
            None => Spend::Gone,
            Some(window) => {
                if window.spend(item_cost(payload)) {
                    Spend::Go
                } else {
                    Spend::Wait
                }
            }
        }
    }

    /// The sender lacks credit for its next item: the credit to grant, if any now.
    pub(crate) fn blocked(&mut self) -> Option<u32> {
        self.recv.as_mut()?.blocked()
    }

    /// The reader took items costing `cost`: the credit to grant back, if it is time to.
    /// `started`: calls started on the connection so far; `others`: other calls in flight.
    /// With other calls now, or since the last grant, the sender is kept to the shared
    /// window, so their answers wait behind fewer of its bytes.
    pub(crate) fn consumed(&mut self, cost: u32, started: u64, others: bool) -> Option<u32> {
        let shared = others || self.seen_started != started;
        self.seen_started = started;
        let target = if shared { SHARED_WINDOW } else { STREAM_WINDOW };
        self.recv.as_mut()?.consumed(cost, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_without_credit_waits_until_the_reader_consumes() {
        let (mut send, mut recv) = (SendWindow::default(), RecvWindow::default());
        let cost = item_cost(32 * 1024 - 9);
        let mut sent = 0;
        while send.spend(cost) {
            recv.received(cost).unwrap();
            sent += 1;
        }
        assert_eq!(sent, 32, "1 MiB of 32 KiB items");
        // The reader consumes 7 items: not yet a quarter of the window, no grant.
        for _ in 0..7 {
            assert_eq!(recv.consumed(cost, STREAM_WINDOW), None);
        }
        let grant = recv.consumed(cost, STREAM_WINDOW).expect("a quarter of the window consumed");
        assert_eq!(grant, STREAM_WINDOW / 4);
        send.grant(grant);
        assert!(send.spend(cost));
        recv.received(cost).unwrap();
    }

    #[test]
    fn while_the_connection_is_shared_the_sender_is_kept_to_a_smaller_window() {
        let (mut send, mut recv) = (SendWindow::default(), RecvWindow::default());
        let cost = item_cost(1000);
        // A reader keeping up: whatever arrives is consumed at once.
        let mut in_flight_max = 0;
        for _ in 0..10_000 {
            if !send.spend(cost) {
                panic!("the sender starved with a reader keeping up");
            }
            recv.received(cost).unwrap();
            if let Some(grant) = recv.consumed(cost, SHARED_WINDOW) {
                send.grant(grant);
            }
            in_flight_max = in_flight_max.max(STREAM_WINDOW - send.credit());
        }
        // Once the first window's credit is spent, the sender holds at most the shared window.
        assert!(send.credit() <= SHARED_WINDOW, "{}", send.credit());
        assert!(in_flight_max <= STREAM_WINDOW);
    }

    #[test]
    fn large_items_on_a_shared_connection_keep_two_in_flight_without_blocking() {
        let (mut send, mut recv) = (SendWindow::default(), RecvWindow::default());
        let cost = item_cost(64 * 1024);
        assert!(cost > SHARED_WINDOW, "each item is larger than the shared window");
        // A reader keeping up while other calls share the connection.
        let (mut blocked, mut held_max) = (0, 0);
        for i in 0..1000 {
            if !send.spend(cost) {
                blocked += 1;
                send.grant(recv.blocked().expect("a grant for a blocked sender"));
                assert!(send.spend(cost));
            }
            recv.received(cost).unwrap();
            if let Some(grant) = recv.consumed(cost, SHARED_WINDOW) {
                send.grant(grant);
            }
            if i > 100 {
                held_max = held_max.max(send.credit());
            }
        }
        assert_eq!(blocked, 0, "the sender never had to say it was blocked");
        assert!(held_max <= 2 * cost, "past the first window it holds at most two items' credit: {held_max}");
    }

    #[test]
    fn credit_and_unread_items_never_exceed_the_window() {
        let (mut send, mut recv) = (SendWindow::default(), RecvWindow::default());
        let cost = item_cost(10_000);
        while send.spend(cost) {
            recv.received(cost).unwrap();
        }
        // A slow reader takes one item: no grant can let the sender past the window.
        let grant = recv.consumed(cost, STREAM_WINDOW).unwrap_or(0);
        send.grant(grant);
        let unread = STREAM_WINDOW - (STREAM_WINDOW % cost) - cost;
        assert!(send.credit() + unread <= STREAM_WINDOW, "credit {} unread {unread}", send.credit());
    }

    #[test]
    fn a_blocked_sender_gets_the_whole_window_once_the_reader_caught_up() {
        let (mut send, mut recv) = (SendWindow::default(), RecvWindow::default());
        let small = item_cost(20_000 - 9);
        // 50 items of 20 KB go out; the sender keeps 48,576 bytes of credit: more than half
        // the shared window, less than its next item, larger than any before (50 KB).
        for _ in 0..50 {
            assert!(send.spend(small));
            recv.received(small).unwrap();
        }
        let next = item_cost(50_000 - 9);
        assert!(send.credit() > SHARED_WINDOW / 2 && send.credit() < next, "credit {}", send.credit());
        // The reader reads all 50 while other calls share the connection: no ordinary grant.
        for _ in 0..50 {
            assert_eq!(recv.consumed(small, SHARED_WINDOW), None);
        }
        assert!(!send.spend(next));
        let grant = recv.blocked().expect("a grant for a blocked sender");
        send.grant(grant);
        assert_eq!(send.credit(), STREAM_WINDOW);
        assert!(send.spend(next));
    }

    #[test]
    fn spending_credit_one_does_not_have_is_refused() {
        let mut recv = RecvWindow::default();
        recv.received(STREAM_WINDOW - 10).unwrap();
        let err = recv.received(11).unwrap_err();
        assert!(err.to_string().contains("exceeds the sender's credit"), "{err}");
    }

    #[test]
    fn an_item_larger_than_the_window_goes_on_a_full_credit() {
        let mut send = SendWindow::default();
        assert!(send.spend(item_cost(4 * 1024 * 1024)));
        assert!(!send.spend(item_cost(0)));
    }
}
