//! The relay: this node's QUIC endpoint towards the other nodes of its mesh. `tls` authenticates
//! nodes by a cluster CA; `link` runs one connection (control stream, datagrams); `manager` owns
//! the mesh state (who is interested in which room, which tracks flow over which link) and
//! makes the routing decisions of `kaskade_mesh::core::cascade_route`; `bridge` is what crosses to
//! the media engine.

pub mod bridge;
pub mod link;
pub mod manager;
pub mod tls;
