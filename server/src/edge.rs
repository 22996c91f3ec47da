//! Edge mode (`--edge-of URL`): where this server finds the origin of a live channel, and
//! how it reaches it. An edge is a client of its origin: it subscribes to a channel there,
//! over the native protocol with the `RELAY` capability, once for all of its own viewers (the
//! upstream task is in [`crate::live`], which fans the chunks out as a local publisher's).

use std::time::Duration;

use chunkcast_client::error::ClientError;
use chunkcast_client::session::{ConnectOptions, Session};
use chunkcast_client::url::Url;
use chunkcast_protocol::ErrorCode;
use chunkcast_protocol::wire::{Caps, Entry};
use chunkcast_transport::tls::Trust;

use crate::directory::Directory;
use crate::live::Refusal;

/// How long [`Edge::vet`] waits for the origin's answer to a check: a refusal comes at once.
const VET_WAIT: Duration = Duration::from_secs(2);
/// How long an edge waits for its origin to connect and answer the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an edge's channels come from.
pub(crate) enum Source {
    /// One fixed origin (`tcp://`, `tcps://`, `quic://`), for every channel.
    Origin(Url),
    /// The origin each channel's publisher registered in the directory.
    Directory(Directory),
}

/// An edge's view of the tier above it.
pub(crate) struct Edge {
    source: Source,
    opts: ConnectOptions,
    /// The URL as the operator gave it, for messages.
    shown: String,
    /// This edge's id in relay paths: random per process, so that two edges (or one edge
    /// restarted) never share one by configuration mistake.
    id: u64,
    /// How long a subscriber to a channel the directory does not have yet is held.
    wait_publisher: Duration,
}

impl Edge {
    /// An edge of `source` (named `shown` in messages), presenting `token` upstream and
    /// trusting the origin's certificate by `trust`; a subscriber to a channel the directory
    /// does not have yet is held for `wait_publisher`.
    pub(crate) fn new(
        source: Source,
        shown: String,
        token: Option<String>,
        trust: Trust,
        wait_publisher: Duration,
    ) -> Self {
        Self {
            source,
            opts: ConnectOptions {
                trust,
                token,
                timeout: CONNECT_TIMEOUT,
                ..ConnectOptions::default()
            },
            shown,
            id: random_id(),
            wait_publisher,
        }
    }

    /// How long to go on looking up a channel the directory does not have, holding its
    /// subscribers, before refusing them as not found. A fixed origin holds them itself.
    pub(crate) fn wait_publisher(&self) -> Duration {
        match &self.source {
            Source::Origin(_) => Duration::ZERO,
            Source::Directory(_) => self.wait_publisher,
        }
    }

    /// This edge's id in the `RELAY` paths it sends (and refuses to find in those it gets).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The origin URL that has `channel` now.
    pub(crate) async fn origin_of(&self, channel: &str) -> Result<Url, Refusal> {
        match &self.source {
            Source::Origin(url) => Ok(url.clone()),
            Source::Directory(dir) => {
                let found = dir.lookup(channel).await.map_err(|e| {
                    (
                        ErrorCode::Relay,
                        format!("cannot look {channel} up in the directory: {e}"),
                    )
                })?;
                let Some(origin) = found else {
                    return Err((
                        ErrorCode::NotFound,
                        format!("no origin has {channel}: it is not in the directory"),
                    ));
                };
                Url::parse(&origin).map_err(|e| {
                    (
                        ErrorCode::Relay,
                        format!("the directory names {origin:?} for {channel}: {e}"),
                    )
                })
            }
        }
    }

    /// Whether the directory (if any) names another origin than `current` for `channel` now;
    /// a failed lookup is not a move (the stream continues while the directory is down).
    pub(crate) async fn moved(&self, channel: &str, current: &Url) -> bool {
        match &self.source {
            Source::Origin(_) => false,
            Source::Directory(dir) => match dir.lookup(channel).await {
                Ok(Some(origin)) => Url::parse(&origin).is_ok_and(|u| !same_origin(&u, current)),
                _ => false,
            },
        }
    }

    /// How often to ask the directory whether a channel moved, if there is one.
    pub(crate) fn recheck(&self) -> Option<Duration> {
        match &self.source {
            Source::Origin(_) => None,
            Source::Directory(dir) => Some(dir.recheck()),
        }
    }

    /// Connects to `origin` as a relay whose subscriptions come through `path` (the relays
    /// below this edge, the farthest first): the origin hears `path` and this edge's id, so
    /// that it can refuse a loop or a chain past its hop limit.
    pub(crate) async fn connect(&self, origin: &Url, path: &[u64]) -> Result<Session, ClientError> {
        let session = Session::connect_with(origin, &self.opts, Caps::RELAY).await?;
        let mut path = path.to_vec();
        path.push(self.id);
        session.relay(path).await?;
        Ok(session)
    }

    /// Whether the tier above accepts a subscription to `channel` through `path` (the relays
    /// below this edge): a relay joining an upstream subscription that another path started
    /// must pass the loop and hop rules too. The origin answers a refusal at once, so a
    /// subscription it holds (no publisher there now) counts as accepted after a short wait;
    /// an origin that cannot be asked is the running upstream's concern, not this check's.
    pub(crate) async fn vet(&self, channel: &str, path: &[u64]) -> Result<(), Refusal> {
        let Ok(origin) = self.origin_of(channel).await else {
            return Ok(());
        };
        let Ok(session) = self.connect(&origin, path).await else {
            return Ok(());
        };
        let verdict = match tokio::time::timeout(VET_WAIT, session.subscribe(channel)).await {
            Ok(Err(ClientError::Server {
                code: ErrorCode::Relay,
                message,
            })) => Err((ErrorCode::Relay, format!("origin: {message}"))),
            Ok(Ok(incoming)) => {
                incoming.cancel().await;
                Ok(())
            }
            _ => Ok(()),
        };
        session.close().await;
        verdict
    }

    /// The live channels the tier above has: the directory's, or the origin's own listing.
    pub(crate) async fn list(&self) -> Result<Vec<Entry>, Refusal> {
        let unreachable = |e: ClientError| {
            (
                ErrorCode::Relay,
                format!("cannot list the origin {}: {e}", self.shown),
            )
        };
        match &self.source {
            Source::Origin(url) => {
                let session = self.connect(url, &[]).await.map_err(unreachable)?;
                let entries = session.list("live/").await.map_err(unreachable)?;
                session.close().await;
                Ok(entries)
            }
            Source::Directory(dir) => {
                let names = dir.channels().await.map_err(|e| {
                    (
                        ErrorCode::Relay,
                        format!("cannot list the directory {}: {e}", self.shown),
                    )
                })?;
                Ok(names
                    .into_iter()
                    .map(|path| Entry {
                        path,
                        codec: chunkcast_protocol::Codec::Bytes,
                        size: None,
                        duration_us: None,
                        viewers: 0,
                        note: None,
                    })
                    .collect())
            }
        }
    }
}

/// A random id: the standard library's per-process random hash keys, over the process id
/// and the time (no dependency for one number).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme == b.scheme && a.host == b.host && a.port == b.port
}
