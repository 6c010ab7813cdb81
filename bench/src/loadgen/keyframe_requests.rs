//! `loadgen::keyframe_requests`: how a publisher session sees keyframe requests.
//!
//! `rtc` ends inbound RTCP at the end of its interceptor chain unless an interceptor marks a
//! packet for the application. The node's [`RtcpToApplication`] does that with a filter; here
//! the filter is [`asks_for_keyframe`] (PLI or FIR), so the publisher session can answer with a
//! keyframe; reports and NACKs stay inside the chain (the publisher does not retransmit).

use kaskade_node::edge::feedback_interceptor::{FEEDBACK_SLOT, RtcpToApplication};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

/// Where it sits in the chain: after the built-in readers of inbound RTCP, before the terminus.
pub const SLOT: usize = FEEDBACK_SLOT;

/// True if any packet of the compound asks for a keyframe.
pub fn asks_for_keyframe(packets: &[Box<dyn rtc::rtcp::packet::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

/// The interceptor that passes keyframe requests to the publisher session.
pub fn to_application() -> RtcpToApplication {
    RtcpToApplication::new(asks_for_keyframe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::packet::Packet as RtcpPacket;
    use rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;
    use rtc::rtcp::receiver_report::ReceiverReport;

    #[test]
    fn marks_keyframe_requests_not_reports() {
        let report = || -> Box<dyn RtcpPacket> { Box::new(ReceiverReport::default()) };
        let pli: Box<dyn RtcpPacket> = Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        });
        let fir: Box<dyn RtcpPacket> = Box::new(FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: 2,
                sequence_number: 1,
            }],
        });
        assert!(!asks_for_keyframe(&[report()]));
        assert!(asks_for_keyframe(&[report(), pli]));
        assert!(asks_for_keyframe(&[fir]));
    }
}
