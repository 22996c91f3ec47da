//! chunkcast URLs: `tcp://HOST:PORT/PATH`, `tcps://HOST:PORT/PATH`, `quic://HOST:PORT/PATH`.

use std::fmt;

use percent_encoding::percent_decode_str;

/// The port used when a URL names none.
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
}

impl Scheme {
    /// The scheme's name as written in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tcps => "tcps",
            Self::Quic => "quic",
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
#[error("bad URL {url:?}: {reason} (expected tcp://HOST:PORT/PATH, tcps://… or quic://…)")]
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
            None => DEFAULT_PORT,
        };
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
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for bad in [
            "http://x/y",
            "x/y",
            "tcp://:1/",
            "tcp://h:99999/",
            "tcp://[::1/",
            "tcp://h/%ff",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.to_string().contains("expected tcp://"), "{bad}: {e}");
        }
    }
}
