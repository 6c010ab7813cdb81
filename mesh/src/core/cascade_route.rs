//! Cascade routing: which node a track is pulled from, so that every stream crosses every link
//! between two nodes at most once and each inter-site link carries it once. Sites form a tree
//! per track: the origin node serves the nodes of its own site directly; for another site, the
//! first node of that site that subscribes becomes the site's relay, and the origin sends every
//! later subscriber from that site to it. The origin decides, one subscription at a time, so two
//! nodes racing to become a site's relay cannot both win.

/// What the node receiving a subscription does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Send the track to the requester.
    Serve,
    /// Tell the requester to subscribe at this node of its own site instead.
    Redirect(String),
}

/// A subscription this node already serves for the track: who receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedPeer<'a> {
    pub node: &'a str,
    pub site: &'a str,
}

/// Decides a subscription from `requester` (in `requester_site`) for a track.
///
/// - A node that relays a track it does not originate serves whoever the origin sent to it.
/// - The origin serves nodes of its own site directly (inside a site, nodes connect directly).
/// - For another site, the origin redirects to a node of that site it already serves (the
///   site's relay); if there is none, the requester becomes that relay and is served.
pub fn decide_subscribe<'a>(
    my_site: &str,
    is_origin: bool,
    requester: &str,
    requester_site: &str,
    served: impl IntoIterator<Item = ServedPeer<'a>>,
) -> SubscribeDecision {
    if !is_origin || requester_site == my_site {
        return SubscribeDecision::Serve;
    }
    let relay = served
        .into_iter()
        .filter(|p| p.site == requester_site && p.node != requester)
        .map(|p| p.node)
        .min();
    match relay {
        Some(node) => SubscribeDecision::Redirect(node.to_owned()),
        None => SubscribeDecision::Serve,
    }
}

/// Where a node subscribes for a remote track: at the node a redirect named, else at the origin.
/// A redirect to a node that is no longer reachable is forgotten by the caller, which then falls
/// back to the origin.
pub fn upstream_for<'a>(origin: &'a str, redirect: Option<&'a str>) -> &'a str {
    redirect.unwrap_or(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<ServedPeer<'a>> {
        list.iter()
            .map(|(node, site)| ServedPeer { node, site })
            .collect()
    }

    #[test]
    fn origin_serves_its_own_site_directly() {
        let legs = [("n2", "a")];
        assert_eq!(
            decide_subscribe("a", true, "n5", "a", served(&legs)),
            SubscribeDecision::Serve
        );
    }

    #[test]
    fn first_node_of_another_site_becomes_its_relay() {
        assert_eq!(
            decide_subscribe("a", true, "n3", "b", served(&[("n2", "a")])),
            SubscribeDecision::Serve
        );
    }

    #[test]
    fn later_nodes_of_that_site_are_sent_to_the_relay() {
        let legs = [("n2", "a"), ("n3", "b")];
        assert_eq!(
            decide_subscribe("a", true, "n4", "b", served(&legs)),
            SubscribeDecision::Redirect("n3".into())
        );
        // The relay itself re-subscribing (after a reconnect) is served, not sent to itself.
        assert_eq!(
            decide_subscribe("a", true, "n3", "b", served(&legs)),
            SubscribeDecision::Serve
        );
    }

    #[test]
    fn the_choice_of_relay_is_deterministic() {
        let legs = [("n9", "b"), ("n3", "b")];
        assert_eq!(
            decide_subscribe("a", true, "n4", "b", served(&legs)),
            SubscribeDecision::Redirect("n3".into())
        );
    }

    #[test]
    fn a_relay_serves_whoever_the_origin_sent() {
        let legs = [("n4", "b")];
        assert_eq!(
            decide_subscribe("b", false, "n5", "b", served(&legs)),
            SubscribeDecision::Serve
        );
        assert_eq!(
            decide_subscribe("b", false, "n7", "c", served(&legs)),
            SubscribeDecision::Serve
        );
    }

    #[test]
    fn upstream_is_the_redirect_target_or_the_origin() {
        assert_eq!(upstream_for("n1", None), "n1");
        assert_eq!(upstream_for("n1", Some("n3")), "n3");
    }
}
