//! The plain-HTTP policy of the SDK adapters: TLS to every endpoint, plain HTTP only to a
//! loopback emulator unless plain HTTP was allowed explicitly.
//!
//! Requests to AWS are signed, not encrypted: over plain HTTP anyone on the path reads every
//! record and the session token, and can replay a signed request for five minutes. The SDK
//! sends whatever the endpoint URL says, so an `http://` URL left over from a test setup
//! (`AWS_ENDPOINT_URL`, an `endpoint_url` in a profile or in code) would silently turn TLS off.
//! The adapters ([`SdkKinesis`](crate::SdkKinesis) and the consumer's `DynamoLeaseStore`)
//! therefore check the URL of every request before it is signed: `https` passes, `http`
//! passes only to a loopback host (`127.0.0.0/8`, `::1`, `localhost`), where the local
//! emulators run, or when the caller opted in with [`PlainHttp::Allowed`].
//!
//! This module holds the pure check; the adapters apply it to each request.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Whether an adapter may send requests over plain HTTP to a host that is not loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlainHttp {
    /// `http://` only to loopback hosts (`127.0.0.0/8`, `::1`, `localhost`); the default.
    #[default]
    LoopbackOnly,
    /// `http://` to any host: an emulator on another machine, or a TLS-terminating proxy on
    /// a trusted network. Records and signed requests travel unencrypted.
    Allowed,
}

/// A plain-HTTP endpoint that the policy refuses. Nothing was signed or sent.
///
/// The endpoint is shown as `scheme://host:port`, without user information, path or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainHttpRefused {
    endpoint: String,
    opt_in: &'static str,
}

impl PlainHttpRefused {
    /// The refused endpoint, as `http://host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Display for PlainHttpRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plain HTTP endpoint {} refused: use https, a loopback emulator, or {}",
            self.endpoint, self.opt_in
        )
    }
}

impl std::error::Error for PlainHttpRefused {}

/// Checks the URL a request is about to be sent to. `opt_in` names, for the error message,
/// how the caller of this adapter allows plain HTTP (for example
/// `"SdkKinesis::allow_plain_http()"`).
///
/// Anything that is not `http://` (case-insensitive) passes: `https`, and schemes the HTTP
/// client refuses on its own.
pub fn check_endpoint(
    url: &str,
    policy: PlainHttp,
    opt_in: &'static str,
) -> Result<(), PlainHttpRefused> {
    let Some(rest) = strip_prefix_ignore_case(url, "http://") else {
        return Ok(());
    };
    if policy == PlainHttp::Allowed {
        return Ok(());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // User information (`user:password@`) is never echoed.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    if is_loopback(host(host_port)) {
        return Ok(());
    }
    Err(PlainHttpRefused { endpoint: format!("http://{host_port}"), opt_in })
}

/// The refusal in `error` or its source chain, if the error is one: how the adapters tell a
/// refused endpoint from other failures to send, which the SDK reports the same way.
pub fn refusal_in<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a PlainHttpRefused> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(refused) = current.downcast_ref::<PlainHttpRefused>() {
            return Some(refused);
        }
        next = current.source();
    }
    None
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// The host of `host[:port]` or `[v6][:port]`, brackets removed.
fn host(host_port: &str) -> &str {
    if let Some(bracketed) = host_port.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    host_port.split(':').next().unwrap_or_default()
}

/// Whether `host` names this machine: `localhost`, an address in `127.0.0.0/8`, `::1`, or an
/// IPv4-mapped `::ffff:127.x.y.z`. Other names are not resolved: a name that resolves to a
/// loopback address today may not tomorrow.
fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPT_IN: &str = "Adapter::allow_plain_http()";

    fn check(url: &str) -> Result<(), PlainHttpRefused> {
        check_endpoint(url, PlainHttp::LoopbackOnly, OPT_IN)
    }

    #[test]
    fn https_passes_to_any_host() {
        for url in [
            "https://kinesis.us-east-1.amazonaws.com/",
            "https://10.0.0.5:4566",
            "HTTPS://dynamodb.eu-west-1.amazonaws.com",
            "https://[2001:db8::1]:443/",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn plain_http_passes_to_loopback_hosts() {
        for url in [
            "http://127.0.0.1:4566",
            "http://127.0.0.1:4566/",
            "http://127.10.20.30",
            "http://localhost:8000/?x=1",
            "http://LOCALHOST:8000",
            "http://localhost.:8000",
            "HTTP://127.0.0.1:1",
            "http://[::1]:4566/",
            "http://[::1]",
            "http://[::ffff:127.0.0.1]:4566",
            "http://user:pw@127.0.0.1:4566",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn plain_http_to_other_hosts_is_refused_naming_the_endpoint_and_the_way_out() {
        let error = check("http://x:4566").unwrap_err();
        assert_eq!(
            error.to_string(),
            "plain HTTP endpoint http://x:4566 refused: use https, a loopback emulator, or \
             Adapter::allow_plain_http()"
        );
        assert_eq!(error.endpoint(), "http://x:4566");
        for url in [
            "http://kinesis.us-east-1.amazonaws.com/",
            "http://10.0.0.5:4566",
            "http://0.0.0.0:4566",
            "http://128.0.0.1",
            "http://[::]:4566",
            "http://[2001:db8::1]:80",
            "http://[::ffff:10.0.0.1]",
            // Names are not resolved, and look-alikes are not loopback.
            "http://localhost.example.com:4566",
            "http://127.0.0.1.nip.io:4566",
            "http://mylocalhost:4566",
            // Shorthand forms the URL parser would accept are refused rather than guessed.
            "http://127.1:4566",
            "http://2130706433:4566",
            // The user information does not make a host loopback.
            "http://127.0.0.1@evil.example:4566",
        ] {
            assert!(check(url).is_err(), "{url}");
        }
    }

    #[test]
    fn the_refusal_shows_host_and_port_only() {
        let error = check("http://admin:s3cret@emulator.internal:4566/path?X-Amz-Signature=abc")
            .unwrap_err();
        assert_eq!(error.endpoint(), "http://emulator.internal:4566");
        let text = error.to_string();
        assert!(!text.contains("s3cret") && !text.contains("Signature"), "{text}");
    }

    #[test]
    fn an_explicit_opt_in_allows_plain_http_anywhere() {
        for url in ["http://x:4566", "http://10.0.0.5:4566/", "http://[2001:db8::1]"] {
            assert_eq!(check_endpoint(url, PlainHttp::Allowed, OPT_IN), Ok(()), "{url}");
        }
    }

    #[test]
    fn a_refusal_is_found_anywhere_in_a_source_chain() {
        #[derive(Debug)]
        struct Wrapper(Box<dyn std::error::Error + Send + Sync>);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(self.0.as_ref())
            }
        }
        let refused = check("http://x:4566").unwrap_err();
        let wrapped = Wrapper(Box::new(Wrapper(Box::new(refused.clone()))));
        assert_eq!(refusal_in(&wrapped), Some(&refused));
        assert_eq!(refusal_in(&refused), Some(&refused));
        let other = Wrapper(Box::new(std::io::Error::other("connection refused")));
        assert_eq!(refusal_in(&other), None);
    }

    #[test]
    fn the_default_policy_is_loopback_only() {
        assert_eq!(PlainHttp::default(), PlainHttp::LoopbackOnly);
    }

    #[test]
    fn other_schemes_and_garbage_are_left_to_the_http_client() {
        for url in ["", "h", "ftp://x", "unix:/tmp/s", "httpx://x"] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }
}
