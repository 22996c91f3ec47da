//! Live channels (`live/NAME`) and call rooms (`call/ROOM/TRACK`): the async glue around the
//! sans-IO fan-out in [`chunkcast_media::fanout`].
//!
//! A publisher's chunks arrive on its connection's route and are pushed, by reference, into
//! every viewer's bounded queue; pushing never waits, so a slow viewer cannot slow the
//! publisher or the other viewers. Each viewer has a task that drains its queue into its own
//! connection, at its own pace.
//!
//! Lifecycle. Every user of a channel (a publisher's relay task, a subscriber's task, waiting
//! or attached) holds a drop guard, so that an aborted task lets go of the channel as surely as
//! one that returns. When the last one lets go, the channel leaves the table: at once if it
//! never had a publisher or its publisher ended it, after [`Limits::live_linger`] if its
//! publisher was lost (so that a restarting publisher continues the channel's `seq` and
//! `pts_us`). Only channels that have had a publisher count against [`MAX_CHANNELS`]; the ones
//! subscribers wait for are bounded by the connections and streams they hold.
//!
//! Tiers. On an edge (`--edge-of`), the first viewer of a `live/` channel starts an upstream
//! task that subscribes to the channel at its origin and feeds the hub as a local publisher's
//! relay would, keeping the origin's numbering; the hub then lingers like a lost publisher's,
//! and the upstream subscription is dropped when the hub goes, a linger after its last viewer.
//! While the upstream reconnects (origin or publisher restart, a move to another origin), the
//! edge's viewers stay attached and go on at the first keyframe after it is back. With a
//! directory (`--directory`), every publisher accepted here is registered there while live.
//!
//! [`Limits::live_linger`]: crate::config::Limits::live_linger

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chunkcast_client::error::ClientError;
use chunkcast_media::fanout::{
    Channel, Config as FanoutConfig, Fanned, Holes, Lagged, Place, ViewerQueue,
};
use chunkcast_protocol::wire::{Entry, ErrorFrame, FileDigest, Frame, Opened};
use chunkcast_protocol::{ChunkFlags, Codec, ErrorCode, StreamId, compress};
use chunkcast_transport::LinkTx;
use chunkcast_transport::link::ChunkResult;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::directory::Directory;
use crate::edge::Edge;
use crate::metrics::LiveGauges;

/// Channels that have a publisher, or had one and linger, at once.
pub(crate) const MAX_CHANNELS: usize = 256;
/// Relay paths an edge remembers as accepted upstream per channel; past it, a relay joining
/// through a new one is checked each time.
const MAX_VETTED: usize = 16;
/// Viewers one channel may have, waiting subscribers included.
pub(crate) const MAX_VIEWERS: usize = 1024;
/// Call rooms one connection may hold seats in: a call takes one, and a connection naming
/// room after room must not fill the room table while it lives.
const MAX_ROOMS_PER_CONNECTION: usize = 4;
/// Chunks buffered from a publisher's link before its reader waits.
const PUBLISH_QUEUE: usize = 64;
/// Time an evicted publisher's connection has to take the `CLOSE` that tells it so.
const EVICTED_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// An edge's first wait before it tries its origin again; doubled up to [`UPSTREAM_RETRY_MAX`].
const UPSTREAM_RETRY: Duration = Duration::from_millis(100);
/// An edge's longest wait between tries: an origin back from a restart is found within it.
const UPSTREAM_RETRY_MAX: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry of channels and rooms.
pub(crate) struct Live {
    config: FanoutConfig,
    linger: Duration,
    /// Lock order: this before any hub's state.
    table: Mutex<Table>,
    rooms: Mutex<HashMap<String, [Option<u64>; 2]>>,
    gauges: LiveGauges,
    next_publisher: AtomicU64,
    /// This server is an edge: `live/` channels come from the tier above.
    edge: Option<Arc<Edge>>,
    /// Publishers accepted here are registered in this directory, under this URL.
    registry: Option<(Arc<Directory>, String)>,
    /// `--record DIR`: every publisher run of every channel is saved there.
    record: std::sync::OnceLock<std::path::PathBuf>,
}

#[derive(Default)]
struct Table {
    hubs: HashMap<String, Arc<Hub>>,
    /// Hubs counted against [`MAX_CHANNELS`] (see [`HubState::counted`]).
    published: usize,
}

struct Hub {
    name: String,
    /// Chosen at random when the hub is created: the HTTP interface's `run`, so that URLs
    /// cached from an earlier life of the channel never alias this one's.
    run: u64,
    state: Mutex<HubState>,
    published: Notify,
}

struct HubState {
    channel: Channel,
    publisher: Option<Publishing>,
    viewers: Vec<Arc<Viewer>>,
    /// Subscribers waiting for a publisher: viewers too, for listings.
    waiting: u32,
    /// Has had a publisher: counted against [`MAX_CHANNELS`], and lingers when left.
    counted: bool,
    /// The last publisher ended the channel (`END_OF_STREAM`).
    ended: bool,
    /// Bumped each time the hub falls idle: a linger timer only removes the hub it was set
    /// for if nobody used it in between.
    idle_epoch: u64,
    /// Out of the table: whoever still holds it must not register on it.
    removed: bool,
    /// An edge's upstream subscription for this channel, running: cancelled when the hub
    /// goes.
    upstream: Option<CancellationToken>,
    /// The upstream is subscribed and relaying: viewers may attach.
    relaying: bool,
    /// Why the upstream gave up: told to the subscribers waiting for it.
    refused: Option<Refusal>,
    /// Relay paths the tier above accepted for this channel (the upstream's own first): a
    /// relay that joins through another is checked upstream before it is served.
    vetted: Vec<Arc<[u64]>>,
}

impl HubState {
    fn idle(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty() && self.waiting == 0
    }
}

/// The publisher a hub relays now.
struct Publishing {
    id: u64,
    /// Cancelled when another publisher takes the channel over.
    evict: CancellationToken,
}

pub(crate) struct Viewer {
    queue: Mutex<ViewerQueue>,
    ready: Notify,
    end: Mutex<Option<(ErrorCode, String)>>,
    /// The server's own recorder of one publisher run (`--record`), which a takeover ends.
    recorder: bool,
}

impl Viewer {
    /// The next chunk queued for this viewer, or why it was closed once none is left, or
    /// `Ok(None)`: wait for [`Viewer::ready`].
    pub(crate) fn next(&self) -> Result<Option<chunkcast_protocol::Chunk>, (ErrorCode, String)> {
        if let Some(c) = lock(&self.queue).pop() {
            return Ok(Some(c));
        }
        match lock(&self.end).take() {
            Some(why) => Err(why),
            None => Ok(None),
        }
    }

    /// Resolves once something was queued or the viewer closed (create it before
    /// [`Viewer::next`], so that nothing is missed in between).
    pub(crate) fn ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }
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
    /// The client is an edge relay (it offered `RELAY`): counted apart.
    pub(crate) relay: bool,
    /// The relays the request came through (the client's `RELAY` path), passed upstream.
    pub(crate) path: &'a [u64],
}

/// A request's failure, as sent to the client.
pub(crate) type Refusal = (ErrorCode, String);

impl Live {
    /// A registry whose channels linger `linger` after their publisher is lost, keeping
    /// `gauges` up to date.
    pub(crate) fn new(config: FanoutConfig, linger: Duration, gauges: LiveGauges) -> Self {
        Self {
            config,
            linger,
            table: Mutex::default(),
            rooms: Mutex::default(),
            gauges,
            next_publisher: AtomicU64::new(1),
            edge: None,
            registry: None,
            record: std::sync::OnceLock::new(),
        }
    }

    /// Makes this an edge: `live/` channels are subscribed to upstream.
    pub(crate) fn with_edge(mut self, edge: Arc<Edge>) -> Self {
        self.edge = Some(edge);
        self
    }

    /// Registers every publisher accepted here in `directory`, as at `origin`.
    pub(crate) fn with_registry(mut self, directory: Arc<Directory>, origin: String) -> Self {
        self.registry = Some((directory, origin));
        self
    }

    /// The edge this server is, if it is one.
    pub(crate) fn edge(&self) -> Option<&Arc<Edge>> {
        self.edge.as_ref()
    }

    /// Records every publisher run of every channel into `dir` (see [`crate::record`]).
    pub(crate) fn record_into(&self, dir: std::path::PathBuf) {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("--record {}: {e}; recordings will fail", dir.display());
        }
        let _ = self.record.set(dir);
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
                let held = rooms
                    .iter()
                    .filter(|(r, slots)| r.as_str() != *room && slots.contains(&Some(session)))
                    .count();
                let seated = rooms.get(*room).is_some_and(|s| s.contains(&Some(session)));
                if !seated && held >= MAX_ROOMS_PER_CONNECTION {
                    return Err((
                        ErrorCode::Busy,
                        format!(
                            "this connection is in {held} call rooms already (limit {MAX_ROOMS_PER_CONNECTION})"
                        ),
                    ));
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

    /// The hub called `name`, created if missing. Creating costs no [`MAX_CHANNELS`] slot:
    /// the first publisher takes one.
    fn entry(&self, table: &mut Table, name: &str) -> Arc<Hub> {
        if let Some(h) = table.hubs.get(name) {
            return h.clone();
        }
        let hub = Arc::new(Hub {
            name: name.to_owned(),
            run: rand::random(),
            state: Mutex::new(HubState {
                channel: Channel::new(self.config),
                publisher: None,
                viewers: Vec::new(),
                waiting: 0,
                counted: false,
                ended: false,
                idle_epoch: 0,
                removed: false,
                upstream: None,
                relaying: false,
                refused: None,
                vetted: Vec::new(),
            }),
            published: Notify::new(),
        });
        table.hubs.insert(name.to_owned(), hub.clone());
        self.gauges.channels.set(table.hubs.len() as i64);
        hub
    }

    /// Decides the fate of a hub nobody may be using, with the table and its state locked:
    /// removed now, or left to linger (the epoch its timer must find unchanged).
    fn settle(&self, table: &mut Table, hub: &Arc<Hub>, s: &mut HubState) -> Option<u64> {
        if s.removed || !s.idle() {
            return None;
        }
        if s.counted && !s.ended && !self.linger.is_zero() {
            s.idle_epoch += 1;
            return Some(s.idle_epoch);
        }
        self.remove(table, hub, s);
        None
    }

    fn remove(&self, table: &mut Table, hub: &Arc<Hub>, s: &mut HubState) {
        if table
            .hubs
            .get(&hub.name)
            .is_some_and(|h| Arc::ptr_eq(h, hub))
        {
            table.hubs.remove(&hub.name);
        }
        s.removed = true;
        if let Some(up) = s.upstream.take() {
            up.cancel();
        }
        if s.counted {
            table.published -= 1;
        }
        self.gauges.channels.set(table.hubs.len() as i64);
        debug!(channel = %hub.name, "channel removed");
    }

    /// Someone let go of `hub`: removes it, or sets its linger timer, if nobody uses it now.
    fn release(self: &Arc<Self>, hub: &Arc<Hub>) {
        let epoch = {
            let mut table = lock(&self.table);
            let mut s = lock(&hub.state);
            self.settle(&mut table, hub, &mut s)
        };
        if let Some(epoch) = epoch {
            self.linger(hub, epoch);
        }
    }

    /// Removes `hub` after the linger unless it is used again meanwhile.
    fn linger(self: &Arc<Self>, hub: &Arc<Hub>, epoch: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime left to wait on (shutting down): nothing will come back for it.
            let mut table = lock(&self.table);
            let mut s = lock(&hub.state);
            if !s.removed && s.idle() {
                self.remove(&mut table, hub, &mut s);
            }
            return;
        };
        let live = Arc::downgrade(self);
        let hub = hub.clone();
        let linger = self.linger;
        rt.spawn(async move {
            tokio::time::sleep(linger).await;
            let Some(live) = Weak::upgrade(&live) else {
                return;
            };
            let mut table = lock(&live.table);
            let mut s = lock(&hub.state);
            if !s.removed && s.idle() && s.idle_epoch == epoch {
                live.remove(&mut table, &hub, &mut s);
            }
        });
    }

    /// The channels under `live/`, with their viewer counts.
    pub(crate) fn list(&self) -> Vec<Entry> {
        let table = lock(&self.table);
        let mut out: Vec<Entry> = table
            .hubs
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
                    note: None,
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

    /// Starts relaying a publisher; the returned task relays until the publisher ends the
    /// stream, its route closes (its connection went away, or it cancelled), or another
    /// publisher takes the channel over. A publisher of a channel that already has one takes
    /// it over: the server has one credential (its token, or none), so whoever may publish may
    /// replace a publisher that crashed and whose connection has not timed out yet.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        tx: &LinkTx,
        at: Request<'_>,
        codec: Codec,
        max_payload: usize,
    ) -> Result<(JoinHandle<()>, EndReason), Refusal> {
        let Request {
            session,
            request,
            stream,
            channel,
            relay: _,
            path: _,
        } = at;
        let name = self.hub_name(channel, session, true)?;
        if self.edge.is_some() && name.starts_with("live/") {
            return Err((
                ErrorCode::Relay,
                format!("this server is an edge: publish {name} at an origin"),
            ));
        }
        let id = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        let hub = {
            let mut table = lock(&self.table);
            let hub = self.entry(&mut table, &name);
            let mut s = lock(&hub.state);
            if !s.counted {
                if table.published >= MAX_CHANNELS {
                    self.settle(&mut table, &hub, &mut s);
                    return Err((
                        ErrorCode::Busy,
                        format!("too many live channels (limit {MAX_CHANNELS})"),
                    ));
                }
                s.counted = true;
                table.published += 1;
            }
            if let Some(old) = s.publisher.take() {
                info!(channel = %name, session, "a new publisher takes over");
                old.evict.cancel();
                self.gauges.evicted.inc();
                // The old run's recording ends here; the new run gets its own below.
                for v in s.viewers.iter().filter(|v| v.recorder) {
                    v.close(ErrorCode::None, "the publisher run ended".into());
                }
                s.viewers.retain(|v| !v.recorder);
            }
            s.publisher = Some(Publishing {
                id,
                evict: evict.clone(),
            });
            s.ended = false;
            s.channel.begin(codec);
            for v in &s.viewers {
                // Viewers of a publisher just replaced stay, and go on at the new one's first
                // keyframe.
                let mut q = lock(&v.queue);
                q.set_codec(codec);
                q.skip_to_keyframe();
            }
            let recorder = self.record.get().map(|dir| {
                let viewer = Arc::new(Viewer {
                    queue: Mutex::new(ViewerQueue::new(self.config, Some(codec), stream)),
                    ready: Notify::new(),
                    end: Mutex::new(None),
                    recorder: true,
                });
                s.viewers.push(viewer.clone());
                (dir.clone(), viewer)
            });
            drop(s);
            if let Some((dir, viewer)) = recorder {
                let attached = Attached {
                    live: self.clone(),
                    hub: hub.clone(),
                    viewer,
                };
                crate::record::spawn(dir, &name, id, codec, attached);
            }
            hub
        };
        hub.published.notify_waiters();
        // From here on, however this ends, the guard gives the channel back.
        let reason = EndReason::default();
        let mut guard = Relaying {
            live: self.clone(),
            hub,
            id,
            ended: false,
            reason: reason.clone(),
        };
        let mut chunks = tx.route(stream, PUBLISH_QUEUE);
        // Audio comes as datagrams, and a call's intra-only video over QUIC a unit per QUIC
        // stream: the holes and late chunks to watch for are theirs (a unit reset or overtaken
        // on the way). Other video comes in order on one stream, and a gap in its publisher's
        // numbering is no loss on the way: the channel numbers it on without one.
        let holes = codec.kind() == chunkcast_protocol::MediaKind::Audio
            || (name.starts_with("call/")
                && tx.quic().is_some()
                && chunkcast_transport::link::unit_streams_for(&codec));
        let opened = live_opened(request, stream, codec, (0, 0), max_payload as u32);
        if tx.send(Frame::Opened(opened)).await.is_err() {
            tx.unroute(stream);
            return Err((ErrorCode::Internal, "connection lost".into()));
        }
        info!(channel = %name, session, "publisher started");
        let tx = tx.clone();
        let registry = self.registry.clone().filter(|_| name.starts_with("live/"));
        let task = tokio::spawn(async move {
            let registered = registry.as_ref().map(|(dir, origin)| {
                let (dir, origin, name) = (dir.clone(), origin.clone(), name.clone());
                AbortOnDrop(tokio::spawn(async move {
                    dir.register(&name, &origin).await;
                }))
            });
            let why = relay(&mut guard, &mut chunks, &evict, max_payload, holes).await;
            drop(registered);
            if let (RelayEnd::Ended, Some((dir, origin))) = (why, &registry) {
                dir.unregister(&name, origin).await;
            }
            if why == RelayEnd::Evicted {
                drop(guard);
                let close = Frame::Close {
                    stream,
                    code: ErrorCode::Busy,
                    message: format!("{name} was taken over by another publisher"),
                };
                let _ = tokio::time::timeout(EVICTED_CLOSE_WAIT, tx.send(close)).await;
                // What it sent before it heard is discarded here, not taken for a protocol
                // error on its connection; the route ends with its stream or connection.
                while chunks.recv().await.is_some() {}
            }
        });
        Ok((task, reason))
    }

    /// Starts sending a channel to a viewer on `stream`, from the latest keyframe. The task
    /// waits for a publisher if there is none yet; aborting it at any point lets go of the
    /// channel.
    /// With `datagrams` (the viewer's connection agreed on `DATAGRAMS`), an audio channel's
    /// media chunks go as QUIC datagrams where they fit.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        tx: LinkTx,
        at: Request<'_>,
        datagrams: bool,
    ) -> Result<JoinHandle<()>, Refusal> {
        let Request {
            session,
            request,
            stream,
            channel,
            relay,
            path,
        } = at;
        let name = self.hub_name(channel, session, false)?;
        let hub = {
            let mut table = lock(&self.table);
            let hub = self.entry(&mut table, &name);
            let mut s = lock(&hub.state);
            if s.viewers.len() + s.waiting as usize >= MAX_VIEWERS {
                self.settle(&mut table, &hub, &mut s);
                return Err((
                    ErrorCode::Busy,
                    format!("{channel} has its maximum of {MAX_VIEWERS} viewers"),
                ));
            }
            s.waiting += 1;
            let mut vet = None;
            if let Some(edge) = self.edge.as_ref().filter(|_| name.starts_with("live/")) {
                // Counted against MAX_CHANNELS once relaying, as a publisher's channel is once
                // published: names nobody publishes cost no slot.
                if s.upstream.is_none() && s.publisher.is_none() {
                    let stop = CancellationToken::new();
                    s.upstream = Some(stop.clone());
                    s.refused = None;
                    s.ended = false;
                    // The upstream serves every later viewer too; the first one's path is the
                    // one a loop or an overlong chain shows in.
                    let path: Arc<[u64]> = path.into();
                    s.vetted = vec![path.clone()];
                    let task =
                        upstream(Arc::downgrade(self), hub.clone(), edge.clone(), path, stop);
                    tokio::spawn(task);
                } else if s.publisher.is_none() && !s.vetted.iter().any(|v| **v == *path) {
                    // A relay joining an upstream started for another path: the loop and hop
                    // rules of the tiers above must hold for its path too.
                    vet = Some((edge.clone(), Arc::<[u64]>::from(path)));
                }
            }
            drop(s);
            (hub, vet)
        };
        let (hub, vet) = hub;
        let relay_counted = relay.then(|| Counted::new(&self.gauges.relays));
        let waiting = Waiting {
            live: self.clone(),
            hub: hub.clone(),
        };
        let counted = Counted::new(&self.gauges.viewers);
        let live = self.clone();
        let config = self.config;
        Ok(tokio::spawn(async move {
            let _counted = (counted, relay_counted);
            if let Some((edge, path)) = vet {
                match edge.vet(&hub.name, &path).await {
                    Ok(()) => {
                        let mut s = lock(&hub.state);
                        if s.vetted.len() < MAX_VETTED && !s.vetted.contains(&path) {
                            s.vetted.push(path);
                        }
                    }
                    Err((code, message)) => {
                        drop(waiting);
                        let refusal = ErrorFrame {
                            request,
                            code,
                            message,
                        };
                        let _ = tx.send(Frame::Error(refusal)).await;
                        return;
                    }
                }
            }
            let (attached, opened) = loop {
                let published = hub.published.notified();
                let refused = lock(&hub.state).refused.clone();
                if let Some((code, message)) = refused {
                    drop(waiting);
                    let refusal = ErrorFrame {
                        request,
                        code,
                        message,
                    };
                    let _ = tx.send(Frame::Error(refusal)).await;
                    return;
                }
                {
                    let mut s = lock(&hub.state);
                    let source = s.publisher.is_some() || s.relaying;
                    if let Some(codec) = s.channel.codec().filter(|_| source) {
                        let mut q = ViewerQueue::new(config, Some(codec), stream);
                        let backlog = s.channel.backlog(stream);
                        let start_seq = backlog
                            .first()
                            .map_or(s.channel.next_seq(), |f| f.chunk.seq);
                        if backlog.iter().all(|f| f.chunk.has(ChunkFlags::INIT)) {
                            // No group cached to start with: start at the next keyframe.
                            q.skip_to_keyframe();
                        }
                        for f in &backlog {
                            let _ = q.push(f);
                        }
                        let viewer = Arc::new(Viewer {
                            queue: Mutex::new(q),
                            ready: Notify::new(),
                            end: Mutex::new(None),
                            recorder: false,
                        });
                        s.viewers.push(viewer.clone());
                        let attached = Attached {
                            live: live.clone(),
                            hub: hub.clone(),
                            viewer,
                        };
                        let start_offset = backlog.first().map_or(0, |f| f.chunk.offset);
                        let start = (start_seq, start_offset);
                        let opened = live_opened(request, stream, codec, start, 0);
                        break (attached, opened);
                    }
                }
                published.await;
            };
            // Attached before no longer waiting: the channel is never idle in between.
            drop(waiting);
            // A call's intra-only video goes a unit per QUIC stream, as it came (a lost packet
            // holds back one frame, not the frames behind it); audio as datagrams.
            let mode = if datagrams && chunkcast_transport::link::unit_streams_for(&opened.codec) {
                Delivery::Units
            } else if datagrams && opened.codec.kind() == chunkcast_protocol::MediaKind::Audio {
                Delivery::Datagrams
            } else {
                Delivery::Stream
            };
            // An edge's subscription: what it takes counts as this origin's output to edges.
            let counted = relay.then(|| live.gauges.relay_bytes.clone());
            serve_viewer(&tx, &attached.viewer, opened, mode, counted.as_ref()).await;
        }))
    }
}

/// A viewer attached for the HTTP interface: what it was handed at once, and its queue.
pub(crate) struct Tap {
    /// The hub's `run`.
    pub(crate) run: u64,
    /// What the channel carries.
    pub(crate) codec: Codec,
    /// The seq of the first chunk the viewer gets (the backlog's first, else the channel's
    /// next).
    pub(crate) start_seq: u64,
    /// The viewer, on the hub's list until dropped.
    pub(crate) attached: Attached,
    /// Counted in `chunkcast_live_viewers` while it lives, as the channel's listing counts it.
    _counted: Counted,
}

impl Live {
    /// Attaches a viewer to `live/NAME` for the HTTP interface if it has a source now (a
    /// publisher, or an edge's upstream relaying); `None` otherwise. The viewer's queue
    /// starts with the channel's backlog (init chunks, then the group since the last
    /// keyframe), as a native viewer's does.
    pub(crate) fn tap(self: &Arc<Self>, name: &str) -> Option<Tap> {
        let name = format!("live/{name}");
        let table = lock(&self.table);
        let hub = table.hubs.get(&name)?.clone();
        let mut s = lock(&hub.state);
        if s.viewers.len() + s.waiting as usize >= MAX_VIEWERS {
            return None;
        }
        let source = s.publisher.is_some() || s.relaying;
        let codec = s.channel.codec().filter(|_| source)?;
        let stream = StreamId(1);
        let mut q = ViewerQueue::new(self.config, Some(codec), stream);
        let backlog = s.channel.backlog(stream);
        if backlog.iter().all(|f| f.chunk.has(ChunkFlags::INIT)) {
            q.skip_to_keyframe();
        }
        for f in &backlog {
            let _ = q.push(f);
        }
        let start_seq = backlog
            .first()
            .map_or(s.channel.next_seq(), |f| f.chunk.seq);
        let viewer = Arc::new(Viewer {
            queue: Mutex::new(q),
            ready: Notify::new(),
            end: Mutex::new(None),
            recorder: false,
        });
        s.viewers.push(viewer.clone());
        drop(s);
        drop(table);
        Some(Tap {
            run: hub.run,
            codec,
            start_seq,
            _counted: Counted::new(&self.gauges.viewers),
            attached: Attached {
                live: self.clone(),
                hub,
                viewer,
            },
        })
    }
}

/// Aborts a task when dropped (a directory registration ends with its publisher's relay).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one upstream subscription ended.
enum UpstreamEnd {
    /// The origin's channel ended (`END_OF_STREAM`): so does this one.
    Ended,
    /// Lost or moved: try again (from the directory's answer then).
    Retry(String),
    /// The tier above cannot serve the channel: the waiting subscribers are told.
    Refused(Refusal),
}

/// An edge's upstream for `hub`: subscribes at the origin and relays into the hub until
/// `stop` (the hub went, a linger after its last viewer) or the channel ends; reconnects
/// (with a capped backoff) when it is lost.
fn upstream(
    live: Weak<Live>,
    hub: Arc<Hub>,
    edge: Arc<Edge>,
    path: Arc<[u64]>,
    stop: CancellationToken,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    // Boxed and typed: the task may start its own successor.
    Box::pin(upstream_task(live, hub, edge, path, stop))
}

async fn upstream_task(
    live: Weak<Live>,
    hub: Arc<Hub>,
    edge: Arc<Edge>,
    path: Arc<[u64]>,
    stop: CancellationToken,
) {
    let Some(gauges) = live.upgrade().map(|l| l.gauges.clone()) else {
        return;
    };
    let _running = Counted::new(&gauges.upstreams);
    let mut relayed_once = false;
    let mut wait = UPSTREAM_RETRY;
    let started = tokio::time::Instant::now();
    loop {
        let end = tokio::select! {
            () = stop.cancelled() => break,
            end = upstream_once(&live, &hub, &edge, &path, &gauges, &mut relayed_once) => end,
        };
        lock(&hub.state).relaying = false;
        match end {
            UpstreamEnd::Ended => break,
            // No origin has it yet: hold the subscribers, as a single server holds them until
            // a publisher comes, and look again (bounded: each look is a directory lookup).
            UpstreamEnd::Refused((ErrorCode::NotFound, _))
                if !relayed_once && started.elapsed() < edge.wait_publisher() =>
            {
                debug!(channel = %hub.name, "not published yet; looking again");
            }
            UpstreamEnd::Refused((ErrorCode::NotFound, message)) if !relayed_once => {
                let waited = edge.wait_publisher();
                let why = (
                    ErrorCode::NotFound,
                    if waited.is_zero() {
                        message
                    } else {
                        format!("{message} (looked for {} ms)", waited.as_millis())
                    },
                );
                info!(channel = %hub.name, "not published: {}", why.1);
                refuse_waiting(&hub, why);
                break;
            }
            UpstreamEnd::Refused(why) if !relayed_once => {
                info!(channel = %hub.name, "upstream refused: {}: {}", why.0, why.1);
                refuse_waiting(&hub, why);
                break;
            }
            UpstreamEnd::Refused((code, message)) => {
                warn!(channel = %hub.name, "upstream: {code}: {message}; retrying");
            }
            UpstreamEnd::Retry(why) => {
                debug!(channel = %hub.name, "upstream: {why}; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(UPSTREAM_RETRY_MAX);
    }
    let Some(live) = live.upgrade() else { return };
    // No longer subscribed: a later viewer starts another upstream. (Once stopped, the hub is
    // out of the table and its upstream slot was emptied by its removal.)
    let restart = {
        let mut s = lock(&hub.state);
        s.relaying = false;
        if stop.is_cancelled() {
            false
        } else {
            s.upstream = None;
            // Subscribers that came after the end and before this: a fresh upstream for them.
            let restart = !s.removed && s.waiting > 0 && s.refused.is_none();
            if restart {
                let again = CancellationToken::new();
                s.upstream = Some(again.clone());
                s.ended = false;
                let task = upstream(Arc::downgrade(&live), hub.clone(), edge, path, again);
                tokio::spawn(task);
            }
            restart
        }
    };
    if !restart {
        live.release(&hub);
    }
}

/// The tier above cannot serve `hub`: its subscribers (waiting, or attached) are told `why`.
fn refuse_waiting(hub: &Hub, why: Refusal) {
    let mut s = lock(&hub.state);
    s.refused = Some(why.clone());
    for v in s.viewers.drain(..) {
        v.close(why.0, why.1.clone());
    }
    drop(s);
    hub.published.notify_waiters();
}

/// One upstream subscription, from looking the origin up to its end.
async fn upstream_once(
    live: &Weak<Live>,
    hub: &Arc<Hub>,
    edge: &Edge,
    path: &[u64],
    gauges: &LiveGauges,
    relayed_once: &mut bool,
) -> UpstreamEnd {
    let name = hub.name.as_str();
    let origin = match edge.origin_of(name).await {
        Ok(o) => o,
        Err(why) => return UpstreamEnd::Refused(why),
    };
    let session = match edge.connect(&origin, path).await {
        Ok(s) => s,
        Err(e) => {
            return UpstreamEnd::Refused((
                ErrorCode::Relay,
                format!("origin {} unreachable: {e}", origin.authority()),
            ));
        }
    };
    let moved = async {
        match edge.recheck() {
            Some(every) => loop {
                tokio::time::sleep(every).await;
                if edge.moved(name, &origin).await {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    let relayed = async {
        let mut incoming = match session.subscribe(name).await {
            Ok(i) => i,
            Err(ClientError::Server { code, message }) => {
                return UpstreamEnd::Refused((code, format!("origin: {message}")));
            }
            Err(e) => return UpstreamEnd::Retry(e.to_string()),
        };
        let codec = incoming.opened.codec;
        {
            let Some(live) = live.upgrade() else {
                return UpstreamEnd::Ended;
            };
            let mut table = lock(&live.table);
            let mut s = lock(&hub.state);
            if !s.counted {
                if table.published >= MAX_CHANNELS {
                    return UpstreamEnd::Refused((
                        ErrorCode::Busy,
                        format!("too many live channels (limit {MAX_CHANNELS})"),
                    ));
                }
                s.counted = true;
                table.published += 1;
            }
            drop(table);
            s.channel.begin_relayed(codec);
            for v in &s.viewers {
                // As when a publisher is replaced: on at the first keyframe from here.
                let mut q = lock(&v.queue);
                q.set_codec(codec);
                q.skip_to_keyframe();
            }
            s.relaying = true;
        }
        *relayed_once = true;
        hub.published.notify_waiters();
        info!(channel = %name, origin = %origin.authority(), "upstream subscribed");
        let started = tokio::time::Instant::now();
        let mut pts0 = None;
        loop {
            let chunk = match incoming.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return UpstreamEnd::Retry(e.to_string()),
                None => return UpstreamEnd::Ended,
            };
            gauges.upstream_bytes.inc_by(chunk.payload.len() as u64);
            if !chunk.has(ChunkFlags::INIT) {
                // Behind real time: wall time since the subscription minus media time.
                let p0 = *pts0.get_or_insert(chunk.pts_us);
                let media = Duration::from_micros(chunk.pts_us.saturating_sub(p0));
                let lag = started.elapsed().saturating_sub(media);
                gauges.upstream_lag_ms.set(lag.as_millis() as i64);
            }
            let mut s = lock(&hub.state);
            let stream = StreamId(0);
            if chunk.has(ChunkFlags::END_OF_STREAM) {
                let end = s.channel.end_chunk(stream);
                fan_out(
                    &mut s,
                    &Fanned {
                        chunk: end,
                        starts_unit: true,
                    },
                );
                s.ended = true;
                return UpstreamEnd::Ended;
            }
            if s.channel.relayed_stale(&chunk) {
                continue;
            }
            let fanned = s.channel.ingest(chunk, stream);
            fan_out(&mut s, &fanned);
        }
    };
    let end = tokio::select! {
        end = relayed => end,
        () = moved => UpstreamEnd::Retry("the channel moved to another origin".into()),
    };
    drop(session);
    end
}

/// Holds a gauge up by one while alive.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a subscriber as waiting until dropped (also when its task is aborted).
struct Waiting {
    live: Arc<Live>,
    hub: Arc<Hub>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        {
            let mut s = lock(&self.hub.state);
            s.waiting = s.waiting.saturating_sub(1);
        }
        self.live.release(&self.hub);
    }
}

/// A viewer on a hub's list until dropped (also when its task is aborted).
pub(crate) struct Attached {
    live: Arc<Live>,
    hub: Arc<Hub>,
    viewer: Arc<Viewer>,
}

impl Attached {
    /// The viewer held.
    pub(crate) fn viewer(&self) -> &Viewer {
        &self.viewer
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        lock(&self.hub.state)
            .viewers
            .retain(|v| !Arc::ptr_eq(v, &self.viewer));
        self.live.release(&self.hub);
    }
}

/// A publisher's hold on its hub until dropped (also when its task is aborted): unless the
/// publisher ended the channel or was replaced, its viewers are told it was lost.
struct Relaying {
    live: Arc<Live>,
    hub: Arc<Hub>,
    id: u64,
    /// Nothing to tell viewers: the channel was ended, or never started.
    ended: bool,
    /// Why the publisher stopped, when it said (its input broke): what viewers are told
    /// instead of "went away".
    reason: EndReason,
}

/// Where the connection's driver leaves a publisher's own reason for stopping (its `CLOSE`'s
/// code and message), for the relay to tell the channel's viewers.
pub(crate) type EndReason = Arc<Mutex<Option<Refusal>>>;

impl Drop for Relaying {
    fn drop(&mut self) {
        {
            let mut s = lock(&self.hub.state);
            if s.publisher.as_ref().is_some_and(|p| p.id == self.id) {
                s.publisher = None;
                if !self.ended {
                    let (code, message) = lock(&self.reason).take().unwrap_or_else(|| {
                        (
                            ErrorCode::PublisherLost,
                            format!(
                                "the publisher of {} went away; it may come back",
                                self.hub.name
                            ),
                        )
                    });
                    for v in s.viewers.drain(..) {
                        v.close(code, message.clone());
                    }
                }
            }
        }
        self.live.release(&self.hub);
    }
}

/// How a viewer's chunks travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// On one stream, in order.
    Stream,
    /// Media chunks as QUIC datagrams where they fit (a call's audio).
    Datagrams,
    /// A unit per QUIC stream (a call's intra-only video): see
    /// [`chunkcast_transport::link::UnitGate`].
    Units,
}

async fn serve_viewer(
    tx: &LinkTx,
    viewer: &Viewer,
    opened: Opened,
    mode: Delivery,
    relay_bytes: Option<&Counter>,
) {
    let stream = opened.stream;
    if tx.send(Frame::Opened(opened)).await.is_err() {
        return;
    }
    let datagrams = mode == Delivery::Datagrams;
    let units = if mode == Delivery::Units {
        tx.open_unit_media()
    } else {
        None
    };
    let mut media = match units {
        Some(m) => m,
        None => match tx.open_media().await {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    loop {
        let ready = viewer.ready.notified();
        let next = lock(&viewer.queue).pop();
        match next {
            Some(chunk) => {
                let last = chunk.has(ChunkFlags::END_OF_STREAM);
                // Realtime audio as a datagram: a loss costs one frame, not a wait for the
                // retransmission that every later frame would wait behind. Set-up and the
                // end go on the stream, reliably.
                let framing = chunk.has(ChunkFlags::INIT) || last;
                if datagrams && !framing {
                    match tx.send_datagram(&chunk) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(_) => return,
                    }
                }
                let len = chunk.payload.len() as u64;
                if media.send(chunk).await.is_err() {
                    return;
                }
                if let Some(bytes) = relay_bytes {
                    bytes.inc_by(len);
                }
                if last {
                    let _ = media.finish().await;
                    return;
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
                    return;
                }
                ready.await;
            }
        }
    }
}

/// Why a relay stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayEnd {
    /// The publisher sent `END_OF_STREAM`.
    Ended,
    /// The route closed without one: the publisher is lost.
    Lost,
    /// Another publisher took the channel over.
    Evicted,
}

async fn relay(
    guard: &mut Relaying,
    chunks: &mut mpsc::Receiver<ChunkResult>,
    evict: &CancellationToken,
    max_payload: usize,
    holes: bool,
) -> RelayEnd {
    let hub = guard.hub.clone();
    // The publisher's numbering, to tell a datagram lost (a hole, kept in the channel's
    // numbering so that viewers count it) or overtaken (it fills its hole) from a new
    // numbering (a looping publisher starts again at 0, later in time).
    let mut order = Holes::new();
    let why = loop {
        let item = tokio::select! {
            biased;
            () = evict.cancelled() => break RelayEnd::Evicted,
            item = chunks.recv() => item,
        };
        let Some(item) = item else {
            break RelayEnd::Lost;
        };
        let Ok(chunk) = item else { continue }; // corrupted in transit: dropped, as loss
        // Without a payload CRC nothing would have checked the bytes (a live channel has no
        // tree), and the viewers would refuse it: dropped, as corrupt.
        if chunk.has(ChunkFlags::HEADER_CRC) {
            continue;
        }
        let Ok(chunk) = compress::decompress(chunk, max_payload) else {
            continue;
        };
        let eos = chunk.has(ChunkFlags::END_OF_STREAM);
        let mut s = lock(&hub.state);
        if s.publisher.as_ref().is_none_or(|p| p.id != guard.id) {
            // Replaced while this chunk was on its way: it must not reach the channel.
            break RelayEnd::Evicted;
        }
        let stream = StreamId(0);
        let place = if holes && !chunk.has(ChunkFlags::INIT) {
            order.place(&chunk, &s.channel)
        } else {
            Place::Next { skip: 0 }
        };
        match place {
            Place::Next { skip } => s.channel.skip(skip),
            Place::Fill { seq, offset } => {
                let fanned = s.channel.fill(chunk, seq, offset, stream);
                fan_out(&mut s, &fanned);
                continue;
            }
            Place::Drop => continue,
        }
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
            s.ended = true;
            guard.ended = true;
            break RelayEnd::Ended;
        }
    };
    info!(channel = %hub.name, ?why, "publisher stopped");
    why
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
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use chunkcast_protocol::wire::Limits as WireLimits;
    use chunkcast_transport::link;

    use super::*;

    const LINGER: Duration = Duration::from_secs(10);

    fn live() -> Arc<Live> {
        let gauges = LiveGauges {
            channels: Gauge::default(),
            viewers: Gauge::default(),
            evicted: Counter::default(),
            relays: Gauge::default(),
            relay_bytes: Counter::default(),
            upstreams: Gauge::default(),
            upstream_bytes: Counter::default(),
            upstream_lag_ms: Gauge::default(),
        };
        Arc::new(Live::new(FanoutConfig::default(), LINGER, gauges))
    }

    /// A link whose far end is kept (returned) and never read: enough for frames to queue.
    fn link() -> (LinkTx, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (tx, _rx) = link::tcp(Box::new(near), WireLimits::default(), BytesMut::new());
        (tx, far)
    }

    fn at(stream: u32) -> Request<'static> {
        Request {
            session: 1,
            request: 1,
            stream: StreamId(stream),
            channel: "live/cam",
            relay: false,
            path: &[],
        }
    }

    fn len(live: &Live) -> usize {
        lock(&live.table).hubs.len()
    }

    fn next_seq(live: &Live) -> u64 {
        let table = lock(&live.table);
        let s = lock(&table.hubs["live/cam"].state);
        s.channel.next_seq()
    }

    /// Publishes on `stream`, numbers `n` chunks into the channel as its relay would, then
    /// loses the publisher (its route closes without an end) and waits for the relay to end.
    async fn publish_and_lose(live: &Arc<Live>, tx: &LinkTx, stream: u32, n: u64) {
        let (task, _) = live
            .publish(tx, at(stream), Codec::Bytes, 1 << 20)
            .await
            .unwrap();
        let hub = lock(&live.table).hubs["live/cam"].clone();
        for i in 0..n {
            let c = chunkcast_protocol::Chunk::new(
                StreamId(0),
                i,
                0,
                i,
                1,
                ChunkFlags::KEY | ChunkFlags::END_OF_UNIT,
                bytes::Bytes::new(),
            );
            lock(&hub.state).channel.ingest(c, StreamId(0));
        }
        tx.unroute(StreamId(stream));
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_channel_lingers_and_a_return_within_the_linger_restarts_the_clock() {
        let live = live();
        let (tx, _far) = link();
        publish_and_lose(&live, &tx, 1, 3).await;
        assert_eq!(len(&live), 1, "lingers");
        tokio::time::sleep(LINGER / 2).await;
        // The publisher comes back within the linger: the numbering continues.
        publish_and_lose(&live, &tx, 2, 2).await;
        assert_eq!(next_seq(&live), 5);
        // The first loss's timer fires now; the channel was used since, so it stays.
        tokio::time::sleep(LINGER / 2 + Duration::from_secs(1)).await;
        assert_eq!(
            len(&live),
            1,
            "the first timer must not remove a channel used since"
        );
        tokio::time::sleep(LINGER / 2).await;
        assert_eq!(len(&live), 0, "gone a linger after its last use");
        assert!(live.list().is_empty());
        assert_eq!(live.gauges.channels.get(), 0);
        // A later publisher starts afresh.
        publish_and_lose(&live, &tx, 3, 1).await;
        assert_eq!(next_seq(&live), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_subscribers_hold_a_name_only_while_they_wait_and_take_no_slot() {
        let live = live();
        let (tx, _far) = link();
        let mut waiting = Vec::new();
        for i in 0..(MAX_CHANNELS as u32 + 10) {
            let name = format!("live/made-up-{i}");
            let at = Request {
                session: 1,
                request: i,
                stream: StreamId(i),
                channel: &name,
                relay: false,
                path: &[],
            };
            waiting.push(live.subscribe(tx.clone(), at, false).unwrap());
        }
        tokio::task::yield_now().await;
        assert_eq!(len(&live), MAX_CHANNELS + 10);
        assert_eq!(live.gauges.viewers.get(), MAX_CHANNELS as i64 + 10);
        // Publishing still has every slot.
        let (task, _) = live
            .publish(&tx, at(9999), Codec::Bytes, 1 << 20)
            .await
            .unwrap();
        tx.unroute(StreamId(9999));
        task.await.unwrap();
        for t in &waiting {
            t.abort();
        }
        for t in waiting {
            let _ = t.await;
        }
        // The made-up names go at once; the published one lingers, then goes.
        assert_eq!(len(&live), 1);
        assert_eq!(live.gauges.viewers.get(), 0);
        tokio::time::sleep(LINGER + Duration::from_secs(1)).await;
        assert_eq!(len(&live), 0);
    }
}
