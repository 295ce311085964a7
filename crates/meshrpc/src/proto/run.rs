//! A run of one stream's items in one frame (kind 13, feature `ITEM_RUNS`): the body is
//! `u32 length | item` repeated, at least one item. A sender of many small items pays one
//! frame header, one lookup of the call and one credit check per run instead of per
//! item, as HTTP/2 packs gRPC messages into one DATA frame. Each item still costs
//! [`item_cost`] of credit, exactly as if it had come in a frame of its own, so flow
//! control and its bounds do not change.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::flow::item_cost;
use crate::error::Error;

/// Bytes before each item in a run.
pub(super) const ITEM_PREFIX: usize = 4;

/// Items of one stream from one frame, checked: every length fits the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRun {
    body: Bytes,
    cost: u32,
    largest: u32,
}

impl ItemRun {
    /// Checks a run's body, and sums the credit its items cost.
    pub(super) fn parse(body: Bytes) -> Result<ItemRun, Error> {
        let (mut at, mut cost, mut largest) = (0usize, 0u64, 0u32);
        if body.is_empty() {
            return Err(Error::protocol("a run of items holds none"));
        }
        while at < body.len() {
            let Some(prefix) = body.get(at..at + ITEM_PREFIX) else {
                return Err(Error::protocol("a run of items ends inside a length"));
            };
            let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
            at += ITEM_PREFIX;
            if body.len() - at < len {
                return Err(Error::protocol("an item of a run is longer than the run"));
            }
            at += len;
            let item = item_cost(len);
            cost += u64::from(item);
            largest = largest.max(item);
        }
        // A run is at most a frame: its items' costs (each ≤ 5 + its bytes) fit in u32.
        let cost = u32::try_from(cost).map_err(|_| Error::protocol("a run of items costs too much credit"))?;
        Ok(ItemRun { body, cost, largest })
    }

    /// The credit its items cost, together.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The cost of its largest item.
    pub fn largest(&self) -> u32 {
        self.largest
    }

    /// No item is left.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Its body as sent (for encoding).
    pub(super) fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the next item off the front, with its cost; `None` when none is left.
    pub fn next_item(&mut self) -> Option<(Bytes, u32)> {
        if self.body.is_empty() {
            return None;
        }
        // Checked by `parse`.
        let len = self.body.get_u32() as usize;
        let item = self.body.split_to(len);
        let cost = item_cost(len);
        self.cost -= cost;
        Some((item, cost))
    }
}

/// Where an item being encoded in place sits in the buffer (see [`RunWriter::begin_item`]).
#[derive(Debug)]
pub struct ItemSlot {
    /// Where its length prefix is.
    at: usize,
    /// Its run was opened for it.
    opened: bool,
}

/// Writes runs into a buffer of frames: items of one call go into the open run until it
/// would pass `max` bytes (a frame's whole length) or something else is written.
#[derive(Debug, Default)]
pub struct RunWriter {
    /// Where the open run's frame starts in the buffer, and its call.
    open: Option<(usize, u64)>,
}

impl RunWriter {
    /// Appends an item of call `id` to `out`, into the open run if it is that call's and
    /// has room under `max`, else into a new run.
    pub fn push(&mut self, id: u64, item: &[u8], out: &mut BytesMut, max: usize) {
        if let Some((start, open_id)) = self.open {
            if open_id != id || out.len() - start + ITEM_PREFIX + item.len() > max {
                self.close(out);
            }
        }
        if self.open.is_none() {
            self.open = Some((out.len(), id));
            out.reserve(super::frame::HEADER + ITEM_PREFIX + item.len());
            out.put_u32(0); // patched by `close`
            out.put_u8(super::frame::ITEMS);
            out.put_u64(id);
        }
        out.reserve(ITEM_PREFIX + item.len());
        out.put_u32(item.len() as u32);
        out.put_slice(item);
    }

    /// Closes the open run (its length written): call before anything else goes into
    /// `out`, and before `out` is sent.
    pub fn close(&mut self, out: &mut BytesMut) {
        if let Some((start, _)) = self.open.take() {
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Makes room in `out` for an item of call `id` that its producer encodes in place,
    /// straight after: then [`end_item`](Self::end_item) it, or
    /// [`take_item`](Self::take_item) / [`cancel_item`](Self::cancel_item) it back out.
    pub fn begin_item(&mut self, id: u64, out: &mut BytesMut) -> ItemSlot {
        if self.open.is_some_and(|(_, open_id)| open_id != id) {
            self.close(out);
        }
        let opened = self.open.is_none();
        if opened {
            self.open = Some((out.len(), id));
            out.put_u32(0); // patched by `close`
            out.put_u8(super::frame::ITEMS);
            out.put_u64(id);
        }
        let at = out.len();
        out.put_u32(0); // the item's length, patched by `end_item`
        ItemSlot { at, opened }
    }

    /// The length of the item encoded in place at `slot` so far.
    pub fn item_len(slot: &ItemSlot, out: &BytesMut) -> usize {
        out.len() - slot.at - ITEM_PREFIX
    }

    /// The item encoded in place at `slot` so far.
    pub fn item<'a>(slot: &ItemSlot, out: &'a BytesMut) -> &'a [u8] {
        &out[slot.at + ITEM_PREFIX..]
    }

    /// Keeps the item encoded in place at `slot` if its run still fits in `max` bytes (a
    /// frame's whole length): true if kept, else nothing changed.
    pub fn end_item(&mut self, slot: &ItemSlot, out: &mut BytesMut, max: usize) -> bool {
        let Some((start, _)) = self.open else { return false };
        if out.len() - start > max {
            return false;
        }
        let len = (out.len() - slot.at - ITEM_PREFIX) as u32;
        out[slot.at..slot.at + ITEM_PREFIX].copy_from_slice(&len.to_be_bytes());
        true
    }

    /// Takes the item encoded in place at `slot` back out of `out`, as if never written.
    pub fn take_item(&mut self, slot: ItemSlot, out: &mut BytesMut) -> BytesMut {
        let item = out.split_off(slot.at + ITEM_PREFIX);
        self.cancel_item(slot, out);
        item
    }

    /// Removes the room made at `slot` (nothing was encoded, or it is not wanted).
    pub fn cancel_item(&mut self, slot: ItemSlot, out: &mut BytesMut) {
        match self.open {
            Some((start, _)) if slot.opened => {
                out.truncate(start);
                self.open = None;
            }
            _ => out.truncate(slot.at),
        }
    }

    /// The most a run frame holding one item of `len` bytes takes.
    pub fn frame_len(len: usize) -> usize {
        super::frame::HEADER + ITEM_PREFIX + len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Frame, DEFAULT_MAX_FRAME};

    #[test]
    fn items_written_in_runs_come_back_one_by_one_with_their_cost() {
        let mut out = BytesMut::new();
        let mut runs = RunWriter::default();
        let items: Vec<Vec<u8>> = (0..100u8).map(|n| vec![n; usize::from(n % 7)]).collect();
        for item in &items {
            runs.push(5, item, &mut out, 64);
        }
        runs.push(6, b"other call", &mut out, 64);
        runs.close(&mut out);
        let mut back = Vec::new();
        let mut frames = 0;
        while let Some(frame) = Frame::decode(&mut out, DEFAULT_MAX_FRAME).unwrap() {
            frames += 1;
            let Frame::Items { id, mut run } = frame else { panic!("{frame:?}") };
            let whole = run.cost();
            let mut sum = 0;
            while let Some((item, cost)) = run.next_item() {
                assert_eq!(cost, item_cost(item.len()));
                sum += cost;
                back.push((id, item.to_vec()));
            }
            assert_eq!((sum, run.cost()), (whole, 0));
        }
        let mut expected: Vec<(u64, Vec<u8>)> = items.into_iter().map(|i| (5, i)).collect();
        expected.push((6, b"other call".to_vec()));
        assert_eq!(back, expected);
        // Frames of at most 64 bytes: many runs, each of whole items.
        assert!(frames > 10, "{frames} frames");
    }

    #[test]
    fn items_encoded_in_place_read_back_as_pushed_ones_and_those_taken_out_leave_no_trace() {
        // In place and pushed, one call's items, with some taken back out (as a sender
        // out of credit does) and some that would pass the frame limit.
        let (mut direct, mut pushed) = (BytesMut::new(), BytesMut::new());
        let (mut runs, mut plain) = (RunWriter::default(), RunWriter::default());
        let mut taken = Vec::new();
        for n in 0..200u8 {
            let item = vec![n; usize::from(n % 11)];
            if n % 13 == 0 {
                let slot = runs.begin_item(5, &mut direct);
                runs.cancel_item(slot, &mut direct); // the producer had nothing ready
            }
            let slot = runs.begin_item(5, &mut direct);
            direct.put_slice(&item);
            assert_eq!(RunWriter::item_len(&slot, &direct), item.len());
            assert_eq!(RunWriter::item(&slot, &direct), &item[..]);
            if n % 9 == 4 {
                taken.push(runs.take_item(slot, &mut direct).to_vec());
                continue;
            }
            if !runs.end_item(&slot, &mut direct, 64) {
                runs.cancel_item(slot, &mut direct);
                runs.close(&mut direct);
                runs.push(5, &item, &mut direct, 64);
            }
            plain.push(5, &item, &mut pushed, 64);
        }
        runs.close(&mut direct);
        plain.close(&mut pushed);
        let expected_taken: Vec<Vec<u8>> =
            (0..200u8).filter(|n| n % 9 == 4).map(|n| vec![n; usize::from(n % 11)]).collect();
        assert_eq!(taken, expected_taken);
        let read = |mut out: BytesMut| {
            let mut items = Vec::new();
            while let Some(frame) = Frame::decode(&mut out, DEFAULT_MAX_FRAME).unwrap() {
                let Frame::Items { id: 5, mut run } = frame else { panic!("{frame:?}") };
                while let Some((item, _)) = run.next_item() {
                    items.push(item.to_vec());
                }
            }
            assert!(out.is_empty());
            items
        };
        assert_eq!(read(direct), read(pushed));
    }

    #[test]
    fn a_run_that_lies_about_its_items_is_refused() {
        let frame = |body: &[u8]| {
            let mut out = BytesMut::new();
            out.put_u32((super::super::frame::HEADER - 4 + body.len()) as u32);
            out.put_u8(super::super::frame::ITEMS);
            out.put_u64(1);
            out.put_slice(body);
            Frame::decode(&mut out, DEFAULT_MAX_FRAME)
        };
        assert!(matches!(frame(b""), Err(Error::Protocol { .. })));
        assert!(matches!(frame(&[0, 0, 1]), Err(Error::Protocol { .. })));
        assert!(matches!(frame(&[0, 0, 0, 5, 1, 2]), Err(Error::Protocol { .. })));
        let Ok(Some(Frame::Items { run, .. })) = frame(&[0, 0, 0, 2, 1, 2, 0, 0, 0, 0]) else { panic!() };
        assert_eq!((run.cost(), run.largest()), (item_cost(2) + item_cost(0), item_cost(2)));
    }
}
