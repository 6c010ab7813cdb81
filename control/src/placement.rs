//! Placement as a pure function: which live node takes a room's participants of a site. Both
//! backends call [`choose_node`], so placement behaves the same with and without etcd.

use crate::NodeRecord;

/// Whether `node` may take new placements.
pub fn accepts_placements(node: &NodeRecord) -> bool {
    !node.draining
}

/// The least-loaded node that accepts placements in the first of `sites` (nearest first) that
/// has one; ties go to the smaller id so every node decides the same.
pub fn choose_node<'a>(
    nodes: impl IntoIterator<Item = &'a NodeRecord> + Clone,
    sites: &[String],
) -> Option<&'a NodeRecord> {
    sites.iter().find_map(|site| {
        nodes
            .clone()
            .into_iter()
            .filter(|n| &n.site == site && accepts_placements(n))
            .min_by_key(|n| load_key(n))
    })
}

fn load_key(n: &NodeRecord) -> (u64, u64, u64, u32, &str) {
    (
        n.load.sessions,
        n.load.tracks,
        n.load.packets_per_sec,
        n.load.cpu_percent,
        n.id.as_str(),
    )
}

/// Sites in order of preference for a participant of `home`: `home` first, then the others by
/// the configured distance (unknown distances last, ties by name). `known` lists every site
/// the caller knows of (e.g. the sites of live nodes).
pub fn sites_by_distance(
    home: &str,
    known: impl IntoIterator<Item = String>,
    distance: impl Fn(&str, &str) -> Option<u32>,
) -> Vec<String> {
    let mut others: Vec<String> = known.into_iter().filter(|s| s != home).collect();
    others.sort();
    others.dedup();
    others.sort_by_key(|s| distance(home, s).unwrap_or(u32::MAX));
    let mut out = vec![home.to_string()];
    out.extend(others);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeLoad;

    fn node(id: &str, site: &str, sessions: u64, draining: bool) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            site: site.into(),
            http_url: String::new(),
            media_addr: String::new(),
            relay_addr: String::new(),
            load: NodeLoad {
                sessions,
                ..NodeLoad::default()
            },
            draining,
            links: Vec::new(),
        }
    }

    fn sites(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn least_loaded_node_of_the_first_site_with_one() {
        let nodes = [
            node("a1", "a", 5, false),
            node("a2", "a", 1, true),
            node("b1", "b", 3, false),
            node("b2", "b", 2, false),
        ];
        assert_eq!(
            choose_node(&nodes, &sites(&["a", "b"])).unwrap().id,
            "a1",
            "draining a2 is skipped even though it is less loaded"
        );
        assert_eq!(choose_node(&nodes, &sites(&["c", "b"])).unwrap().id, "b2");
        assert!(choose_node(&nodes, &sites(&["c"])).is_none());
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let nodes = [node("n2", "a", 0, false), node("n1", "a", 0, false)];
        assert_eq!(choose_node(&nodes, &sites(&["a"])).unwrap().id, "n1");
    }

    #[test]
    fn sites_are_ordered_by_distance() {
        let d = |a: &str, b: &str| match (a, b) {
            ("a", "c") => Some(10),
            ("a", "b") => Some(50),
            _ => None,
        };
        let known = sites(&["d", "b", "c", "a", "b"]);
        assert_eq!(
            sites_by_distance("a", known, d),
            sites(&["a", "c", "b", "d"])
        );
    }
}
