//! The pure forwarding core: decisions on the packet path, no I/O, time passed in.
//!
//! Every type here is a plain struct driven by its caller with an explicit `Instant`; nothing
//! reads the clock, spawns, or touches the network. Payload parsers are total: truncated or
//! garbage bytes yield `None`/`false`, never a panic.

pub mod audio_level;
pub mod av1_keyframe;
pub mod bandwidth_allocator;
pub mod cascade_route;
pub mod codec;
pub mod dominant_speaker;
pub mod h264_keyframe;
pub mod keyframe_request_throttle;
pub mod layer_bitrate;
pub mod layer_selector;
pub mod link_quality;
pub mod packet_cache;
pub mod published_layer_gate;
pub mod reconnect_backoff;
pub mod retransmission_budget;
pub mod sequence_rewriter;
pub mod upstream_loss_detector;
pub mod vp8_descriptor;
pub mod vp8_rewriter;
pub mod vp9_keyframe;

#[cfg(test)]
mod test_support;

pub use audio_level::AudioLevelWindow;
pub use bandwidth_allocator::{
    Allocation, SubscribedVideoTrack, SubscriberBandwidthAllocator, VideoPriority,
};
pub use codec::{VideoCodec, is_keyframe_start};
pub use dominant_speaker::DominantSpeakerDetector;
pub use keyframe_request_throttle::{DEFAULT_KEYFRAME_REQUEST_INTERVAL, KeyframeRequestThrottle};
pub use layer_bitrate::LayerBitrateMeter;
pub use layer_selector::{LAYER_TIMEOUT, LayerDecision, MAX_LAYER, SimulcastLayerSelector};
pub use link_quality::{IntervalStats, LinkQuality};
pub use packet_cache::PacketCache;
pub use published_layer_gate::PublishedLayerGate;
pub use reconnect_backoff::ReconnectBackoff;
pub use retransmission_budget::RetransmissionBudget;
pub use sequence_rewriter::{RewrittenHeader, SequenceRewriter};
pub use upstream_loss_detector::{UpstreamArrival, UpstreamLossDetector};
pub use vp8_descriptor::{PictureIdWidth, Vp8Descriptor, vp8_descriptor};
pub use vp8_rewriter::Vp8PictureIdRewriter;
