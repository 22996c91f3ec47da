//! Bounded memory of recently played sequence numbers.

/// Remembers which of the last [`SeqWindow::SPAN`] sequence numbers (below
/// the highest one) were played, in a fixed bitmap: duplicate detection with
/// bounded memory.
#[derive(Debug)]
pub(super) struct SeqWindow {
    hi: Option<u64>,
    bits: [u64; (Self::SPAN / 64) as usize],
}

impl SeqWindow {
    pub(super) const SPAN: u64 = 4096;

    pub(super) fn new() -> Self {
        Self {
            hi: None,
            bits: [0; (Self::SPAN / 64) as usize],
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % Self::SPAN;
        ((i / 64) as usize, 1 << (i % 64))
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        match self.hi {
            Some(hi) if seq <= hi && hi - seq < Self::SPAN => {
                let (w, b) = Self::slot(seq);
                self.bits[w] & b != 0
            }
            _ => false,
        }
    }

    pub(super) fn insert(&mut self, seq: u64) {
        match self.hi {
            Some(hi) if seq <= hi => {
                if hi - seq >= Self::SPAN {
                    return;
                }
            }
            Some(hi) if seq - hi < Self::SPAN => {
                for s in hi + 1..=seq {
                    let (w, b) = Self::slot(s);
                    self.bits[w] &= !b;
                }
                self.hi = Some(seq);
            }
            _ => {
                self.bits = [0; (Self::SPAN / 64) as usize];
                self.hi = Some(seq);
            }
        }
        let (w, b) = Self::slot(seq);
        self.bits[w] |= b;
    }
}
