//! Small parsers: the public URL, addresses and device ids, CIDR ranges.

use std::net::IpAddr;
use std::str::FromStr;

use sotto_protocol::relay::WS_PATH;

/// The relay's canonical public URL, e.g. `wss://relay.example/sotto/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    url: String,
    authority: String,
}

impl PublicUrl {
    /// The canonical URL string (what proofs sign).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// `host[:port]` with the default port omitted: the host part of local addresses.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Builds the canonical URL for a host and port.
    pub fn from_parts(tls: bool, host: &str, port: u16) -> Self {
        let scheme = if tls { "wss" } else { "ws" };
        let default = if tls { 443 } else { 80 };
        let host = host.to_ascii_lowercase();
        let authority = if port == default {
            host
        } else {
            format!("{host}:{port}")
        };
        PublicUrl {
            url: format!("{scheme}://{authority}{WS_PATH}"),
            authority,
        }
    }
}

impl FromStr for PublicUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(format!("public url {s:?} must start with wss:// or ws://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && path != WS_PATH {
            return Err(format!("public url path must be {WS_PATH}, not {path:?}"));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("public url {s:?} has no valid host[:port]"))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        Ok(PublicUrl::from_parts(tls, host, port))
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &authority[..end + 2];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// A parsed account address `name@host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAddress<'a> {
    /// The account name.
    pub name: &'a str,
    /// `host[:port]`.
    pub host: &'a str,
}

/// Parses an address; `None` if it does not follow the grammar.
pub fn parse_address(address: &str) -> Option<ParsedAddress<'_>> {
    let (name, host) = address.split_once('@')?;
    if !valid_name(name) || host.is_empty() || host.len() > 255 {
        return None;
    }
    let ok_host = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b));
    ok_host.then_some(ParsedAddress { name, host })
}

/// `[a-z0-9][a-z0-9._-]{0,31}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// `[A-Za-z0-9._-]{1,64}`.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// An IP range such as `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => mask_eq(&n.octets(), &i.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(i)) => mask_eq(&n.octets(), &i.octets(), self.prefix),
            _ => false,
        }
    }
}

/// Maps IPv4-mapped IPv6 addresses to IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rem = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    (a[full] & mask) == (b[full] & mask)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip.parse().map_err(|_| format!("bad address in {s:?}"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("bad prefix in {s:?}"))?,
            None => max,
        };
        if prefix > max {
            return Err(format!("prefix too long in {s:?}"));
        }
        Ok(Cidr { net, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_canonical() {
        let u: PublicUrl = "wss://Relay.Example:443/sotto/v1".parse().expect("url");
        assert_eq!(u.as_str(), "wss://relay.example/sotto/v1");
        assert_eq!(u.authority(), "relay.example");
        let u: PublicUrl = "ws://127.0.0.1:8080".parse().expect("url");
        assert_eq!(u.as_str(), "ws://127.0.0.1:8080/sotto/v1");
        assert_eq!(u.authority(), "127.0.0.1:8080");
        assert!("https://x/sotto/v1".parse::<PublicUrl>().is_err());
        assert!("wss://x/other".parse::<PublicUrl>().is_err());
        let u: PublicUrl = "wss://[::1]:9000/sotto/v1".parse().expect("v6");
        assert_eq!(u.authority(), "[::1]:9000");
    }

    #[test]
    fn addresses_and_names() {
        let a = parse_address("alice@relay.example:8443").expect("addr");
        assert_eq!(a.name, "alice");
        assert_eq!(a.host, "relay.example:8443");
        assert!(parse_address("Alice@x").is_none());
        assert!(parse_address("@x").is_none());
        assert!(parse_address("a@").is_none());
        assert!(valid_name("a.b-c_d9"));
        assert!(!valid_name(".a"));
        assert!(!valid_name(&"a".repeat(33)));
        assert!(valid_device_id("d-1"));
        assert!(!valid_device_id("a/b"));
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        let c6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(c6.contains("fd12::1".parse().expect("ip")));
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
    }
}
