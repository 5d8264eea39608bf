//! The TLS stream's byte queues (incoming records, outgoing records, plaintext not yet read).

/// A byte queue: `data[start..end]` is pending; `data` is allocated (and zeroed) only when it
/// grows, so appending costs no memset.
#[derive(Default)]
pub(super) struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(super) fn capacity(&self) -> usize {
        self.data.len()
    }

    pub(super) fn pending(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Appends `bytes`.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// When empty, gives the memory back if it holds more than `max` bytes (after a burst).
    pub(super) fn trim(&mut self, max: usize) {
        if self.is_empty() && self.capacity() > max {
            *self = Buf::default();
        }
    }

    /// At least `n` writable bytes after the pending ones (moved to the front first if that
    /// makes the room).
    pub(super) fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() - self.end < n {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < n {
                self.data.resize(self.end + n, 0);
            }
        }
        &mut self.data[self.end..]
    }

    pub(super) fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// How many bytes the record at the front still lacks (0 if whole, or no header yet).
    pub(super) fn record_remaining(&self) -> usize {
        let pending = &self.data[self.start..self.end];
        match pending {
            [_, _, _, hi, lo, ..] => {
                let whole = 5 + usize::from(u16::from_be_bytes([*hi, *lo]));
                whole.saturating_sub(pending.len())
            }
            _ => 0,
        }
    }

    /// Gives the memory back, keeping only pending bytes.
    pub(super) fn release(&mut self) {
        if self.is_empty() {
            *self = Buf::default();
        } else {
            self.data.copy_within(self.start..self.end, 0);
            self.data.truncate(self.end - self.start);
            self.data.shrink_to_fit();
            self.end -= self.start;
            self.start = 0;
        }
    }
}
