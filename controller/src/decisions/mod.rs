//! The decision record: every routed request leaves one record (its metadata, never the
//! prompt; the snapshot the policy saw, stored once per snapshot; the policy, its decision,
//! any fault; and how it turned out), kept in an embedded database in the controller's data
//! directory within a size and age bound, queried and exported over the admin API, imported
//! elsewhere, and replayed through another policy.

pub mod record;
pub mod replay;
pub mod store;

pub use record::{DecisionRecord, Draft, Outcome, RecordedDecision};
pub use store::{DecisionStore, ExportLine, Query, StoreOptions};
