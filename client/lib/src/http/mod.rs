//! chunkcast over HTTP (`docs/HTTP.md`): `get` and `watch` of `http://` and `https://` URLs,
//! from the server's `--http` interface or from any HTTP cache or CDN in front of it.
//!
//! The bodies are the native protocol's frames (`application/x-chunkcast-frames`), decoded
//! with the protocol crate's decoder and its limits, so a chunk carries the same CRC32C and
//! a file's chunks the same BLAKE3 tree nodes as on `tcp://`: every chunk is verified against
//! the file's digest before a byte of it is written, whatever cache served it.
//!
//! - [`HttpClient`]: one server's HTTP interface, trusted like `tcps://` (`--cert-sha256`,
//!   `--ca`, `--insecure`, system roots) with the token as `Authorization: Bearer`;
//! - [`get`]: `chunkcast get http(s)://…`: index, then verified chunks, a few in flight;
//! - [`live`]: `chunkcast watch http(s)://…/live/NAME`: index, init, then each chunk with one
//!   blocking request ahead, into the same player as the native `watch`;
//! - [`sign_url`]: a signed URL for clients that cannot send a header (curl, players).

pub mod get;
pub mod live;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chunkcast_protocol::wire::Limits;
use chunkcast_protocol::wire::codec::Decoder;
use chunkcast_protocol::{Codec, ErrorCode, Frame};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::session::ConnectOptions;
use crate::url::Url;

/// The media type of bodies made of native frames.
pub const FRAMES_TYPE: &str = "application/x-chunkcast-frames";

/// The key-derivation context of signed URLs (`docs/HTTP.md`).
const SIGNED_URL_CONTEXT: &str = "chunkcast http signed url v1";

/// The largest JSON document (an index) the client reads: a live index lists a few dozen
/// segments, a file's index is a few hundred bytes; more is a broken or hostile server.
const MAX_JSON: usize = 1 << 20;

/// How long one read of a response may stall before the request is given up: above the
/// server's 10 s bound on a blocking live request, so that only a dead path trips it.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/2 flow-control window of one request: a whole chunk of the largest size.
const H2_STREAM_WINDOW: u32 = 4 << 20;

/// What stays literal in a request path: RFC 3986's unreserved characters and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `path` (a library path or channel name, as the user wrote it) percent-encoded for a
/// request path.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// The signature of a signed URL for `path` (the request path exactly as sent,
/// percent-encoded, without the query) valid until `exp` (Unix seconds), for a server whose
/// token is `token`: `hex(keyed_hash(derive_key(CONTEXT, token), "{exp}\n{path}"))`.
pub fn url_signature(token: &str, exp: u64, path: &str) -> String {
    let key = blake3::derive_key(SIGNED_URL_CONTEXT, token.as_bytes());
    let mac = blake3::keyed_hash(&key, format!("{exp}\n{path}").as_bytes());
    mac.to_hex().to_string()
}

/// `path` with the query that lets a client without the token fetch it until `exp` (Unix
/// seconds): `path?exp=EXP&sig=HEX`. `path` is the request path as it will be sent
/// (percent-encoded, e.g. `/v1/files/films/a%20b.mp4`). A cache keyed without the query
/// serves the response to everyone (docs/SCALING.md).
pub fn sign_url(token: &str, path: &str, exp: u64) -> String {
    format!("{path}?exp={exp}&sig={}", url_signature(token, exp, path))
}

/// Why a server's answer is not what `docs/HTTP.md` says it is.
fn bad(what: impl Into<String>) -> ClientError {
    ClientError::BadResponse(what.into())
}

/// The message the error chain of `e` tells, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One server's HTTP interface (or the cache in front of it).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// `scheme://authority`, without a trailing `/`.
    base: String,
    authority: String,
    token: Option<String>,
}

impl HttpClient {
    /// A client for the server `url` names, trusting its certificate as `opts.trust` says and
    /// sending `opts.token` as `Authorization: Bearer`. HTTP/2 when the server offers it by
    /// ALPN, else HTTP/1.1 with keep-alive; connections are pooled across requests.
    pub fn new(url: &Url, opts: &ConnectOptions) -> Result<Self, ClientError> {
        if !url.scheme.is_http() {
            return Err(ClientError::Usage(format!(
                "{url} is not an http:// or https:// URL"
            )));
        }
        let tls = match chunkcast_transport::tls::client_config(&opts.trust) {
            Ok(cfg) => cfg,
            // No system roots: plain http:// needs none, and an https:// one fails below with
            // an empty root store, as untrusted.
            Err(chunkcast_transport::tls::TlsError::NoRoots) => no_roots()?,
            Err(e) => return Err(e.into()),
        };
        let mut tls = Arc::unwrap_or_clone(tls);
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(opts.timeout)
            .read_timeout(READ_TIMEOUT)
            // HTTP/2's default windows (64 KiB) let a server send one RTT's 64 KiB at a time,
            // a few MB/s: room for the chunks in flight instead.
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_STREAM_WINDOW * 4)
            .user_agent(concat!("chunkcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: format!("{}://{}", url.scheme.name(), url.authority()),
            authority: url.authority(),
            token: opts.token.clone(),
        })
    }

    /// Sends `GET path` (a request path relative to the server's root) and returns the
    /// response if its status is a success; an error status becomes [`ClientError::Http`]
    /// with the server's code and message.
    async fn send(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        if !path.starts_with('/') {
            return Err(bad(format!(
                "{path:?} is not a path from the server's root"
            )));
        }
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_body(response, 64 * 1024)
            .await
            .unwrap_or_default()
            .freeze();
        Err(http_error(path, status, &body))
    }

    /// The error of a request that got no answer.
    fn transport(&self, e: &reqwest::Error) -> ClientError {
        let text = chain(e);
        if e.is_timeout() {
            return ClientError::Lost(format!("{}: timed out: {text}", self.authority));
        }
        if e.is_connect() {
            let tls = ["certificate", "Certificate", "tls", "TLS", "handshake"]
                .iter()
                .any(|w| text.contains(w));
            if tls {
                return ClientError::Secure {
                    addr: self.authority.clone(),
                    reason: format!(
                        "{text}: the server's certificate is not trusted; pass --cert-sha256 HEX \
                         (from the server's listening line) or --ca FILE"
                    ),
                };
            }
            return ClientError::Connect {
                addr: self.authority.clone(),
                source: std::io::Error::other(text),
            };
        }
        ClientError::Lost(format!("{}: {text}", self.authority))
    }

    /// `GET path` as JSON.
    pub async fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(path).await?;
        let body = read_body(response, MAX_JSON)
            .await
            .map_err(|e| self.body_error(path, e))?;
        serde_json::from_slice(&body)
            .map_err(|e| bad(format!("{path}: not the expected JSON: {e}")))
    }

    /// `GET path` as native frames, each at most `max_frame` bytes (its length prefix
    /// excluded), the whole body at most `max_body`.
    pub async fn frames(
        &self,
        path: &str,
        max_frame: usize,
        max_body: usize,
    ) -> Result<Vec<Frame>, ClientError> {
        let response = self.send(path).await?;
        if let Some(ty) = response.headers().get(reqwest::header::CONTENT_TYPE) {
            let ty = ty.to_str().unwrap_or("");
            if !ty.starts_with(FRAMES_TYPE) {
                return Err(bad(format!(
                    "{path}: a body of type {ty:?}, not {FRAMES_TYPE}"
                )));
            }
        }
        let body = read_body(response, max_body)
            .await
            .map_err(|e| self.body_error(path, e))?;
        decode_frames(body, max_frame)
    }

    fn body_error(&self, path: &str, e: BodyError) -> ClientError {
        match e {
            BodyError::TooLarge(n) => bad(format!("{path}: a body of more than {n} bytes")),
            BodyError::Read(e) => self.transport(&e),
        }
    }
}

/// A rustls configuration that trusts nothing: for plain `http://` on a machine without
/// system roots (a redirect to `https://` then fails as untrusted).
fn no_roots() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsSetup(chunkcast_transport::tls::TlsError::Rustls(e)))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Why a body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge(usize),
    Read(reqwest::Error),
}

/// Reads a response's body, refusing one longer than `max` before holding it.
async fn read_body(mut response: reqwest::Response, max: usize) -> Result<BytesMut, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = BytesMut::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(piece) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + piece.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// The frames of a body; a frame cut short at its end is an error.
fn decode_frames(mut body: BytesMut, max_frame: usize) -> Result<Vec<Frame>, ClientError> {
    let limits = Limits {
        max_frame_len: u32::try_from(max_frame).unwrap_or(u32::MAX),
        ..Limits::default()
    };
    let mut decoder = Decoder::new(limits);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut body).map_err(ClientError::Corrupt)? {
        frames.push(frame);
    }
    if !body.is_empty() || decoder.frame_len().is_some() {
        return Err(ClientError::Corrupt(
            chunkcast_protocol::DecodeError::Truncated("body's last"),
        ));
    }
    Ok(frames)
}

/// The error body every error status carries (`docs/HTTP.md`).
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    code: Option<u16>,
    error: Option<String>,
    message: Option<String>,
}

/// The client's error for an error status: the server's code and message from its JSON
/// body, or (a cache's own error page) the status's meaning.
fn http_error(path: &str, status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.code)
        .map(ErrorCode::from_u16);
    let message = match parsed {
        Some(ErrorBody {
            error: Some(error),
            message: Some(message),
            ..
        }) if !message.is_empty() => format!("{error}: {message}"),
        Some(ErrorBody {
            error: Some(error), ..
        }) => error,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let message = if status.as_u16() == 401 {
        format!("{message} (give the server's token with --token or CHUNKCAST_TOKEN)")
    } else {
        message
    };
    ClientError::Http {
        path: path.to_owned(),
        status: status.as_u16(),
        code,
        message,
    }
}

/// The `ended` error of a live 410: its message, when `e` is one.
pub(crate) fn ended_reason(e: &ClientError) -> Option<String> {
    match e {
        ClientError::Http {
            status: 410,
            message,
            ..
        } => message
            .strip_prefix("ended: ")
            .map(str::to_owned)
            .or_else(|| (message == "ended").then(|| "the channel ended".to_owned())),
        _ => None,
    }
}

/// Decodes a 64-digit hex digest.
fn digest_from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A codec from its JSON form in an index (the golden vectors' form, `docs/HTTP.md`).
pub fn codec_from_json(v: &serde_json::Value) -> Result<Codec, String> {
    use chunkcast_protocol::{
        AudioParams, CodedAudio, ImageParams, SampleFormat, VideoParams, VisualFormat,
    };
    let num = |key: &str| -> Result<u64, String> {
        v.get(key)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("codec without a numeric {key:?}"))
    };
    let small = |key: &str| -> Result<u32, String> {
        u32::try_from(num(key)?).map_err(|_| format!("codec {key:?} out of range"))
    };
    let short = |key: &str| -> Result<u16, String> {
        u16::try_from(num(key)?).map_err(|_| format!("codec {key:?} out of range"))
    };
    let format = || -> Result<VisualFormat, String> {
        let name = v
            .get("format")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        (0..=u8::MAX)
            .filter_map(VisualFormat::from_code)
            .find(|f| f.name() == name)
            .ok_or_else(|| format!("unknown visual format {name:?}"))
    };
    let kind = v
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    Ok(match kind {
        "bytes" => Codec::Bytes,
        "audio" => {
            // Coded audio's parameters: in a `{"coded": {…}}` object (the golden vectors'
            // form) or beside `"sample_format": "coded"` (the server's first form).
            let coded = |c: &serde_json::Value| -> Result<SampleFormat, String> {
                let field = |k: &str| c.get(k).and_then(serde_json::Value::as_u64);
                let tag = field("tag").and_then(|n| u16::try_from(n).ok());
                let align = field("block_align").and_then(|n| u16::try_from(n).ok());
                let spb = field("samples_per_block").and_then(|n| u32::try_from(n).ok());
                match (tag, align, spb) {
                    (Some(tag), Some(block_align), Some(samples_per_block)) if block_align > 0 => {
                        Ok(SampleFormat::Coded(CodedAudio {
                            tag,
                            block_align,
                            samples_per_block,
                        }))
                    }
                    _ => Err("bad coded audio parameters".into()),
                }
            };
            let sample_format = match v.get("sample_format") {
                Some(serde_json::Value::String(s)) => match s.as_str() {
                    "int" => SampleFormat::Int,
                    "float" => SampleFormat::Float,
                    "mulaw" | "mu-law" => SampleFormat::MuLaw,
                    "alaw" | "a-law" => SampleFormat::ALaw,
                    "coded" => coded(v)?,
                    other => return Err(format!("unknown sample format {other:?}")),
                },
                Some(serde_json::Value::Object(o)) => {
                    coded(o.get("coded").ok_or("unknown sample format object")?)?
                }
                _ => return Err("audio codec without a sample_format".into()),
            };
            Codec::Audio(AudioParams {
                sample_rate: small("sample_rate")?,
                channels: short("channels")?,
                bits_per_sample: short("bits_per_sample")?,
                sample_format,
            })
        }
        "video" => Codec::Video(VideoParams {
            format: format()?,
            width: small("width")?,
            height: small("height")?,
            fps_num: small("fps_num")?,
            fps_den: small("fps_den")?.max(1),
        }),
        "image" => Codec::Image(ImageParams {
            format: format()?,
            width: small("width")?,
            height: small("height")?,
            color: u8::try_from(num("color")?).map_err(|_| "codec \"color\" out of range")?,
        }),
        other => return Err(format!("unknown codec kind {other:?}")),
    })
}

#[cfg(test)]
mod tests;
