//! The directory of live channels in Redis (`--directory redis://HOST:PORT`): which origin
//! has which channel, so that edges find it.
//!
//! One key per channel, `chunkcast:live/NAME` → the origin's advertised URL, set with a TTL
//! by the origin that accepted the publisher and refreshed while the publisher is live. A
//! publisher that moves to another origin overwrites the key at once; the origin it left
//! stops refreshing when it sees another origin's URL there (or when its publisher is gone),
//! so a stale entry lasts at most one TTL. Redis being down costs new lookups only: streams
//! already relayed keep their connections, and registrations resume when it is back.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tracing::{debug, warn};

/// Bound on one Redis round trip (connecting included): a directory that is down must fail
/// a lookup quickly and clearly, not hang a viewer.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys scanned per `SCAN` step when listing.
const SCAN_COUNT: usize = 200;
/// The prefix of every key this server writes or reads.
const PREFIX: &str = "chunkcast:";

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryError {
    /// Redis refused, or the connection failed.
    #[error("redis at {url}: {cause}")]
    Redis {
        /// The directory's URL.
        url: String,
        /// What went wrong.
        cause: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("redis at {url} did not answer within {REDIS_TIMEOUT:?} (is it running?)")]
    Timeout {
        /// The directory's URL.
        url: String,
    },
}

/// A connection to the directory.
pub(crate) struct Directory {
    client: redis::Client,
    url: String,
    ttl: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Directory {
    /// A directory at `url` (`redis://HOST:PORT[/DB]`) whose entries live `ttl` unrefreshed.
    /// Nothing is connected yet: Redis may come up after the server.
    pub(crate) fn new(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            url: url.to_owned(),
            ttl,
            conn: Mutex::new(None),
        })
    }

    /// How often an edge should look again whether a channel moved: a few times per TTL, so
    /// that it follows a move well within one.
    pub(crate) fn recheck(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(50))
    }

    /// How often an origin refreshes its entries.
    fn refresh(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(50))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, DirectoryError> {
        let cached = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let run = async {
            let mut conn = match cached {
                Some(c) => c,
                None => {
                    let c = self.client.get_multiplexed_async_connection().await?;
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    c
                }
            };
            cmd.query_async::<T>(&mut conn).await
        };
        let result = match tokio::time::timeout(REDIS_TIMEOUT, run).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(cause)) => Err(DirectoryError::Redis {
                url: self.url.clone(),
                cause,
            }),
            Err(_) => Err(DirectoryError::Timeout {
                url: self.url.clone(),
            }),
        };
        // The next query connects afresh (Redis may have restarted).
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result
    }

    /// The origin URL registered for `channel` (`live/NAME`), if any.
    pub(crate) async fn lookup(&self, channel: &str) -> Result<Option<String>, DirectoryError> {
        self.query(redis::cmd("GET").arg(key(channel))).await
    }

    /// Every channel registered now, sorted.
    pub(crate) async fn channels(&self) -> Result<Vec<String>, DirectoryError> {
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{PREFIX}live/*"))
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(PREFIX).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Registers `channel` → `origin` and keeps it fresh until dropped (the task is aborted)
    /// or another origin takes the entry over. A Redis outage is logged and ridden out.
    pub(crate) async fn register(&self, channel: &str, origin: &str) {
        let k = key(channel);
        let px = self.ttl.as_millis().max(1) as u64;
        let mut first = true;
        loop {
            if !first {
                // Someone else's now: the publisher moved to that origin; stop refreshing.
                match self
                    .query::<Option<String>>(redis::cmd("GET").arg(&k))
                    .await
                {
                    Ok(Some(other)) if other != origin => {
                        debug!(%channel, %other, "the directory names another origin now");
                        return;
                    }
                    _ => {}
                }
            }
            first = false;
            let set = redis::cmd("SET")
                .arg(&k)
                .arg(origin)
                .arg("PX")
                .arg(px)
                .clone();
            if let Err(e) = self.query::<()>(&set).await {
                warn!(%channel, "directory registration failed (retrying): {e}");
            }
            tokio::time::sleep(self.refresh()).await;
        }
    }

    /// Removes `channel`'s entry if it still names `origin` (the channel ended here).
    pub(crate) async fn unregister(&self, channel: &str, origin: &str) {
        let k = key(channel);
        if let Ok(Some(v)) = self
            .query::<Option<String>>(redis::cmd("GET").arg(&k))
            .await
        {
            if v == origin {
                let _ = self.query::<()>(redis::cmd("DEL").arg(&k)).await;
            }
        }
    }
}

fn key(channel: &str) -> String {
    format!("{PREFIX}{channel}")
}
