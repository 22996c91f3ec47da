//! chunkcast URLs: `tcp://HOST:PORT/PATH`, `tcps://HOST:PORT/PATH`, `quic://HOST:PORT/PATH`,
//! and `http://HOST:PORT/PATH`, `https://…` for the server's HTTP interface (see [`crate::http`]).

use std::fmt;

use percent_encoding::percent_decode_str;

/// The port used when a URL names none (HTTP's own defaults for `http://` and `https://`).
pub const DEFAULT_PORT: u16 = 7700;

/// Which transport a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tcps,
    /// QUIC (always TLS).
    Quic,
    /// The server's HTTP interface, plain (`--http`), or through any HTTP cache.
    Http,
    /// The server's HTTP interface over TLS, or through any HTTPS cache or CDN.
    Https,
}

impl Scheme {
    /// The scheme's name as written in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tcps => "tcps",
            Self::Quic => "quic",
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// Whether this is one of the HTTP schemes, served by [`crate::http`] rather than a
    /// native [`crate::session::Session`].
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
            Self::Tcp | Self::Tcps | Self::Quic => DEFAULT_PORT,
        }
    }
}

/// A parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Transport.
    pub scheme: Scheme,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path within the server's library, percent-decoded, without the leading `/`.
    pub path: String,
}

/// Why a URL could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad URL {url:?}: {reason} (expected tcp://HOST:PORT/PATH, tcps://…, quic://…, http://… or https://…)"
)]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

impl Url {
    /// Parses a URL.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let fail = |reason| UrlError {
            url: s.to_owned(),
            reason,
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| fail("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "tcps" => Scheme::Tcps,
            "quic" => Scheme::Quic,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(fail("unknown scheme")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| fail("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(fail("junk after ']'")),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(fail("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| fail("bad port"))?,
            None => scheme.default_port(),
        };
        if scheme.is_http() && path.contains(['?', '#']) {
            // A signed URL is for one request path; the client fetches many (index, chunks).
            return Err(fail(
                "a query or fragment (use --token; signed URLs are for curl and players)",
            ));
        }
        let path = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| fail("path is not UTF-8 once decoded"))?
            .into_owned();
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `HOST:PORT`, bracketing IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// This URL with another path.
    pub fn with_path(&self, path: &str) -> Self {
        Self {
            path: path.trim_start_matches('/').to_owned(),
            ..self.clone()
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/{}",
            self.scheme.name(),
            self.authority(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_host_form() {
        let u = Url::parse("quic://127.0.0.1:9000/dir/a%20b%C3%A7.wav").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Quic, "127.0.0.1", 9000, "dir/a bç.wav")
        );
        let u = Url::parse("tcps://[::1]:7/x").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Tcps, "::1", 7)
        );
        assert_eq!(u.authority(), "[::1]:7");
        let u = Url::parse("tcp://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (DEFAULT_PORT, ""));
        let u = Url::parse("HTTPS://cdn.example/films/a%20b.mp4").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Https, 443, "films/a b.mp4")
        );
        assert!(u.scheme.is_http());
        let u = Url::parse("http://127.0.0.1:8080/live/cam").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Http, 8080));
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/live/cam");
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "ftp://x/y",
            "x/y",
            "tcp://:1/",
            "tcp://h:99999/",
            "tcp://[::1/",
            "tcp://h/%ff",
            "http://h/a.mp4?exp=1&sig=00",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.to_string().contains("expected tcp://"), "{bad}: {e}");
        }
    }
}
