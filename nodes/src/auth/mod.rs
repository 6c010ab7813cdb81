//! Access control at the node's edge (issue 7): access tokens and their grants, and the
//! `--insecure-dev` mode in which the earlier issues' open defaults apply.

pub mod access;
pub mod tokens;
