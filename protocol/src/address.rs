//! Addresses (`name@host[:port]`) and relay URLs, with their canonical forms.
//!
//! The grammar is DESIGN.md's: the name is `[a-z0-9][a-z0-9._-]{0,31}`, the host is
//! lowercased and IDNA-encoded (A-label), and the default port 443 is omitted.
//! A relay's canonical URL is `wss://host[:port]/sotto/v1`; `ws://` is accepted only for
//! loopback hosts or when the caller explicitly allows plaintext.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Host;

/// The port implied when an address or a relay URL names none.
pub const DEFAULT_PORT: u16 = 443;
/// The path of the relay protocol on a relay's listener.
pub const RELAY_PATH: &str = "/sotto/v1";
/// The longest name an address may carry.
pub const MAX_NAME_LEN: usize = 32;

/// Why a string is not a valid address or relay URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `@` separates the name from the host.
    #[error("address {input:?} has no '@': expected name@host[:port]")]
    MissingAt {
        /// The rejected input.
        input: String,
    },
    /// The name breaks the grammar `[a-z0-9][a-z0-9._-]{0,31}`.
    #[error(
        "name {name:?} is invalid: use 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The host is not a valid domain name or IP literal.
    #[error("host {host:?} is invalid")]
    InvalidHost {
        /// The rejected host.
        host: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("port {port:?} is invalid")]
    InvalidPort {
        /// The rejected port.
        port: String,
    },
    /// The relay URL does not parse or has an unsupported shape.
    #[error("relay {input:?} is invalid: {reason}")]
    InvalidRelay {
        /// The rejected input.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plaintext `ws://` URL for a host that is not loopback, without explicit opt-in.
    #[error(
        "relay {input:?} uses plaintext ws:// on a non-loopback host; use wss:// or allow plaintext explicitly"
    )]
    PlaintextNotAllowed {
        /// The rejected input.
        input: String,
    },
}

/// A host and port, canonicalised: lowercase A-label or IP literal, port omitted when 443.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// Parses `host[:port]`; IPv6 literals are written in brackets.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let invalid_host = || AddressError::InvalidHost {
            host: input.to_owned(),
        };
        let (host_part, port) = split_port(input)?;
        if host_part.is_empty() {
            return Err(invalid_host());
        }
        let host = Host::parse(host_part).map_err(|_| invalid_host())?;
        let host = match host {
            Host::Domain(d) => {
                if d.is_empty() || d.ends_with('.') || d.contains(['/', '@', ' ']) {
                    return Err(invalid_host());
                }
                d.to_ascii_lowercase()
            }
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => format!("[{ip}]"),
        };
        Ok(HostPort {
            host,
            port: port.unwrap_or(DEFAULT_PORT),
        })
    }

    /// The canonical host (A-label, or IP literal with IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when none was written).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        if self.host == "localhost" || self.host.ends_with(".localhost") {
            return true;
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == DEFAULT_PORT {
            f.write_str(&self.host)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn split_port(input: &str) -> Result<(&str, Option<u16>), AddressError> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AddressError::InvalidPort { port: p.to_owned() })
    };
    if let Some(rest) = input.strip_prefix('[') {
        // IPv6 literal: "[addr]" or "[addr]:port"
        let Some(end) = rest.find(']') else {
            return Err(AddressError::InvalidHost {
                host: input.to_owned(),
            });
        };
        let host = &input[..end + 2];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            None if after.is_empty() => Ok((host, None)),
            None => Err(AddressError::InvalidHost {
                host: input.to_owned(),
            }),
            Some(p) => Ok((host, Some(parse_port(p)?))),
        };
    }
    match input.rsplit_once(':') {
        Some((h, p)) => Ok((h, Some(parse_port(p)?))),
        None => Ok((input, None)),
    }
}

/// A user's address, `name@host[:port]`, in canonical form.
///
/// The host part names the user's home relay. Two addresses are equal exactly when their
/// canonical strings are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    name: String,
    host: HostPort,
}

impl Address {
    /// Parses and canonicalises an address.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        let Some((name, host)) = input.split_once('@') else {
            return Err(AddressError::MissingAt {
                input: input.to_owned(),
            });
        };
        let name = name.to_owned();
        validate_name(&name)?;
        Ok(Address {
            name,
            host: HostPort::parse(host)?,
        })
    }

    /// Builds an address from a name and the host of a relay.
    pub fn new(name: &str, host: HostPort) -> Result<Self, AddressError> {
        validate_name(name)?;
        Ok(Address {
            name: name.to_owned(),
            host,
        })
    }

    /// The name part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host part (the user's home relay).
    pub fn host(&self) -> &HostPort {
        &self.host
    }
}

/// Checks a name against `[a-z0-9][a-z0-9._-]{0,31}`.
pub fn validate_name(name: &str) -> Result<(), AddressError> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && bytes.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(AddressError::InvalidName {
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.host)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Address {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Address".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "name@host[:port]; name [a-z0-9][a-z0-9._-]{0,31}",
            "pattern": "^[a-z0-9][a-z0-9._-]{0,31}@.+$",
            "examples": ["alice@relay.example"]
        })
    }
}

/// A relay's canonical URL: `wss://host[:port]/sotto/v1` (or `ws://` for loopback or by opt-in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayUrl {
    tls: bool,
    host: HostPort,
}

impl RelayUrl {
    /// Canonicalises what a user typed: `host[:port]`, or a `ws://`/`wss://` URL.
    ///
    /// A bare loopback host means plaintext `ws://` (a relay on this machine); any other
    /// bare host means `wss://`. `ws://` for a non-loopback host needs `allow_plaintext`.
    pub fn parse(input: &str, allow_plaintext: bool) -> Result<Self, AddressError> {
        let input = input.trim();
        let invalid = |reason: &str| AddressError::InvalidRelay {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = input.strip_prefix("wss://") {
            (Some(true), rest)
        } else if let Some(rest) = input.strip_prefix("ws://") {
            (Some(false), rest)
        } else if input.contains("://") {
            return Err(invalid("the scheme must be ws:// or wss://"));
        } else {
            (None, input)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/" || path == RELAY_PATH) {
            return Err(invalid("the path must be /sotto/v1"));
        }
        if authority.contains('@') {
            return Err(invalid("a relay URL carries no user name"));
        }
        let explicit_port = split_port(authority)?.1;
        let mut host = HostPort::parse(authority)?;
        let tls = tls.unwrap_or(!host.is_loopback());
        if !tls && explicit_port.is_none() {
            host.port = 80;
        }
        if !tls && !host.is_loopback() && !allow_plaintext {
            return Err(AddressError::PlaintextNotAllowed {
                input: input.to_owned(),
            });
        }
        Ok(RelayUrl { tls, host })
    }

    /// Whether the URL uses TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The relay's host and port; an address on this relay has this host part.
    pub fn host(&self) -> &HostPort {
        &self.host
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.tls {
            write!(f, "{scheme}://{}{RELAY_PATH}", self.host)
        } else {
            // ws:// has default port 80, which HostPort does not know: always write it.
            write!(
                f,
                "{scheme}://{}:{}{RELAY_PATH}",
                self.host.host, self.host.port
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        let a = Address::parse("alice@Example.ORG").unwrap();
        assert_eq!(a.to_string(), "alice@example.org");
        assert_eq!(
            Address::parse("bob@example.org:443").unwrap().to_string(),
            "bob@example.org"
        );
        assert_eq!(
            Address::parse("bob@example.org:8443").unwrap().to_string(),
            "bob@example.org:8443"
        );
        assert_eq!(
            Address::parse("x.y_z-1@bücher.example")
                .unwrap()
                .to_string(),
            "x.y_z-1@xn--bcher-kva.example"
        );
        assert_eq!(
            Address::parse("c@[::1]:9000").unwrap().to_string(),
            "c@[::1]:9000"
        );
        assert_eq!(
            Address::parse("c@127.0.0.1:9000").unwrap().host().port(),
            9000
        );
    }

    #[test]
    fn rejected_addresses() {
        for bad in [
            "alice",
            "Alice@x.org",
            "@x.org",
            "-a@x.org",
            "a@",
            "a@x.org:0",
            "a@x.org:99999",
            "a@x.org:",
            &format!("{}@x.org", "a".repeat(33)),
            "a b@x.org",
            "a@b@c",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(Address::parse(&format!("{}@x.org", "a".repeat(32))).is_ok());
    }

    #[test]
    fn relay_urls() {
        let r = |s| RelayUrl::parse(s, false).map(|u| u.to_string());
        assert_eq!(
            r("relay.example.org").unwrap(),
            "wss://relay.example.org/sotto/v1"
        );
        assert_eq!(
            r("wss://Relay.Example.org:443/sotto/v1").unwrap(),
            "wss://relay.example.org/sotto/v1"
        );
        assert_eq!(
            r("relay.example.org:8443").unwrap(),
            "wss://relay.example.org:8443/sotto/v1"
        );
        assert_eq!(r("127.0.0.1:7000").unwrap(), "ws://127.0.0.1:7000/sotto/v1");
        assert_eq!(
            r("ws://localhost:7000/").unwrap(),
            "ws://localhost:7000/sotto/v1"
        );
        assert!(matches!(
            RelayUrl::parse("ws://relay.example.org", false),
            Err(AddressError::PlaintextNotAllowed { .. })
        ));
        assert_eq!(
            RelayUrl::parse("ws://relay.example.org:80", true)
                .unwrap()
                .to_string(),
            "ws://relay.example.org:80/sotto/v1"
        );
        assert!(r("http://relay.example.org").is_err());
        assert!(r("wss://relay.example.org/other").is_err());
        assert!(r("wss://u@relay.example.org").is_err());
    }
}
