//! Per-stream ordering bookkeeping: which sequence numbers of one publisher on one channel a
//! subscriber has seen, in constant memory when nothing goes wrong.

/// What a received sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one expected.
    InOrder,
    /// Later than expected: the ones skipped are missing (lost, unless they arrive later).
    Gap,
    /// A missing one that arrived late.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// Sequence tracking for one (publisher, channel) stream at one subscriber. Sequence numbers
/// start at 0.
#[derive(Debug, Default, Clone)]
pub struct Track {
    next: u64,
    /// Missing ranges `[start, end)` below `next`, in order.
    missing: Vec<(u64, u64)>,
}

impl Track {
    /// Records `seq`.
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            self.missing.push((self.next, seq));
            self.next = seq + 1;
            return Arrival::Gap;
        }
        let i = self.missing.partition_point(|&(_, end)| end <= seq);
        match self.missing.get(i).copied() {
            Some((start, end)) if start <= seq => {
                match (seq == start, seq + 1 == end) {
                    (true, true) => {
                        self.missing.remove(i);
                    }
                    (true, false) => self.missing[i].0 = seq + 1,
                    (false, true) => self.missing[i].1 = seq,
                    (false, false) => {
                        self.missing[i].1 = seq;
                        self.missing.insert(i + 1, (seq + 1, end));
                    }
                }
                Arrival::Reordered
            }
            _ => Arrival::Duplicate,
        }
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.next - self.missing.iter().map(|(s, e)| e - s).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gap_reorder_duplicate() {
        let mut t = Track::default();
        assert_eq!(t.arrive(0), Arrival::InOrder);
        assert_eq!(t.arrive(1), Arrival::InOrder);
        assert_eq!(t.arrive(5), Arrival::Gap);
        assert_eq!(t.unique(), 3);
        assert_eq!(t.arrive(3), Arrival::Reordered);
        assert_eq!(t.arrive(3), Arrival::Duplicate);
        assert_eq!(t.arrive(2), Arrival::Reordered);
        assert_eq!(t.arrive(4), Arrival::Reordered);
        assert_eq!(t.arrive(1), Arrival::Duplicate);
        assert_eq!(t.unique(), 6);
        assert_eq!(t.arrive(6), Arrival::InOrder);
        assert!(t.missing.is_empty());
    }
}
