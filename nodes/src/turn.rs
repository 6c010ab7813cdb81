//! TURN for clients that cannot reach the media port directly: the configured TURN servers
//! (`--turn-url`) with short-lived credentials in coturn's REST-API scheme (`use-auth-secret`
//! with `static-auth-secret` = `--turn-secret`): the username is `<expiry unix time>:<id>`, the
//! password base64(HMAC-SHA1(secret, username)). The TURN server checks both without asking
//! the node; a credential dies at its expiry. Handed to clients in `joined` and in WHIP/WHEP
//! answers' `Link: …; rel="ice-server"` headers (RFC 9725).

use base64::Engine;
use hmac::{Hmac, Mac};
use kaskade_proto::signal::IceServer;
use sha1::Sha1;
use std::time::Duration;

/// The TURN servers and the secret shared with them.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServers {
    pub urls: Vec<String>,
    secret: String,
    pub lifetime: Duration,
}

impl std::fmt::Debug for TurnServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServers")
            .field("urls", &self.urls)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TurnServers {
    pub fn new(urls: Vec<String>, secret: String, lifetime: Duration) -> Self {
        Self {
            urls,
            secret,
            lifetime,
        }
    }

    /// The ICE servers for `id` (a participant or session id), valid from `now_unix` (seconds)
    /// for the configured lifetime.
    pub fn ice_server(&self, id: &str, now_unix: u64) -> IceServer {
        let username = format!("{}:{id}", now_unix + self.lifetime.as_secs());
        let credential = rest_password(&self.secret, &username);
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }
    }

    /// The same, as `Link` header values of a WHIP/WHEP answer.
    pub fn link_headers(&self, id: &str, now_unix: u64) -> Vec<String> {
        let server = self.ice_server(id, now_unix);
        let (user, pass) = (
            server.username.unwrap_or_default(),
            server.credential.unwrap_or_default(),
        );
        server
            .urls
            .iter()
            .map(|url| {
                format!(
                    "<{url}>; rel=\"ice-server\"; username=\"{user}\"; credential=\"{pass}\"; credential-type=\"password\""
                )
            })
            .collect()
    }
}

/// coturn's REST-API password for `username`: base64(HMAC-SHA1(secret, username)).
fn rest_password(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_rest_api_scheme() {
        let turn = TurnServers::new(
            vec!["turn:127.0.0.1:3478?transport=udp".into()],
            "north".into(),
            Duration::from_secs(3600),
        );
        let server = turn.ice_server("p1", 1_700_000_000);
        assert_eq!(server.username.as_deref(), Some("1700003600:p1"));
        // python3 -c "import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b'north',b'1700003600:p1',hashlib.sha1).digest()).decode())"
        assert_eq!(
            server.credential.as_deref(),
            Some("4EEMVinF9VQKZF50YH25G6+f6lw=")
        );
        let links = turn.link_headers("p1", 1_700_000_000);
        assert_eq!(links.len(), 1);
        assert!(links[0].starts_with("<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\""));
        assert!(links[0].contains("username=\"1700003600:p1\""));
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let turn = TurnServers::new(vec![], "hunter2".into(), Duration::from_secs(1));
        assert!(!format!("{turn:?}").contains("hunter2"));
    }
}
