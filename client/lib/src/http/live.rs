//! `chunkcast watch http(s)://HOST:PORT/live/NAME`: a live channel over HTTP.
//!
//! The channel's index (`/v1/live/NAME/index.json`) names its run, codec, init chunks and
//! latest segments; a viewer fetches the init chunks, then each chunk from the last
//! segment's start, in order, with one request ahead of the one it waits for. A request for
//! a chunk not yet published blocks on the server until it is (at most 10 s), so viewers do
//! not poll, and a cache in front collapses every viewer's request for a chunk into one.
//!
//! A [`Feed`] is one such run of chunks, and what [`crate::play::Player`] plays in place of
//! a native subscription; when the publisher goes quiet or is replaced, or the channel
//! starts a new run, the feed ends as a native subscription does (`publisher lost`) and
//! [`Channel::next_feed`] picks up where it ended, like a native subscription made again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chunkcast_protocol::wire::codec::CHUNK_OVERHEAD;
use chunkcast_protocol::wire::{DEFAULT_MAX_PAYLOAD, FileDigest, Opened};
use chunkcast_protocol::{Chunk, ChunkFlags, Codec, ErrorCode, Frame, StreamId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{HttpClient, bad, codec_from_json, encode_path, ended_reason};
use crate::error::ClientError;

/// Chunk requests a feed keeps open: the one it waits for and one ahead, so that the next
/// chunk's request is on its way while this one's bytes arrive (and blocks on the server
/// until it is published).
pub const AHEAD: usize = 2;

/// Chunks a feed holds for its player: a second of 20 ms audio blocks, a few seconds of
/// video; a player that stops taking them stops the requests.
const FEED_QUEUE: usize = 64;

/// Times a viewer starting on a channel asks again (for a fresh index) when the init URL it
/// was given is no longer the channel's.
const STALE_INIT: u32 = 8;

/// How long to wait before asking again when the channel does not exist (yet) or the
/// server cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

/// Failed requests in a row (the path, not the server's answer) before a feed reports the
/// channel lost to its player, which then waits for it as for a lost publisher.
const ATTEMPTS: u32 = 3;

/// A live channel's index, checked (`GET /v1/live/NAME/index.json`).
#[derive(Debug, Clone)]
pub struct LiveIndex {
    /// This server life's id of the channel: chunk URLs of another run never alias.
    pub run: String,
    /// What the channel carries.
    pub codec: Codec,
    /// Where its init chunks are, if it has any.
    pub init_url: Option<String>,
    /// The first seq of each recent segment, oldest first.
    pub segments: Vec<u64>,
    /// The seq the next published chunk will have.
    pub next_seq: u64,
    /// Whether the channel ended.
    pub ended: bool,
    /// Chunk URLs, with `{seq}` where each chunk's number goes.
    pub chunk_url: String,
}

#[derive(Debug, serde::Deserialize)]
struct LiveIndexJson {
    version: u32,
    run: String,
    codec: serde_json::Value,
    #[serde(default)]
    init_url: Option<String>,
    segments: Vec<SegmentJson>,
    next_seq: u64,
    #[serde(default)]
    ended: bool,
    chunk_url: String,
}

#[derive(Debug, serde::Deserialize)]
struct SegmentJson {
    first_seq: u64,
}

impl LiveIndex {
    fn from_json(j: LiveIndexJson) -> Result<Self, ClientError> {
        if j.version != 1 {
            return Err(bad(format!(
                "live index version {} (this client reads 1)",
                j.version
            )));
        }
        let codec = codec_from_json(&j.codec).map_err(|e| bad(format!("live index codec: {e}")))?;
        if !j.chunk_url.starts_with('/') || !j.chunk_url.contains("{seq}") {
            return Err(bad(format!("live index chunk_url {:?}", j.chunk_url)));
        }
        let init_url = j.init_url.filter(|u| !u.is_empty());
        if init_url.as_ref().is_some_and(|u| !u.starts_with('/')) {
            return Err(bad(format!("live index init_url {init_url:?}")));
        }
        Ok(Self {
            run: j.run,
            codec,
            init_url,
            segments: j.segments.iter().map(|s| s.first_seq).collect(),
            next_seq: j.next_seq,
            ended: j.ended,
            chunk_url: j.chunk_url,
        })
    }

    /// Where a viewer starts: the last segment's first chunk (a keyframe), or the next chunk
    /// if no segment is complete yet.
    pub fn start_seq(&self) -> u64 {
        self.segments.last().copied().unwrap_or(self.next_seq)
    }
}

/// Where a channel's feed stands: what the next feed continues from.
#[derive(Debug, Clone)]
struct Position {
    run: String,
    seq: u64,
    codec: Codec,
    chunk_url: String,
}

impl Position {
    fn url(&self, seq: u64) -> String {
        self.chunk_url.replace("{seq}", &seq.to_string())
    }
}

/// A live channel on an HTTP server (or a cache in front of it).
#[derive(Debug)]
pub struct Channel {
    client: HttpClient,
    /// `live/NAME`.
    channel: String,
    /// The index's path.
    index_path: String,
    /// Where the last feed stopped.
    at: Mutex<Option<Position>>,
}

/// The lock, whatever a panicking holder left (a position is always whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error that makes a player wait for the channel as for a lost publisher.
fn lost(message: String) -> ClientError {
    ClientError::Server {
        code: ErrorCode::PublisherLost,
        message,
    }
}

/// How a channel's end reads: a clean end (`None`) when the publisher ended it or went for
/// good, else the error its viewers get (the publisher's input broke, ...).
fn ended(e: &ClientError, reason: String) -> Option<ClientError> {
    match e.code() {
        None | Some(ErrorCode::None | ErrorCode::PublisherLost) => {
            tracing::info!("channel ended: {reason}");
            None
        }
        Some(code) => Some(ClientError::Server {
            code,
            message: reason,
        }),
    }
}

impl Channel {
    /// The channel `live/NAME` (or `NAME`) of the server `client` talks to.
    pub fn new(client: HttpClient, channel: &str) -> Self {
        let name = channel.trim_matches('/');
        let name = name.strip_prefix("live/").unwrap_or(name);
        Self {
            client,
            channel: format!("live/{name}"),
            index_path: format!("/v1/live/{}/index.json", encode_path(name)),
            at: Mutex::new(None),
        }
    }

    /// `live/NAME`.
    pub fn name(&self) -> &str {
        &self.channel
    }

    /// The channel's index.
    pub async fn index(&self) -> Result<LiveIndex, ClientError> {
        LiveIndex::from_json(self.client.json(&self.index_path).await?)
    }

    /// The next feed: from the last segment of the current run the first time (or when the
    /// channel started a new run), else from where the last feed stopped, once a chunk is
    /// there. Waits while the channel does not exist, has ended without being followed, or
    /// the server cannot be reached; the caller bounds how long.
    pub async fn next_feed(self: &Arc<Self>) -> Result<Feed, ClientError> {
        // Init URLs that were no longer the channel's when asked for (the index named them
        // a moment before, or a cache's copy of it is up to a second old).
        let mut stale_init = 0;
        loop {
            let after = lock(&self.at).clone();
            let index = match self.index().await {
                Ok(i) => i,
                Err(e) if waits(&e) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match after {
                Some(p) if p.run == index.run => {
                    // The same run: go on where the last feed stopped, once there is a chunk
                    // there (a blocking request: no polling while the channel is quiet).
                    match self.client.frames(&p.url(p.seq), MAX_FRAME, MAX_BODY).await {
                        Ok(frames) => {
                            let first = one_chunk(frames, p.seq)?;
                            return Ok(self.spawn(p, Some(first), Vec::new()));
                        }
                        // Nothing yet after the server's whole wait: wait again.
                        Err(e) if e_status(&e) == Some(503) => {}
                        Err(e) if waits(&e) => tokio::time::sleep(RETRY).await,
                        Err(e) if e_status(&e) == Some(410) => {
                            if let Some(reason) = ended_reason(&e) {
                                return match ended(&e, reason) {
                                    None => Ok(Feed::over(p.codec)),
                                    Some(err) => Err(err),
                                };
                            }
                            // Evicted meanwhile: start again from the index.
                            *lock(&self.at) = None;
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ if index.ended => tokio::time::sleep(RETRY).await,
                _ => {
                    let init = match &index.init_url {
                        None => Vec::new(),
                        Some(url) => match self.init(url).await {
                            Ok(init) => init,
                            Err(e) if e_status(&e) == Some(410) && stale_init < STALE_INIT => {
                                stale_init += 1;
                                tokio::time::sleep(RETRY / 4).await;
                                continue;
                            }
                            Err(e) if waits(&e) => {
                                tokio::time::sleep(RETRY).await;
                                continue;
                            }
                            Err(e) => return Err(e),
                        },
                    };
                    let p = Position {
                        run: index.run.clone(),
                        seq: index.start_seq(),
                        codec: index.codec,
                        chunk_url: index.chunk_url.clone(),
                    };
                    *lock(&self.at) = Some(p.clone());
                    return Ok(self.spawn(p, None, init));
                }
            }
        }
    }

    fn spawn(self: &Arc<Self>, p: Position, first: Option<Chunk>, init: Vec<Chunk>) -> Feed {
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        let opened = opened(p.codec, p.seq);
        let task = tokio::spawn(follow(Arc::clone(self), p, first, init, tx));
        Feed {
            opened,
            rx,
            task,
            done: false,
        }
    }

    /// Fetches chunk `seq` in a task of its own, so that the next one's request is open while
    /// this one's bytes arrive.
    fn request(&self, p: &Position, seq: u64) -> JoinHandle<Result<Vec<Frame>, ClientError>> {
        let client = self.client.clone();
        let url = p.url(seq);
        tokio::spawn(async move { client.frames(&url, MAX_FRAME, MAX_BODY).await })
    }

    /// The init chunks at `url`.
    async fn init(&self, url: &str) -> Result<Vec<Chunk>, ClientError> {
        let frames = self.client.frames(url, MAX_FRAME, 16 * MAX_BODY).await?;
        frames
            .into_iter()
            .map(|f| match f {
                Frame::Chunk(c) if c.has(ChunkFlags::INIT) => Ok(c),
                other => Err(bad(format!(
                    "{url}: a {} frame among the init chunks",
                    other.name()
                ))),
            })
            .collect()
    }
}

/// Largest frame of a live body: the native protocol's largest chunk.
const MAX_FRAME: usize = DEFAULT_MAX_PAYLOAD as usize + CHUNK_OVERHEAD;
/// Largest body of one live chunk.
const MAX_BODY: usize = MAX_FRAME + 4;

fn e_status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::Http { status, .. } => Some(*status),
        _ => None,
    }
}

/// Whether a failed request means "not yet, ask again later": no such channel (yet), or
/// the path to the server failed.
fn waits(e: &ClientError) -> bool {
    matches!(e_status(e), Some(404 | 429 | 502 | 503 | 504))
        || matches!(
            e,
            ClientError::Lost(_) | ClientError::Connect { .. } | ClientError::Timeout(_)
        )
}

/// The one CHUNK frame of a live chunk's body, which must be `seq`'s.
fn one_chunk(frames: Vec<Frame>, seq: u64) -> Result<Chunk, ClientError> {
    let mut frames = frames.into_iter();
    match (frames.next(), frames.next()) {
        (Some(Frame::Chunk(c)), None) if c.seq == seq => Ok(c),
        (Some(Frame::Chunk(c)), None) => Err(bad(format!(
            "asked for live chunk {seq}, got chunk {}",
            c.seq
        ))),
        _ => Err(bad(format!("live chunk {seq}: not one CHUNK frame"))),
    }
}

/// What a feed says it carries, as a native subscription's `OPENED` would.
fn opened(codec: Codec, start_seq: u64) -> Opened {
    Opened {
        request: 0,
        stream: StreamId(1),
        codec,
        total_len: None,
        chunk_count: None,
        duration_us: None,
        digest: FileDigest::None,
        start_seq,
        start_offset: 0,
        chunk_size: 0,
        note: None,
    }
}

/// Follows one run of the channel from `p`, sending its chunks to `tx`, until the channel
/// ends, or the feed ends for its player to wait (an error with `publisher lost`).
async fn follow(
    ch: Arc<Channel>,
    p: Position,
    first: Option<Chunk>,
    init: Vec<Chunk>,
    tx: mpsc::Sender<Result<Chunk, ClientError>>,
) {
    let mut pending = VecDeque::new();
    let result = follow_run(&ch, p, first, init, &tx, &mut pending).await;
    for (_, h) in pending {
        h.abort();
    }
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}

type Pending = VecDeque<(u64, JoinHandle<Result<Vec<Frame>, ClientError>>)>;

fn abort(pending: &mut Pending) {
    for (_, h) in pending.drain(..) {
        h.abort();
    }
}

async fn follow_run(
    ch: &Arc<Channel>,
    mut p: Position,
    first: Option<Chunk>,
    init: Vec<Chunk>,
    tx: &mpsc::Sender<Result<Chunk, ClientError>>,
    pending: &mut Pending,
) -> Result<(), ClientError> {
    let send = |item| async move { tx.send(item).await.is_ok() };
    for c in init {
        if !send(Ok(c)).await {
            return Ok(());
        }
    }
    // Whether media came in this feed: an init chunk after it is a new publisher's.
    let mut media = false;
    let mut next = first;
    let mut failures = 0;
    loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => {
                while pending.len() < AHEAD {
                    let seq = p.seq + pending.len() as u64;
                    pending.push_back((seq, ch.request(&p, seq)));
                }
                let Some((seq, h)) = pending.pop_front() else {
                    continue;
                };
                let got = h
                    .await
                    .unwrap_or_else(|e| Err(ClientError::Lost(format!("request task: {e}"))));
                match got {
                    Ok(frames) => {
                        failures = 0;
                        one_chunk(frames, seq)?
                    }
                    Err(e) => {
                        abort(pending);
                        match handle_failure(ch, &mut p, e, &mut failures).await? {
                            Next::Retry => continue,
                            Next::End => return Ok(()),
                        }
                    }
                }
            }
        };
        let eos = chunk.has(ChunkFlags::END_OF_STREAM);
        // A new publisher's init chunks carry its headers; the empty INIT chunks around a
        // channel's end carry nothing and change nothing.
        if chunk.has(ChunkFlags::INIT) && media && !eos && !chunk.payload.is_empty() {
            // A new publisher on the same run: the player starts over with its init chunks,
            // as after a native subscription made again.
            abort(pending);
            *lock(&ch.at) = Some(p);
            return Err(lost(format!(
                "the publisher of {} was replaced",
                ch.channel
            )));
        }
        media |= !chunk.has(ChunkFlags::INIT);
        p.seq = chunk.seq + 1;
        *lock(&ch.at) = Some(p.clone());
        if !send(Ok(chunk)).await || eos {
            return Ok(());
        }
    }
}

/// What a feed does after a failed chunk request.
enum Next {
    /// Ask again (from `p.seq`, which may have moved ahead).
    Retry,
    /// The channel ended cleanly: the feed closes, its player's stream ends.
    End,
}

/// A chunk request failed: retry, jump ahead, end, or end the feed with an error saying
/// what its player should do (`publisher lost`: wait for the channel).
async fn handle_failure(
    ch: &Arc<Channel>,
    p: &mut Position,
    e: ClientError,
    failures: &mut u32,
) -> Result<Next, ClientError> {
    if let Some(reason) = ended_reason(&e) {
        return match ended(&e, reason) {
            None => Ok(Next::End),
            Some(err) => Err(err),
        };
    }
    match e_status(&e) {
        // Nothing published for the server's whole wait: the publisher went quiet (or the
        // server is full); the player waits for the channel as for a lost publisher.
        Some(503) => {
            *lock(&ch.at) = Some(p.clone());
            Err(lost(format!(
                "nothing was published on {} for 10 s ({e})",
                ch.channel
            )))
        }
        Some(410) => {
            // Evicted (this viewer fell behind the server's ring) or a new run.
            let index = ch.index().await?;
            if index.run != p.run {
                *lock(&ch.at) = None;
                return Err(lost(format!("{} started a new run", ch.channel)));
            }
            tracing::info!(
                from = p.seq,
                to = index.start_seq(),
                "fell behind: skipping ahead"
            );
            p.seq = index.start_seq().max(p.seq + 1);
            Ok(Next::Retry)
        }
        Some(404) => {
            *lock(&ch.at) = None;
            Err(lost(format!("{} is gone from the server", ch.channel)))
        }
        _ if waits(&e) && *failures + 1 < ATTEMPTS => {
            *failures += 1;
            tokio::time::sleep(RETRY).await;
            Ok(Next::Retry)
        }
        _ if waits(&e) => {
            *lock(&ch.at) = Some(p.clone());
            Err(lost(format!("{}: {e}", ch.channel)))
        }
        _ => Err(e),
    }
}

/// One run of a live channel's chunks over HTTP, as a player takes them.
#[derive(Debug)]
pub struct Feed {
    /// What the channel carries, as a native `OPENED` says it.
    pub opened: Opened,
    rx: mpsc::Receiver<Result<Chunk, ClientError>>,
    task: JoinHandle<()>,
    done: bool,
}

impl Drop for Feed {
    /// Stops the requests.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    /// A feed of a channel that ended: it ends at once.
    fn over(codec: Codec) -> Self {
        let (_, rx) = mpsc::channel(1);
        Self {
            opened: opened(codec, 0),
            rx,
            task: tokio::spawn(async {}),
            done: true,
        }
    }

    /// The next chunk; `None` once the channel ended.
    ///
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Chunk, ClientError>> {
        if self.done {
            return None;
        }
        let item = self.rx.recv().await;
        match &item {
            Some(Ok(c)) if c.has(ChunkFlags::END_OF_STREAM) => self.done = true,
            Some(Err(_)) | None => self.done = true,
            Some(Ok(_)) => {}
        }
        item
    }
}
