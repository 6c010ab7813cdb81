//! Classifies datagrams arriving on the shared media socket (RFC 7983 first-byte ranges) and reads
//! the ICE username of STUN binding requests, so that the engine can find the session a datagram
//! from a new address belongs to. Pure functions; garbage in gives `None`/`Garbage`, never a panic.

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::Message;

/// What a datagram on the media port is, judged by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramClass {
    Stun,
    Dtls,
    /// RTP or RTCP (SRTP/SRTCP once keys are set).
    Rtp,
    /// Empty, or a first byte outside every range we serve (ZRTP, TURN channels, noise).
    Garbage,
}

pub fn classify(datagram: &[u8]) -> DatagramClass {
    match datagram.first() {
        Some(0..=3) if datagram.len() >= 20 => DatagramClass::Stun,
        Some(20..=63) if datagram.len() >= 13 => DatagramClass::Dtls,
        Some(128..=191) if datagram.len() >= 12 => DatagramClass::Rtp,
        _ => DatagramClass::Garbage,
    }
}

/// The local (our) ufrag named in a STUN request's USERNAME (`ours:theirs`), if it is a
/// well-formed STUN message carrying one.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<String> {
    let mut msg = Message::new();
    msg.unmarshal_binary(datagram).ok()?;
    let username = msg.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    let (ours, _theirs) = username.split_once(':')?;
    (!ours.is_empty()).then(|| ours.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{BINDING_REQUEST, Message};

    fn binding_request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(BINDING_REQUEST);
        m.new_transaction_id().unwrap();
        m.add(ATTR_USERNAME, username.as_bytes());
        m.write_header();
        m.raw.clone()
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&[]), DatagramClass::Garbage);
        assert_eq!(classify(&[0u8; 20]), DatagramClass::Stun);
        assert_eq!(classify(&[0u8; 19]), DatagramClass::Garbage);
        assert_eq!(classify(&[22u8; 40]), DatagramClass::Dtls);
        assert_eq!(classify(&[0x80u8; 40]), DatagramClass::Rtp);
        assert_eq!(classify(&[0x80u8; 11]), DatagramClass::Garbage);
        assert_eq!(classify(&[200u8; 40]), DatagramClass::Garbage);
        assert_eq!(classify(&[64u8; 40]), DatagramClass::Garbage);
    }

    #[test]
    fn reads_local_ufrag_from_binding_request() {
        let raw = binding_request("srvufrag:cliufrag");
        assert_eq!(classify(&raw), DatagramClass::Stun);
        assert_eq!(stun_local_ufrag(&raw).as_deref(), Some("srvufrag"));
    }

    #[test]
    fn garbage_stun_gives_none() {
        assert_eq!(stun_local_ufrag(&[0u8; 20]), None);
        assert_eq!(stun_local_ufrag(&[1, 1, 0, 200]), None);
        let raw = binding_request("nocolon");
        assert_eq!(stun_local_ufrag(&raw), None);
        let mut truncated = binding_request("a:b");
        truncated.truncate(24);
        assert_eq!(stun_local_ufrag(&truncated), None);
    }
}
