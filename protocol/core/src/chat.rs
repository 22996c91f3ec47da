//! Chat beside calls and live channels: the rules that make it ordered, exactly once, bounded
//! and able to outlive a connection, sans IO (time is an argument).
//!
//! The shape is hop by hop, through the server, which is the only party that is always there:
//! - a writer's [`Outbox`] numbers its messages (`Send`, per author from 1), keeps each until
//!   the server acknowledges it (`Ack`, cumulative), and after a reconnection resends what is
//!   unacknowledged, in order;
//! - the server's [`RoomLog`] stores a message once (a resent one is only acknowledged again),
//!   gives it the room's next sequence number and keeps the latest [`RoomLog::capacity`] of
//!   them;
//! - a reader's [`Inbox`] joins with the last room sequence number it delivered (`Join`), so
//!   that the server replays what it missed, and drops what it already has.
//!
//! Both directions are bounded: a writer has at most [`OutboxConfig::max_pending`] messages in
//! flight and a [`TokenBucket`] rate; the server holds a fixed number per room.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::{Chat, ChatKind, MAX_CHAT_TEXT};

/// Why a message could not be sent (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The text is longer than the wire allows.
    #[error("chat message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The text's length.
        len: usize,
        /// [`MAX_CHAT_TEXT`].
        max: usize,
    },
    /// Over the writer's rate: try again after this long.
    #[error("chat rate exceeded: next message in {0:?}")]
    RateLimited(Duration),
    /// Too many messages await the server's acknowledgement (the server is unreachable).
    #[error("{0} chat messages await the server's acknowledgement")]
    TooManyPending(usize),
}

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
    }
}

/// A writer's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Messages sent and not yet acknowledged, at most.
    pub max_pending: usize,
    /// Messages at once.
    pub burst: u32,
    /// Messages a second, sustained.
    pub per_sec: u32,
}

impl Default for OutboxConfig {
    /// A person typing, pasting a few lines at once; below the server's limit
    /// ([`SERVER_CHAT_BURST`], [`SERVER_CHAT_PER_SEC`]), with room for a reconnection's resend.
    fn default() -> Self {
        Self {
            max_pending: 64,
            burst: 16,
            per_sec: 5,
        }
    }
}

/// Chat frames (`Send` and `Join`) a connection may send at once before the server closes it.
/// Above [`OutboxConfig::max_pending`] plus a join, so that a full resend after a reconnection
/// fits.
pub const SERVER_CHAT_BURST: u32 = 96;
/// Chat frames a second a connection may send, sustained.
pub const SERVER_CHAT_PER_SEC: u32 = 20;

/// A writer's side of one room: numbers messages, keeps them until acknowledged.
#[derive(Debug, Clone)]
pub struct Outbox {
    room: String,
    author: u64,
    config: OutboxConfig,
    next_seq: u64,
    unacked: VecDeque<Chat>,
    rate: TokenBucket,
}

impl Outbox {
    /// A writer `author` (an id unique to it, kept across reconnections) in `room`.
    pub fn new(room: &str, author: u64, config: OutboxConfig, now: Instant) -> Self {
        Self {
            room: room.to_owned(),
            author,
            rate: TokenBucket::new(config.burst, config.per_sec, now),
            config,
            next_seq: 1,
            unacked: VecDeque::new(),
        }
    }

    /// The writer's id.
    pub fn author(&self) -> u64 {
        self.author
    }

    /// Numbers `text` (sent at `sent_us` on the server's clock) and returns its `Send` frame,
    /// which is kept until acknowledged.
    pub fn send(&mut self, now: Instant, text: &str, sent_us: u64) -> Result<Chat, ChatError> {
        if text.len() > MAX_CHAT_TEXT {
            return Err(ChatError::TooLong {
                len: text.len(),
                max: MAX_CHAT_TEXT,
            });
        }
        if self.unacked.len() >= self.config.max_pending {
            return Err(ChatError::TooManyPending(self.unacked.len()));
        }
        self.rate.take(now).map_err(ChatError::RateLimited)?;
        let chat = Chat {
            kind: ChatKind::Send,
            room: self.room.clone(),
            author: self.author,
            seq: self.next_seq,
            sent_us,
            text: text.to_owned(),
        };
        self.next_seq += 1;
        self.unacked.push_back(chat.clone());
        Ok(chat)
    }

    /// The server's `Ack` up to `seq`: those messages are safe. Returns how many were newly
    /// acknowledged (an old or foreign ack is harmless).
    pub fn handle_ack(&mut self, ack: &Chat) -> usize {
        if ack.room != self.room || ack.author != self.author {
            return 0;
        }
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|c| c.seq <= ack.seq) {
            self.unacked.pop_front();
        }
        before - self.unacked.len()
    }

    /// What to send again on a new connection, in order.
    pub fn unacked(&self) -> impl Iterator<Item = &Chat> {
        self.unacked.iter()
    }

    /// Messages awaiting acknowledgement.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }
}

/// What [`Inbox::handle_message`] made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The next message: show it. `missed` counts messages the server no longer held when it
    /// replayed after a join (its log is bounded), 0 otherwise.
    New {
        /// The message.
        message: Chat,
        /// Messages lost before it.
        missed: u64,
    },
    /// Already delivered (a replay overlapping what arrived live): dropped.
    Duplicate,
    /// A message after a hole (the connection's queue overflowed): dropped, and the caller
    /// must send [`Inbox::join`] again so that the server replays from the hole.
    Gap,
    /// Another message after a hole, while the rejoin is under way: dropped.
    Waiting,
}

/// A reader's side of one room: delivers each room message once, in order.
#[derive(Debug, Clone)]
pub struct Inbox {
    room: String,
    last: u64,
    /// A join was sent: the next message may start after a hole the server cannot fill.
    joined: bool,
    /// A gap was seen and a rejoin asked for.
    rejoining: bool,
}

impl Inbox {
    /// A reader of `room` that has nothing yet.
    pub fn new(room: &str) -> Self {
        Self {
            room: room.to_owned(),
            last: 0,
            joined: false,
            rejoining: false,
        }
    }

    /// The room sequence number of the last message delivered.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The `Join` frame to send on each (re)connection, and after a [`Delivery::Gap`].
    pub fn join(&mut self, author: u64) -> Chat {
        self.joined = true;
        Chat {
            kind: ChatKind::Join,
            room: self.room.clone(),
            author,
            seq: self.last,
            sent_us: 0,
            text: String::new(),
        }
    }

    /// One `Message` from the server.
    pub fn handle_message(&mut self, message: Chat) -> Delivery {
        if message.room != self.room || message.seq <= self.last {
            return Delivery::Duplicate;
        }
        let missed = message.seq - self.last - 1;
        if missed > 0 && !self.joined {
            return if std::mem::replace(&mut self.rejoining, true) {
                Delivery::Waiting
            } else {
                Delivery::Gap
            };
        }
        self.joined = false;
        self.rejoining = false;
        self.last = message.seq;
        Delivery::New { message, missed }
    }
}

/// What [`RoomLog::submit`] did with a `Send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored as the room's next message (relay it to every member), and the ack to send
    /// back.
    Stored {
        /// The room's `Message`.
        message: Chat,
        /// The writer's `Ack`.
        ack: Chat,
    },
    /// Stored before (a resend after a reconnection): only the ack goes back.
    Duplicate {
        /// The writer's `Ack`.
        ack: Chat,
    },
}

/// Why [`RoomLog::submit`] refused a `Send`: the writer broke the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// A sequence number after a hole: messages are sent in order, each once acknowledged or
    /// resent.
    #[error("chat message {got} of author {author:x} skips ahead (expected {expected})")]
    OutOfOrder {
        /// The writer.
        author: u64,
        /// The next sequence number the room expects of it.
        expected: u64,
        /// What came.
        got: u64,
    },
    /// The room knows too many writers.
    #[error("too many chat authors in the room (limit {0})")]
    TooManyAuthors(usize),
    /// The text is longer than the wire allows.
    #[error("chat message of {0} bytes exceeds the limit")]
    TooLong(usize),
}

/// Messages a room keeps for replay by default.
pub const DEFAULT_ROOM_LOG: usize = 1024;
/// Writers a room remembers by default (each one's highest sequence number).
pub const DEFAULT_ROOM_AUTHORS: usize = 1024;

/// The server's record of one room: the latest messages, and each writer's progress.
#[derive(Debug, Clone)]
pub struct RoomLog {
    room: String,
    capacity: usize,
    max_authors: usize,
    next: u64,
    log: VecDeque<Chat>,
    authors: HashMap<u64, u64>,
}

impl RoomLog {
    /// An empty room keeping `capacity` messages and `max_authors` writers.
    pub fn new(room: &str, capacity: usize, max_authors: usize) -> Self {
        Self {
            room: room.to_owned(),
            capacity: capacity.max(1),
            max_authors: max_authors.max(1),
            next: 1,
            log: VecDeque::new(),
            authors: HashMap::new(),
        }
    }

    /// Messages kept for replay.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes a writer's `Send`.
    pub fn submit(&mut self, send: &Chat) -> Result<Submitted, RoomError> {
        if send.text.len() > MAX_CHAT_TEXT {
            return Err(RoomError::TooLong(send.text.len()));
        }
        let known = self.authors.len();
        let done = self.authors.get(&send.author).copied();
        if done.is_none() && known >= self.max_authors {
            return Err(RoomError::TooManyAuthors(self.max_authors));
        }
        let done = done.unwrap_or(0);
        let ack = |seq| Chat {
            kind: ChatKind::Ack,
            room: self.room.clone(),
            author: send.author,
            seq,
            sent_us: 0,
            text: String::new(),
        };
        if send.seq <= done {
            return Ok(Submitted::Duplicate { ack: ack(done) });
        }
        if send.seq != done + 1 {
            return Err(RoomError::OutOfOrder {
                author: send.author,
                expected: done + 1,
                got: send.seq,
            });
        }
        self.authors.insert(send.author, send.seq);
        let message = Chat {
            kind: ChatKind::Message,
            room: self.room.clone(),
            author: send.author,
            seq: self.next,
            sent_us: send.sent_us,
            text: send.text.clone(),
        };
        self.next += 1;
        if self.log.len() == self.capacity {
            self.log.pop_front();
        }
        self.log.push_back(message.clone());
        Ok(Submitted::Stored {
            message,
            ack: ack(send.seq),
        })
    }

    /// The messages after room sequence number `after` that the log still holds, in order.
    pub fn since(&self, after: u64) -> impl Iterator<Item = &Chat> {
        self.log.iter().filter(move |m| m.seq > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "call/r";

    fn texts<'a>(it: impl Iterator<Item = &'a Chat>) -> Vec<String> {
        it.map(|c| c.text.clone()).collect()
    }

    /// A writer, the server and a reader across a lost connection: what was in flight is
    /// resent, stored once, and the reader (rejoining where it was) gets each message once,
    /// in order.
    #[test]
    fn messages_survive_a_reconnection_exactly_once_in_order() {
        let t0 = Instant::now();
        let mut out = Outbox::new(ROOM, 7, OutboxConfig::default(), t0);
        let mut room = RoomLog::new(ROOM, 16, 4);
        let mut inbox = Inbox::new(ROOM);
        let mut shown = Vec::new();
        let mut show = |inbox: &mut Inbox, m: Chat| {
            if let Delivery::New { message, missed } = inbox.handle_message(m) {
                assert_eq!(missed, 0);
                shown.push(message.text);
            }
        };
        inbox.join(9);
        // Connection 1: three sent; the server stores all three but its acks for the last
        // two and the third message to the reader are lost with the connection.
        let sent: Vec<Chat> = (1..=3)
            .map(|i| out.send(t0, &format!("m{i}"), i).unwrap())
            .collect();
        let mut relayed = Vec::new();
        for (i, s) in sent.iter().enumerate() {
            let Submitted::Stored { message, ack } = room.submit(s).unwrap() else {
                panic!("new message");
            };
            relayed.push(message);
            if i == 0 {
                assert_eq!(out.handle_ack(&ack), 1);
            }
        }
        show(&mut inbox, relayed[0].clone());
        show(&mut inbox, relayed[1].clone());
        assert_eq!(out.pending(), 2);
        // Connection 2: a fourth is typed; the writer resends the unacknowledged then sends
        // it; the reader rejoins after what it has.
        let fourth = out.send(t0, "m4", 4).unwrap();
        let resend: Vec<Chat> = out.unacked().cloned().collect();
        assert_eq!(texts(resend.iter()), ["m2", "m3", "m4"]);
        let join = inbox.join(9);
        assert_eq!(join.seq, 2);
        for m in room.since(join.seq).cloned().collect::<Vec<_>>() {
            show(&mut inbox, m);
        }
        for s in &resend {
            match room.submit(s).unwrap() {
                Submitted::Duplicate { ack } => {
                    out.handle_ack(&ack);
                }
                Submitted::Stored { message, ack } => {
                    assert_eq!(s, &fourth, "only the new one is stored");
                    out.handle_ack(&ack);
                    show(&mut inbox, message.clone());
                    // A late duplicate of a live message changes nothing.
                    show(&mut inbox, message);
                }
            }
        }
        assert_eq!(out.pending(), 0);
        assert_eq!(shown, ["m1", "m2", "m3", "m4"]);
        assert_eq!(texts(room.since(0)), ["m1", "m2", "m3", "m4"]);
    }

    #[test]
    fn a_hole_in_live_messages_asks_for_one_rejoin_then_fills() {
        let mut room = RoomLog::new(ROOM, 16, 4);
        let mut inbox = Inbox::new(ROOM);
        inbox.join(1);
        let msgs: Vec<Chat> = (1..=4)
            .map(|i| {
                let send = Chat {
                    kind: ChatKind::Send,
                    room: ROOM.into(),
                    author: 1,
                    seq: i,
                    sent_us: 0,
                    text: format!("m{i}"),
                };
                match room.submit(&send).unwrap() {
                    Submitted::Stored { message, .. } => message,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert!(matches!(
            inbox.handle_message(msgs[0].clone()),
            Delivery::New { .. }
        ));
        // m2 was dropped by an overflowing queue.
        assert_eq!(inbox.handle_message(msgs[2].clone()), Delivery::Gap);
        assert_eq!(inbox.handle_message(msgs[3].clone()), Delivery::Waiting);
        let join = inbox.join(1);
        let replay: Vec<Chat> = room.since(join.seq).cloned().collect();
        let got: Vec<String> = replay
            .into_iter()
            .filter_map(|m| match inbox.handle_message(m) {
                Delivery::New { message, missed: 0 } => Some(message.text),
                _ => None,
            })
            .collect();
        assert_eq!(got, ["m2", "m3", "m4"]);
    }

    #[test]
    fn a_replay_past_the_bounded_log_reports_what_was_missed() {
        let mut room = RoomLog::new(ROOM, 2, 4);
        for i in 1..=5 {
            let send = Chat {
                kind: ChatKind::Send,
                room: ROOM.into(),
                author: 1,
                seq: i,
                sent_us: 0,
                text: format!("m{i}"),
            };
            room.submit(&send).unwrap();
        }
        assert_eq!(
            texts(room.since(0)),
            ["m4", "m5"],
            "the log keeps its capacity"
        );
        let mut inbox = Inbox::new(ROOM);
        let join = inbox.join(2);
        let first = room.since(join.seq).next().unwrap().clone();
        assert_eq!(
            inbox.handle_message(first),
            Delivery::New {
                message: room.since(0).next().unwrap().clone(),
                missed: 3
            }
        );
    }

    #[test]
    fn the_writer_is_bounded_in_size_rate_and_messages_in_flight() {
        let t0 = Instant::now();
        let config = OutboxConfig {
            max_pending: 3,
            burst: 2,
            per_sec: 4,
        };
        let mut out = Outbox::new(ROOM, 1, config, t0);
        let long = "x".repeat(MAX_CHAT_TEXT + 1);
        assert_eq!(
            out.send(t0, &long, 0),
            Err(ChatError::TooLong {
                len: MAX_CHAT_TEXT + 1,
                max: MAX_CHAT_TEXT
            })
        );
        out.send(t0, "a", 0).unwrap();
        out.send(t0, "b", 0).unwrap();
        assert_eq!(
            out.send(t0, "c", 0),
            Err(ChatError::RateLimited(Duration::from_millis(250)))
        );
        let t1 = t0 + Duration::from_millis(250);
        out.send(t1, "c", 0).unwrap();
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(out.send(t2, "d", 0), Err(ChatError::TooManyPending(3)));
        let ack = Chat {
            kind: ChatKind::Ack,
            room: ROOM.into(),
            author: 1,
            seq: 2,
            sent_us: 0,
            text: String::new(),
        };
        let foreign = Chat {
            author: 2,
            ..ack.clone()
        };
        assert_eq!(out.handle_ack(&foreign), 0);
        assert_eq!(out.handle_ack(&ack), 2);
        let d = out.send(t2, "d", 0).unwrap();
        assert_eq!(d.seq, 4, "numbers keep counting");
    }

    #[test]
    fn the_room_refuses_skipping_writers_and_too_many_authors() {
        let mut room = RoomLog::new(ROOM, 4, 1);
        let send = |author, seq| Chat {
            kind: ChatKind::Send,
            room: ROOM.into(),
            author,
            seq,
            sent_us: 0,
            text: "hi".into(),
        };
        assert_eq!(
            room.submit(&send(1, 2)),
            Err(RoomError::OutOfOrder {
                author: 1,
                expected: 1,
                got: 2
            })
        );
        room.submit(&send(1, 1)).unwrap();
        assert_eq!(room.submit(&send(2, 1)), Err(RoomError::TooManyAuthors(1)));
    }
}
