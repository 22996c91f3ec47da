//! Chat beside a call or a live channel: lines in, the room's lines out, through
//! reconnections. The rules (numbering, acknowledgement, resend, duplicates, the bounds) are
//! the protocol crate's ([`chunkcast_protocol::chat`]); this is the loop that drives them over
//! a [`Session`], and connects again when the connection is lost.

use std::time::{Duration, Instant, SystemTime};

use chunkcast_protocol::chat::{ChatError, Delivery, Inbox, Outbox, OutboxConfig};
use chunkcast_protocol::wire::{ChatKind, MAX_CHAT_TEXT};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::session::{ConnectOptions, Session};
use crate::url::Url;

/// One line of the room, as delivered: each once, in the room's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// The writer's id.
    pub author: u64,
    /// Whether we wrote it (the server relays our own lines back, in the room's order).
    pub mine: bool,
    /// Its number in the room (from 1).
    pub seq: u64,
    /// When its writer sent it, on the local wall clock (from the server's clock, which both
    /// ends relate theirs to).
    pub sent_at: SystemTime,
    /// From its sending to its arrival here.
    pub latency: Duration,
    /// The text.
    pub text: String,
    /// Lines the server no longer held when it replayed after a reconnection (its log is
    /// bounded), lost before this one; 0 normally.
    pub missed: u64,
}

/// How to chat.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Give up once connecting again has failed for this long.
    pub reconnect_for: Duration,
    /// Tell the user on stderr when the connection is lost and found again.
    pub notes: bool,
    /// Ends the chat when cancelled (what is not yet acknowledged is then lost).
    pub cancel: CancellationToken,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            reconnect_for: Duration::from_secs(30),
            notes: false,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a chat did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatReport {
    /// Lines sent (each counted once, however often resent).
    pub sent: u64,
    /// Lines delivered (ours included).
    pub received: u64,
    /// Connections made (1 without a reconnection).
    pub connections: u32,
    /// Lines longer than a message may be, cut to [`MAX_CHAT_TEXT`] bytes.
    pub cut: u64,
    /// Whether [`ChatOptions::cancel`] ended it.
    pub interrupted: bool,
}

/// An id for this writer: random, so that two writers in a room do not share one, and kept
/// across reconnections, so that the server can tell a resent line from a new one.
fn new_author() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// `text` cut to at most [`MAX_CHAT_TEXT`] bytes on a character boundary.
fn clip(mut text: String) -> (String, bool) {
    if text.len() <= MAX_CHAT_TEXT {
        return (text, false);
    }
    let mut end = MAX_CHAT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// Chats in `room` (`call/ROOM` or `live/NAME`) on the server of `url`: sends each line of
/// `input`, delivers each line of the room to `output` once and in order, and connects again
/// when the connection is lost, resending what the server had not acknowledged. Ends once
/// `input` is closed and every line sent is acknowledged, or when cancelled.
pub async fn run_chat(
    url: &Url,
    connect: &ConnectOptions,
    room: &str,
    mut input: mpsc::Receiver<String>,
    output: mpsc::Sender<ChatLine>,
    opts: &ChatOptions,
) -> Result<ChatReport, ClientError> {
    let author = new_author();
    let mut outbox = Outbox::new(room, author, OutboxConfig::default(), now());
    let mut inbox = Inbox::new(room);
    let mut report = ChatReport::default();
    // A line read and not yet accepted by the outbox (over its rate, or too many unacked).
    let mut held: Option<String> = None;
    let mut input_open = true;
    loop {
        let Some(session) = reconnect(url, connect, opts, report.connections).await? else {
            report.interrupted = true;
            return Ok(report);
        };
        report.connections += 1;
        let Ok((_, offset)) = session.clock().await else {
            continue;
        };
        let server_us = |s: &Session| s.clock_us().saturating_add_signed(offset);
        let Some(mut frames) = session.chat_frames() else {
            unreachable!("a new session's chat frames are there to take")
        };
        // Our position in the room first, then what the server may have missed of ours.
        let mut resend = vec![inbox.join(author)];
        resend.extend(outbox.unacked().cloned());
        if let Err(e) = send_all(&session, resend).await {
            if matches!(e, ClientError::Usage(_)) {
                return Err(e);
            }
            continue;
        }
        loop {
            if !input_open && held.is_none() && outbox.pending() == 0 {
                session.close().await;
                return Ok(report);
            }
            let mut wait = None;
            if let Some(text) = held.take() {
                match outbox.send(now(), &text, server_us(&session)) {
                    Ok(frame) => {
                        report.sent += 1;
                        // A failed send is in the outbox: resent on the next connection.
                        if session.chat(frame).await.is_err() {
                            break;
                        }
                    }
                    Err(ChatError::RateLimited(after)) => {
                        held = Some(text);
                        wait = Some(after);
                    }
                    // Waits for acks (or the next connection).
                    Err(_) => held = Some(text),
                }
            }
            tokio::select! {
                biased;
                () = opts.cancel.cancelled() => {
                    session.close().await;
                    report.interrupted = true;
                    return Ok(report);
                }
                frame = frames.recv() => {
                    let Some(frame) = frame else { break };
                    match frame.kind {
                        ChatKind::Ack => {
                            outbox.handle_ack(&frame);
                        }
                        ChatKind::Message => match inbox.handle_message(frame) {
                            Delivery::New { message, missed } => {
                                let age = server_us(&session).saturating_sub(message.sent_us);
                                let latency = Duration::from_micros(age);
                                report.received += 1;
                                let line = ChatLine {
                                    author: message.author,
                                    mine: message.author == author,
                                    seq: message.seq,
                                    sent_at: SystemTime::now() - latency,
                                    latency,
                                    text: message.text,
                                    missed,
                                };
                                if output.send(line).await.is_err() {
                                    // Nobody reads: stop reading, finish sending.
                                    input_open = false;
                                }
                            }
                            Delivery::Gap => {
                                if session.chat(inbox.join(author)).await.is_err() {
                                    break;
                                }
                            }
                            Delivery::Duplicate | Delivery::Waiting => {}
                        },
                        _ => {}
                    }
                }
                line = input.recv(), if input_open && held.is_none() => match line {
                    Some(line) => {
                        let (line, cut) = clip(line);
                        report.cut += u64::from(cut);
                        held = Some(line);
                    }
                    None => input_open = false,
                },
                () = sleep(wait) => {}
            }
        }
        if opts.notes {
            eprintln!(
                "chat: connection lost; connecting again ({} line(s) to resend)",
                outbox.pending()
            );
        }
    }
}

async fn sleep(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn send_all(
    session: &Session,
    frames: Vec<chunkcast_protocol::wire::Chat>,
) -> Result<(), ClientError> {
    for f in frames {
        session.chat(f).await?;
    }
    Ok(())
}

/// A session, trying again (100 ms, doubling to 2 s) until [`ChatOptions::reconnect_for`]
/// has passed without one; `None` if cancelled meanwhile. The first connection is not
/// retried: a wrong address or token is the user's to fix.
async fn reconnect(
    url: &Url,
    connect: &ConnectOptions,
    opts: &ChatOptions,
    made: u32,
) -> Result<Option<Session>, ClientError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            biased;
            () = opts.cancel.cancelled() => return Ok(None),
            s = Session::connect(url, connect) => s,
        };
        match attempt {
            Ok(s) => {
                if made > 0 && opts.notes {
                    eprintln!("chat: connected again");
                }
                return Ok(Some(s));
            }
            Err(e) if made == 0 || started.elapsed() >= opts.reconnect_for => return Err(e),
            Err(_) => {}
        }
        tokio::select! {
            () = opts.cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A line as `call --chat` prints it: the writer's send time (UTC) and how long it took.
pub fn format_line(line: &ChatLine) -> String {
    let since = line
        .sent_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let missed = if line.missed > 0 {
        format!(" ({} earlier line(s) lost)", line.missed)
    } else {
        String::new()
    };
    format!(
        "[{:02}:{:02}:{:02}.{:03} +{} ms] peer: {}{missed}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis(),
        line.latency.as_millis(),
        line.text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let (short, cut) = clip("hi".into());
        assert_eq!((short.as_str(), cut), ("hi", false));
        let long = "é".repeat(MAX_CHAT_TEXT);
        let (c, cut) = clip(long);
        assert!(cut && c.len() <= MAX_CHAT_TEXT && c.len() >= MAX_CHAT_TEXT - 1);
        assert!(c.chars().all(|ch| ch == 'é'));
    }

    #[test]
    fn a_line_shows_its_utc_send_time_and_latency() {
        let line = ChatLine {
            author: 2,
            mine: false,
            seq: 1,
            sent_at: SystemTime::UNIX_EPOCH + Duration::from_millis(3_723_004),
            latency: Duration::from_millis(42),
            text: "hello".into(),
            missed: 0,
        };
        assert_eq!(format_line(&line), "[01:02:03.004 +42 ms] peer: hello");
    }
}
