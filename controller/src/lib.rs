//! Switchyard's controller: the endpoint for prompts, the policy engine that decides where
//! each goes, the node table, and the admin API.

pub mod policy;
pub mod seed_cluster;
