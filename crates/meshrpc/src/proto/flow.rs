//! Flow control of one direction of one stream: the receiver grants credit in bytes, the
//! sender spends it on items and waits when it has none. A slow reader therefore bounds
//! what its sender holds for it, instead of growing a queue.
//!
//! Credit counts an item's frame length (its payload plus 9), so even empty items are
//! bounded. Each direction of each stream starts with [`STREAM_WINDOW`]; the receiver
//! grants back what its reader consumed once that is half the window.

use crate::error::Error;

/// Credit each direction of a stream starts with, in bytes (1 MiB).
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// What an item of `payload` bytes costs in credit: its frame length, at most the whole
/// window (a larger item goes when the credit is full, else it could never go).
pub fn item_cost(payload: usize) -> u32 {
    (payload as u64 + 9).min(u64::from(STREAM_WINDOW)) as u32
}

/// The receiving side: what the sender may still send, and what the reader consumed
/// since the last grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWindow {
    /// Credit the sender still holds.
    open: u32,
    /// Consumed and not yet granted back.
    consumed: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow { open: STREAM_WINDOW, consumed: 0 }
    }
}

impl RecvWindow {
    /// An item of `cost` arrived. An error: the sender spent credit it did not have.
    pub fn received(&mut self, cost: u32) -> Result<(), Error> {
        if cost > self.open {
            return Err(Error::protocol(format!(
                "a stream item of {cost} bytes exceeds the sender's credit ({} bytes left)",
                self.open
            )));
        }
        self.open -= cost;
        Ok(())
    }

    /// The reader took an item of `cost`; returns the credit to grant back, if it is
    /// time to (half the window consumed).
    pub fn consumed(&mut self, cost: u32) -> Option<u32> {
        self.consumed = self.consumed.saturating_add(cost);
        if self.consumed < STREAM_WINDOW / 2 {
            return None;
        }
        let grant = std::mem::take(&mut self.consumed);
        self.open = self.open.saturating_add(grant);
        Some(grant)
    }

    /// Credit the sender still holds (what may arrive before the reader reads).
    pub fn open(&self) -> u32 {
        self.open
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
        // The reader consumes 15 items: not yet half the window, no grant.
        for _ in 0..15 {
            assert_eq!(recv.consumed(cost), None);
        }
        let grant = recv.consumed(cost).expect("half the window consumed");
        assert_eq!(grant, STREAM_WINDOW / 2);
        send.grant(grant);
        assert!(send.spend(cost));
        recv.received(cost).unwrap();
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
