//! Live channels (`live/NAME`) and call rooms (`call/ROOM/TRACK`): the async glue around the
//! sans-IO fan-out in [`chunkcast_protocol::fanout`].
//!
//! A publisher's chunks arrive on its connection's route and are pushed, by reference, into
//! every viewer's bounded queue; pushing never waits, so a slow viewer cannot slow the
//! publisher or the other viewers. Each viewer has a task that drains its queue into its own
//! connection, at its own pace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chunkcast_protocol::fanout::{Channel, Config as FanoutConfig, Fanned, Lagged, ViewerQueue};
use chunkcast_protocol::net::LinkTx;
use chunkcast_protocol::net::link::ChunkResult;
use chunkcast_protocol::wire::{Entry, ErrorFrame, FileDigest, Frame, Opened};
use chunkcast_protocol::{ChunkFlags, Codec, ErrorCode, StreamId, compress};
use tokio::sync::{Notify, mpsc};
use tracing::info;

/// Channels that may exist at once.
pub(crate) const MAX_CHANNELS: usize = 256;
/// Viewers one channel may have.
pub(crate) const MAX_VIEWERS: usize = 1024;
/// Chunks buffered from a publisher's link before its reader waits.
const PUBLISH_QUEUE: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry of channels and rooms.
pub(crate) struct Live {
    config: FanoutConfig,
    channels: Mutex<HashMap<String, Arc<Hub>>>,
    rooms: Mutex<HashMap<String, [Option<u64>; 2]>>,
}

struct Hub {
    name: String,
    state: Mutex<HubState>,
    published: Notify,
}

struct HubState {
    channel: Channel,
    publisher: Option<u64>,
    viewers: Vec<Arc<Viewer>>,
    /// Subscribers waiting for a publisher: viewers too, for listings.
    waiting: u32,
}

struct Viewer {
    queue: Mutex<ViewerQueue>,
    ready: Notify,
    end: Mutex<Option<(ErrorCode, String)>>,
}

impl Viewer {
    fn close(&self, code: ErrorCode, message: String) {
        lock(&self.end).get_or_insert((code, message));
        self.ready.notify_one();
    }
}

/// Who asks for which channel, on which stream.
pub(crate) struct Request<'a> {
    pub(crate) session: u64,
    pub(crate) request: u32,
    pub(crate) stream: StreamId,
    pub(crate) channel: &'a str,
}

/// A request's failure, as sent to the client.
pub(crate) type Refusal = (ErrorCode, String);

impl Live {
    pub(crate) fn new(config: FanoutConfig) -> Self {
        Self {
            config,
            channels: Mutex::default(),
            rooms: Mutex::default(),
        }
    }

    /// Maps a requested channel to the hub behind it: `live/NAME` as is; `call/ROOM/TRACK` to
    /// the caller's own leg when publishing, or the other participant's when subscribing.
    fn hub_name(&self, channel: &str, session: u64, publish: bool) -> Result<String, Refusal> {
        let bad = || {
            (
                ErrorCode::BadRequest,
                format!(
                    "bad channel {channel:?}: use live/NAME or call/ROOM/TRACK (letters, digits, '-', '_', '.')"
                ),
            )
        };
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && p != "."
                && p != ".."
        };
        let parts: Vec<&str> = channel.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["live", name] if ok_part(name) => Ok(format!("live/{name}")),
            ["call", room, track] if ok_part(room) && ok_part(track) => {
                let mut rooms = lock(&self.rooms);
                if !rooms.contains_key(*room) && rooms.len() >= MAX_CHANNELS {
                    return Err((ErrorCode::Busy, "too many call rooms".into()));
                }
                let slots = rooms.entry((*room).to_owned()).or_default();
                let mine = match slots.iter().position(|s| *s == Some(session)) {
                    Some(i) => i,
                    None => match slots.iter().position(Option::is_none) {
                        Some(i) => {
                            slots[i] = Some(session);
                            i
                        }
                        None => {
                            return Err((
                                ErrorCode::RoomFull,
                                format!("room {room} already has two participants"),
                            ));
                        }
                    },
                };
                let leg = if publish { mine } else { 1 - mine };
                Ok(format!("call/{room}#{leg}/{track}"))
            }
            _ => Err(bad()),
        }
    }

    fn hub(&self, name: &str) -> Result<Arc<Hub>, Refusal> {
        let mut channels = lock(&self.channels);
        if let Some(h) = channels.get(name) {
            return Ok(h.clone());
        }
        if channels.len() >= MAX_CHANNELS {
            return Err((
                ErrorCode::Busy,
                format!("too many live channels (limit {MAX_CHANNELS})"),
            ));
        }
        let hub = Arc::new(Hub {
            name: name.to_owned(),
            state: Mutex::new(HubState {
                channel: Channel::new(self.config),
                publisher: None,
                viewers: Vec::new(),
                waiting: 0,
            }),
            published: Notify::new(),
        });
        channels.insert(name.to_owned(), hub.clone());
        Ok(hub)
    }

    /// The channels under `live/`, with their viewer counts.
    pub(crate) fn list(&self) -> Vec<Entry> {
        let channels = lock(&self.channels);
        let mut out: Vec<Entry> = channels
            .values()
            .filter(|h| h.name.starts_with("live/"))
            .map(|h| {
                let s = lock(&h.state);
                Entry {
                    path: h.name.clone(),
                    codec: s.channel.codec().unwrap_or(Codec::Bytes),
                    size: None,
                    duration_us: None,
                    viewers: s.viewers.len() as u32 + s.waiting,
                }
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// A connection ended: free its call-room seats.
    pub(crate) fn leave(&self, session: u64) {
        let mut rooms = lock(&self.rooms);
        for slots in rooms.values_mut() {
            for s in slots.iter_mut() {
                if *s == Some(session) {
                    *s = None;
                }
            }
        }
        rooms.retain(|_, s| s.iter().any(Option::is_some));
    }

    /// Starts relaying a publisher. `chunks` is the route of its stream on its connection.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        tx: &LinkTx,
        at: Request<'_>,
        codec: Codec,
        max_payload: usize,
    ) -> Result<(), Refusal> {
        let Request {
            session,
            request,
            stream,
            channel,
        } = at;
        let name = self.hub_name(channel, session, true)?;
        let hub = self.hub(&name)?;
        {
            let mut s = lock(&hub.state);
            if s.publisher.is_some() {
                return Err((
                    ErrorCode::Busy,
                    format!("{channel} already has a publisher"),
                ));
            }
            s.publisher = Some(session);
            s.channel.begin(codec);
            for v in &s.viewers {
                lock(&v.queue).set_codec(codec);
            }
        }
        hub.published.notify_waiters();
        let chunks = tx.route(stream, PUBLISH_QUEUE);
        let opened = live_opened(request, stream, codec, (0, 0), max_payload as u32);
        if tx.send(Frame::Opened(opened)).await.is_err() {
            lock(&hub.state).publisher = None;
            return Ok(());
        }
        info!(channel = %name, session, "publisher started");
        tokio::spawn(relay(hub, chunks, max_payload));
        Ok(())
    }

    /// Starts sending a channel to a viewer on `stream`, from the latest keyframe.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        tx: LinkTx,
        at: Request<'_>,
    ) -> Result<tokio::task::JoinHandle<()>, Refusal> {
        let Request {
            session,
            request,
            stream,
            channel,
        } = at;
        let name = self.hub_name(channel, session, false)?;
        let hub = self.hub(&name)?;
        if lock(&hub.state).viewers.len() >= MAX_VIEWERS {
            return Err((
                ErrorCode::Busy,
                format!("{channel} has its maximum of {MAX_VIEWERS} viewers"),
            ));
        }
        let config = self.config;
        Ok(tokio::spawn(async move {
            // Wait for a publisher, if there is none yet.
            lock(&hub.state).waiting += 1;
            let waiting = WaitGuard(&hub);
            let (viewer, opened) = loop {
                let published = hub.published.notified();
                {
                    let mut s = lock(&hub.state);
                    if let Some(codec) = s.channel.codec().filter(|_| s.publisher.is_some()) {
                        let mut q = ViewerQueue::new(config, Some(codec), stream);
                        let backlog = s.channel.backlog(stream);
                        let start_seq = backlog
                            .first()
                            .map_or(s.channel.next_seq(), |f| f.chunk.seq);
                        for f in &backlog {
                            let _ = q.push(f);
                        }
                        let v = Arc::new(Viewer {
                            queue: Mutex::new(q),
                            ready: Notify::new(),
                            end: Mutex::new(None),
                        });
                        s.viewers.push(v.clone());
                        let start_offset = backlog.first().map_or(0, |f| f.chunk.offset);
                        let start = (start_seq, start_offset);
                        let opened = live_opened(request, stream, codec, start, 0);
                        break (v, opened);
                    }
                }
                published.await;
            };
            drop(waiting);
            serve_viewer(&hub, &tx, viewer, opened).await;
        }))
    }
}

/// Counts a subscriber as waiting until dropped (also when its task is aborted).
struct WaitGuard<'a>(&'a Hub);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.0.state);
        s.waiting = s.waiting.saturating_sub(1);
    }
}

async fn serve_viewer(hub: &Hub, tx: &LinkTx, viewer: Arc<Viewer>, opened: Opened) {
    let stream = opened.stream;
    let detach = || {
        lock(&hub.state)
            .viewers
            .retain(|v| !Arc::ptr_eq(v, &viewer))
    };
    if tx.send(Frame::Opened(opened)).await.is_err() {
        return detach();
    }
    let Ok(mut media) = tx.open_media().await else {
        return detach();
    };
    loop {
        let ready = viewer.ready.notified();
        let next = lock(&viewer.queue).pop();
        match next {
            Some(chunk) => {
                let last = chunk.has(ChunkFlags::END_OF_STREAM);
                if media.send(chunk).await.is_err() {
                    break;
                }
                if last {
                    let _ = media.finish().await;
                    break;
                }
            }
            None => {
                let end = lock(&viewer.end).take();
                if let Some((code, message)) = end {
                    media.abort();
                    let _ = tx
                        .send(Frame::Close {
                            stream,
                            code,
                            message,
                        })
                        .await;
                    break;
                }
                ready.await;
            }
        }
    }
    detach();
}

async fn relay(hub: Arc<Hub>, mut chunks: mpsc::Receiver<ChunkResult>, max_payload: usize) {
    let mut ended = false;
    while let Some(item) = chunks.recv().await {
        let Ok(chunk) = item else { continue }; // corrupted in transit: dropped, as loss
        let Ok(chunk) = compress::decompress(chunk, max_payload) else {
            continue;
        };
        let eos = chunk.has(ChunkFlags::END_OF_STREAM);
        {
            let mut s = lock(&hub.state);
            let stream = StreamId(0);
            let fanned = s.channel.ingest(chunk, stream);
            fan_out(&mut s, &fanned);
            if eos {
                let end = s.channel.end_chunk(stream);
                fan_out(
                    &mut s,
                    &Fanned {
                        chunk: end,
                        starts_unit: true,
                    },
                );
                s.publisher = None;
                ended = true;
            }
        }
        if ended {
            break;
        }
    }
    if !ended {
        // The publisher's connection went away mid-stream.
        let mut s = lock(&hub.state);
        s.publisher = None;
        for v in s.viewers.drain(..) {
            v.close(
                ErrorCode::PublisherLost,
                format!("the publisher of {} went away; it may come back", hub.name),
            );
        }
    }
    let how = if ended {
        "end of stream"
    } else {
        "connection lost"
    };
    info!(channel = %hub.name, how, "publisher stopped");
}

fn fan_out(s: &mut HubState, f: &Fanned) {
    s.viewers.retain(|v| {
        let pushed = lock(&v.queue).push(f);
        match pushed {
            Ok(()) => {
                v.ready.notify_one();
                true
            }
            Err(Lagged { drops, .. }) => {
                v.close(ErrorCode::Lagged, format!("too slow for this live channel: {drops} chunks dropped; reconnect to continue"));
                false
            }
        }
    });
}

/// The `OPENED` that acknowledges a publish or a subscription: a live stream has no length,
/// chunk count, duration or digest.
fn live_opened(
    request: u32,
    stream: StreamId,
    codec: Codec,
    (start_seq, start_offset): (u64, u64),
    chunk_size: u32,
) -> Opened {
    Opened {
        request,
        stream,
        codec,
        total_len: None,
        chunk_count: None,
        duration_us: None,
        digest: FileDigest::None,
        start_seq,
        start_offset,
        chunk_size,
    }
}

/// Builds the ERROR frame for a refused request.
pub(crate) fn refusal(request: u32, (code, message): Refusal) -> Frame {
    Frame::Error(ErrorFrame {
        request,
        code,
        message,
    })
}
