//! Listen addresses as the Collector's configs write them: `host:port`
//! with an IP address, a hostname (`localhost:4317`), `[::]:4317`, or no
//! host at all (`:4317`, every interface). A hostname is resolved once,
//! when the config is read; its first IPv4 address is bound, else its
//! first.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

use serde::{de, Deserialize, Deserializer};

/// Why a listen address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error(
        "listen address {0:?} is not host:port (e.g. 0.0.0.0:4317, localhost:4317, [::]:4317)"
    )]
    Form(String),
    #[error("listen address {0:?}: {1}")]
    Resolve(String, String),
}

/// Parses and resolves a listen address.
pub fn parse(s: &str) -> Result<SocketAddr, ListenError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let form = || ListenError::Form(s.to_owned());
    let (host, port) = s.rsplit_once(':').ok_or_else(form)?;
    let port: u16 = port.parse().map_err(|_| form())?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    // A bracketed IPv6 address parsed above already; brackets around a
    // name, or an unbracketed IPv6 address, are not host:port.
    if host.contains([':', '[', ']', '/']) || host.contains(char::is_whitespace) {
        return Err(form());
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ListenError::Resolve(s.to_owned(), e.to_string()))?
        .collect();
    // IPv4 first, as the Collector (Go) does for `localhost`: glibc may
    // list ::1 first, which a container without IPv6 cannot bind, and
    // senders on 127.0.0.1 would not reach.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ListenError::Resolve(s.to_owned(), "the name has no address".into()))
}

/// `#[serde(deserialize_with = "crate::net::listen::deserialize")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collectors_forms() {
        let p = |s: &str| parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p("0.0.0.0:4317"), SocketAddr::from(([0, 0, 0, 0], 4317)));
        assert_eq!(p("[::]:4318").to_string(), "[::]:4318");
        assert_eq!(p(":4317"), SocketAddr::from(([0, 0, 0, 0], 4317)));
        assert!(p("localhost:4317").ip().is_loopback());
        assert!(
            p("localhost:4317").is_ipv4(),
            "IPv4 first, as the Collector"
        );
        assert_eq!(p("localhost:4317").port(), 4317);
    }

    #[test]
    fn refusals_say_what_is_expected() {
        for bad in [
            "4317",
            "localhost",
            "host:port",
            ":: 1:4317",
            "http://x:4317",
            "[x]:1",
        ] {
            assert!(
                matches!(parse(bad), Err(ListenError::Form(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        assert!(matches!(
            parse("no-such-host.invalid:4317"),
            Err(ListenError::Resolve(..))
        ));
    }
}
