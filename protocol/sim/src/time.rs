//! Virtual time and the event queue.
//!
//! The simulation reads the real clock exactly once, for a base [`Instant`] that the sans-IO
//! machines can take as `now`; every later instant is that base plus a virtual offset, so a run
//! takes the same course however fast the machine is.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The simulation's clock: a base instant and the virtual time elapsed since.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    elapsed: Duration,
}

impl Clock {
    /// A clock at virtual time zero. The only read of the real clock in the simulation.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Now, as an `Instant` for the machines.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// The `Instant` at virtual time `at`.
    pub fn at(&self, at: Duration) -> Instant {
        self.base + at
    }

    /// The virtual time of an `Instant` the machines handed out (saturating at zero).
    pub fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    /// Moves the clock forward to `to`; never backward.
    pub fn advance_to(&mut self, to: Duration) {
        self.elapsed = self.elapsed.max(to);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// An event due at a virtual time. Ties are broken by insertion order, so that two events at
/// the same instant always run in the same order.
#[derive(Debug)]
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<(Duration, u64, Slot)>>,
    items: Vec<Option<E>>,
    free: Vec<usize>,
    next: u64,
}

/// Where an event's payload is stored, so that the heap orders keys only.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Slot(usize);

impl<E> Queue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            items: Vec::new(),
            free: Vec::new(),
            next: 0,
        }
    }

    /// Schedules `event` at virtual time `at`.
    pub fn push(&mut self, at: Duration, event: E) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(event);
                i
            }
            None => {
                self.items.push(Some(event));
                self.items.len() - 1
            }
        };
        self.heap.push(Reverse((at, self.next, Slot(slot))));
        self.next += 1;
    }

    /// The earliest event, if it is due at or before `until`.
    pub fn pop_until(&mut self, until: Duration) -> Option<(Duration, E)> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > until {
            return None;
        }
        let Reverse((at, _, Slot(i))) = self.heap.pop()?;
        self.free.push(i);
        let event = self.items[i].take()?;
        Some((at, event))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_insertion_order() {
        let mut q = Queue::new();
        q.push(Duration::from_millis(5), "late");
        q.push(Duration::from_millis(1), "first");
        q.push(Duration::from_millis(1), "second");
        assert_eq!(q.pop_until(Duration::ZERO), None);
        assert_eq!(
            q.pop_until(Duration::from_secs(1)),
            Some((Duration::from_millis(1), "first"))
        );
        assert_eq!(
            q.pop_until(Duration::from_secs(1)),
            Some((Duration::from_millis(1), "second"))
        );
        assert_eq!(
            q.pop_until(Duration::from_secs(1)),
            Some((Duration::from_millis(5), "late"))
        );
        assert!(q.is_empty());
    }
}
