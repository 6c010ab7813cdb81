//! Client IP addresses in logs. Logs are often kept longer than the connection-data retention
//! (`--connection-data-retention-days`), so by default an address is logged shortened to its
//! network (IPv4 /24, IPv6 /48, no port): enough to tell networks apart when debugging, not
//! enough to name a household. `--log-addresses full` logs them whole, for a troubleshooting
//! session whose logs are deleted within the retention. Only the media engine logs a client
//! address (at `debug`, when a session's remote address changes); see docs/security.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// How client addresses appear in logs.
#[derive(clap::ValueEnum, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AddressLogging {
    /// The network only: IPv4 /24, IPv6 /48, no port.
    #[default]
    Short,
    /// Address and port.
    Full,
}

static MODE: OnceLock<AddressLogging> = OnceLock::new();

/// Sets the mode for the process (the first call wins; before it, addresses are shortened).
pub fn set_mode(mode: AddressLogging) {
    let _ = MODE.set(mode);
}

/// A client address as the log shows it: `tracing::debug!(remote = %LoggedAddress(addr), …)`.
pub struct LoggedAddress(pub SocketAddr);

impl std::fmt::Display for LoggedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        format(self.0, MODE.get().copied().unwrap_or_default(), f)
    }
}

fn format(
    addr: SocketAddr,
    mode: AddressLogging,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    if mode == AddressLogging::Full {
        return write!(f, "{addr}");
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            write!(f, "{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            write!(f, "{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct With(SocketAddr, AddressLogging);

    impl std::fmt::Display for With {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            format(self.0, self.1, f)
        }
    }

    #[test]
    fn short_keeps_only_the_network() {
        let v4: SocketAddr = "192.0.2.77:50123".parse().unwrap();
        let v6: SocketAddr = "[2001:db8:aa:bb:cc::1]:443".parse().unwrap();
        assert_eq!(With(v4, AddressLogging::Short).to_string(), "192.0.2.0/24");
        assert_eq!(
            With(v6, AddressLogging::Short).to_string(),
            "2001:db8:aa::/48"
        );
        assert_eq!(
            With(v4, AddressLogging::Full).to_string(),
            "192.0.2.77:50123"
        );
    }

    #[test]
    fn the_default_is_short() {
        let v4: SocketAddr = "198.51.100.9:1".parse().unwrap();
        assert_eq!(AddressLogging::default(), AddressLogging::Short);
        if MODE.get().is_none() {
            assert_eq!(LoggedAddress(v4).to_string(), "198.51.100.0/24");
        }
    }
}
