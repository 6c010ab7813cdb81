//! Who may do what in a room — pure rules, no actor state: the role a joining participant is
//! granted, whether a moderation request is allowed, and who is told about whom (audience members
//! are listed to hosts only, so a class of a thousand does not send everyone a thousand joins).
//! The `Room` actor applies these; the node, not the page, enforces them.

use kaskade_proto::signal::{ModerationAction, Role, RoomSettings};

/// What the room knows when someone joins.
#[derive(Debug, Clone, Copy)]
pub struct JoinContext {
    /// No listed member yet (hidden viewers do not count).
    pub room_is_empty: bool,
    /// Some member, on this node or another, is a host.
    pub has_host: bool,
    pub settings: RoomSettings,
}

/// Who joins as far as access control knows, the role it asks for and the highest one its access
/// allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinAccess {
    /// The authenticated user (for the audit log); `None` without access control.
    pub user: Option<String>,
    /// Access control says this joiner waits in the room's lobby.
    pub lobby: bool,
    /// The settings access control keeps for the room (a room opening here starts with them).
    pub kept: Option<crate::admission::KeptSettings>,
    pub requested: Option<Role>,
    /// From access control: `Host` for a token with the moderate grant, `Speaker` with publish,
    /// `Audience` otherwise. `None` without access control (`--insecure-dev`): the room's own
    /// rules (first participant hosts, `host` while the room has none).
    pub ceiling: Option<Role>,
}

impl JoinAccess {
    pub fn open(requested: Option<Role>) -> Self {
        Self {
            user: None,
            lobby: false,
            kept: None,
            requested,
            ceiling: None,
        }
    }
}

/// The role granted at join, and why the one asked for was not granted (if it was not).
pub fn role_at_join(request: &JoinAccess, room: JoinContext) -> (Role, Option<&'static str>) {
    let default = if room.settings.only_hosts_publish {
        Role::Audience
    } else {
        Role::Speaker
    };
    let requested = request.requested;
    match request.ceiling {
        None => {}
        // A moderator's access makes it a host unless it asks for less.
        Some(Role::Host) => return (requested.unwrap_or(Role::Host), None),
        Some(Role::Speaker) => {
            return match requested {
                Some(Role::Host) => (default, Some("your access does not include hosting")),
                Some(Role::Audience) => (Role::Audience, None),
                Some(Role::Speaker) if default == Role::Audience => (
                    Role::Audience,
                    Some("only hosts publish in this room; raise your hand to be promoted"),
                ),
                _ => (default, None),
            };
        }
        Some(Role::Audience) => {
            let note = match requested {
                Some(Role::Host | Role::Speaker) => {
                    Some("your access lets you watch and listen; raise your hand to speak")
                }
                _ => None,
            };
            return (Role::Audience, note);
        }
    }
    match requested {
        Some(Role::Audience) => (Role::Audience, None),
        None if room.room_is_empty => (Role::Host, None),
        None => (default, None),
        Some(Role::Host) if !room.has_host => (Role::Host, None),
        Some(Role::Host) => (
            default,
            Some("the room already has a host; ask a host to make you one"),
        ),
        Some(Role::Speaker) if default == Role::Audience => (
            Role::Audience,
            Some("only hosts publish in this room; raise your hand to be promoted"),
        ),
        Some(Role::Speaker) => (Role::Speaker, None),
    }
}

/// Why a moderation request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModerationRefusal {
    #[error("only hosts may do this")]
    NotAHost,
    #[error("hosts cannot be muted or removed by a mute-all")]
    HostInMuteAll,
}

/// May `actor` apply `action` to a participant whose role is `target`? `everyone` is true for a
/// mute-all, which leaves hosts alone.
pub fn check_moderation(
    actor: Role,
    target: Role,
    action: ModerationAction,
    everyone: bool,
) -> Result<(), ModerationRefusal> {
    if !actor.may_moderate() {
        return Err(ModerationRefusal::NotAHost);
    }
    if everyone && target == Role::Host && matches!(action, ModerationAction::Mute { .. }) {
        return Err(ModerationRefusal::HostInMuteAll);
    }
    Ok(())
}

/// Is `viewer` told about `subject` by name (joins, leaves, updates)? Audience members are
/// listed to hosts only; everyone learns about themselves.
pub fn listed_to(viewer: Role, subject: Role, viewer_is_subject: bool) -> bool {
    viewer_is_subject || subject != Role::Audience || viewer == Role::Host
}

/// What a viewer is told when `subject` changes from `old` to `new` role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingChange {
    /// Listed before and after: an update.
    Updated,
    /// Becomes listed: a join.
    Appears,
    /// No longer listed: a leave.
    Disappears,
    Nothing,
}

pub fn listing_change(
    viewer: Role,
    old: Role,
    new: Role,
    viewer_is_subject: bool,
) -> ListingChange {
    match (
        listed_to(viewer, old, viewer_is_subject),
        listed_to(viewer, new, viewer_is_subject),
    ) {
        (true, true) => ListingChange::Updated,
        (false, true) => ListingChange::Appears,
        (true, false) => ListingChange::Disappears,
        (false, false) => ListingChange::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaskade_proto::signal::MediaKind;

    fn room(empty: bool, has_host: bool, classroom: bool) -> JoinContext {
        JoinContext {
            room_is_empty: empty,
            has_host,
            settings: RoomSettings {
                only_hosts_publish: classroom,
                locked: false,
                lobby: false,
            },
        }
    }

    #[test]
    fn the_first_participant_hosts_unless_it_asks_for_less() {
        assert_eq!(
            role_at_join(&JoinAccess::open(None), room(true, false, false)).0,
            Role::Host
        );
        assert_eq!(
            role_at_join(
                &JoinAccess::open(Some(Role::Audience)),
                room(true, false, false)
            )
            .0,
            Role::Audience
        );
        assert_eq!(
            role_at_join(
                &JoinAccess::open(Some(Role::Speaker)),
                room(true, false, false)
            )
            .0,
            Role::Speaker
        );
    }

    #[test]
    fn host_is_granted_only_while_the_room_has_none() {
        assert_eq!(
            role_at_join(
                &JoinAccess::open(Some(Role::Host)),
                room(false, false, false)
            ),
            (Role::Host, None)
        );
        let (role, why) = role_at_join(
            &JoinAccess::open(Some(Role::Host)),
            room(false, true, false),
        );
        assert_eq!(role, Role::Speaker);
        assert!(why.is_some());
    }

    #[test]
    fn only_hosts_publish_makes_newcomers_audience() {
        assert_eq!(
            role_at_join(&JoinAccess::open(None), room(false, true, true)).0,
            Role::Audience
        );
        let (role, why) = role_at_join(
            &JoinAccess::open(Some(Role::Speaker)),
            room(false, true, true),
        );
        assert_eq!(role, Role::Audience);
        assert!(why.unwrap().contains("raise your hand"));
    }

    #[test]
    fn access_control_caps_the_role_at_join() {
        let with = |requested, ceiling| JoinAccess {
            user: None,
            lobby: false,
            kept: None,
            requested,
            ceiling: Some(ceiling),
        };
        // A host account hosts even a room that has one; an empty room does not make a
        // participant account its host.
        assert_eq!(
            role_at_join(&with(None, Role::Host), room(false, true, false)),
            (Role::Host, None)
        );
        assert_eq!(
            role_at_join(
                &with(Some(Role::Audience), Role::Host),
                room(false, true, false)
            )
            .0,
            Role::Audience
        );
        assert_eq!(
            role_at_join(&with(None, Role::Speaker), room(true, false, false)),
            (Role::Speaker, None)
        );
        let (role, why) = role_at_join(
            &with(Some(Role::Host), Role::Speaker),
            room(true, false, false),
        );
        assert_eq!(role, Role::Speaker);
        assert!(why.unwrap().contains("hosting"));
        assert_eq!(
            role_at_join(&with(None, Role::Speaker), room(false, true, true)).0,
            Role::Audience
        );
        let (role, why) = role_at_join(
            &with(Some(Role::Speaker), Role::Audience),
            room(true, false, false),
        );
        assert_eq!(role, Role::Audience);
        assert!(why.is_some());
        assert_eq!(
            role_at_join(&with(None, Role::Audience), room(true, false, false)),
            (Role::Audience, None)
        );
    }

    #[test]
    fn only_hosts_moderate_and_mute_all_spares_hosts() {
        let mute = ModerationAction::Mute {
            kind: MediaKind::Audio,
        };
        assert_eq!(
            check_moderation(
                Role::Speaker,
                Role::Audience,
                ModerationAction::Remove { ban: false },
                false
            ),
            Err(ModerationRefusal::NotAHost)
        );
        assert_eq!(
            check_moderation(Role::Audience, Role::Speaker, mute, false),
            Err(ModerationRefusal::NotAHost)
        );
        assert!(check_moderation(Role::Host, Role::Speaker, mute, true).is_ok());
        assert_eq!(
            check_moderation(Role::Host, Role::Host, mute, true),
            Err(ModerationRefusal::HostInMuteAll)
        );
        assert!(check_moderation(Role::Host, Role::Host, mute, false).is_ok());
    }

    #[test]
    fn audience_is_listed_to_hosts_and_to_itself() {
        assert!(listed_to(Role::Host, Role::Audience, false));
        assert!(!listed_to(Role::Speaker, Role::Audience, false));
        assert!(!listed_to(Role::Audience, Role::Audience, false));
        assert!(listed_to(Role::Audience, Role::Audience, true));
        assert!(listed_to(Role::Audience, Role::Speaker, false));
    }

    #[test]
    fn promotion_appears_to_non_hosts_and_updates_hosts() {
        use ListingChange::*;
        assert_eq!(
            listing_change(Role::Speaker, Role::Audience, Role::Speaker, false),
            Appears
        );
        assert_eq!(
            listing_change(Role::Host, Role::Audience, Role::Speaker, false),
            Updated
        );
        assert_eq!(
            listing_change(Role::Speaker, Role::Speaker, Role::Audience, false),
            Disappears
        );
        assert_eq!(
            listing_change(Role::Audience, Role::Audience, Role::Audience, false),
            Nothing
        );
        assert_eq!(
            listing_change(Role::Audience, Role::Audience, Role::Speaker, true),
            Updated
        );
    }
}
