//! `RtcpToApplication`: the interceptor that lets chosen inbound RTCP reach the application.
//! webrtc-rs ends inbound RTCP at the end of its interceptor chain unless an interceptor vouches
//! for a packet; this one vouches for the compound packets its predicate picks. The node's
//! subscriber sessions use [`RtcpToApplication::forwarder_feedback`] (NACK, PLI, FIR: the
//! forwarder answers those from its packet cache, or by asking the publisher for a keyframe);
//! the load generator's publishers use it for keyframe requests. Reports stay with the
//! interceptors that act on them. With [`RtcpToApplication::with_estimate`] it also copies the
//! congestion controller's target (an attribute on the feedback that produced it) into a
//! [`SharedEstimate`] for the media loop.

use super::bandwidth::SharedEstimate;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// Where it sits: after every built-in reader of inbound RTCP, before the terminus.
pub const FEEDBACK_SLOT: usize = 12_500;

/// Which RTCP compounds go to the application.
pub type RtcpFilter = fn(&[Box<dyn rtc::rtcp::packet::Packet>]) -> bool;

/// Marks the inbound RTCP compounds its filter picks for the application.
pub struct RtcpToApplication {
    deliver: RtcpFilter,
    estimate: Option<SharedEstimate>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtcpToApplication {
    pub fn new(deliver: RtcpFilter) -> Self {
        Self {
            deliver,
            estimate: None,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// NACK, PLI and FIR: what the forwarder acts on.
    pub fn forwarder_feedback() -> Self {
        Self::new(is_forwarder_feedback)
    }

    /// Also records the send-side bandwidth estimate (it must sit application-ward of the
    /// congestion controller, as [`FEEDBACK_SLOT`] does).
    pub fn with_estimate(mut self, estimate: SharedEstimate) -> Self {
        self.estimate = Some(estimate);
        self
    }
}

/// True if any packet of the compound is one the forwarder acts on.
pub fn is_forwarder_feedback(packets: &[Box<dyn rtc::rtcp::packet::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<TransportLayerNack>()
            || any.is::<PictureLossIndication>()
            || any.is::<FullIntraRequest>()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(estimate) = &self.estimate
            && let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
                msg.message.get(&Attribute::TargetBitrateChanged {
                    bits_per_second: 0.0,
                })
        {
            estimate.record_pacing_target(*bits_per_second);
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && (self.deliver)(packets)
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

impl Interceptor for RtcpToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn vouches_for_feedback_not_reports() {
        let report: Box<dyn rtc::rtcp::packet::Packet> = Box::new(ReceiverReport::default());
        let nack: Box<dyn rtc::rtcp::packet::Packet> = Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![NackPair::new(7)],
        });
        let pli: Box<dyn rtc::rtcp::packet::Packet> = Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        });
        assert!(!is_forwarder_feedback(&[report]));
        let report: Box<dyn rtc::rtcp::packet::Packet> = Box::new(ReceiverReport::default());
        assert!(is_forwarder_feedback(&[report, nack]));
        assert!(is_forwarder_feedback(&[pli]));
    }
}
