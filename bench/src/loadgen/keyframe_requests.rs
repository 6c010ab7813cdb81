//! `loadgen::keyframe_requests`: the interceptor that lets a publisher see keyframe requests.
//!
//! `rtc` ends inbound RTCP at the end of its interceptor chain unless an interceptor marks a
//! packet for the application ([`Attribute::DeliverToApplication`]). [`KeyframeRequestsToApp`]
//! marks the compound packets that carry a PLI or a FIR, so the publisher session can answer
//! them with a keyframe; reports and NACKs stay inside the chain (the publisher does not
//! retransmit).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where it sits in the chain: after the built-in readers of inbound RTCP, before the terminus.
pub const SLOT: usize = 12_500;

/// Marks inbound RTCP that carries a PLI or FIR for the application.
#[derive(Default)]
pub struct KeyframeRequestsToApp {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// True if any packet of the compound asks for a keyframe.
pub fn asks_for_keyframe(packets: &[Box<dyn rtc::rtcp::packet::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && asks_for_keyframe(packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequestsToApp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
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
