//! What a room asks the node to enforce beyond itself: a host banned a member, so its account (or
//! invite) must not get back in — on any node, later too. The room knows the member's account
//! only on the member's own node, so that node's room reports the ban; the node keeps it where
//! every node's access control checks joins.

use kaskade_proto::RoomName;

/// Enforces bans for rooms.
pub trait RoomGuard: Send + Sync {
    /// `user` (an account or `guest-…` invite) may not join `room` again.
    fn ban(&self, room: &RoomName, user: &str);
}
