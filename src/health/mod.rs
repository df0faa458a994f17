//! The active health checker: the probing loop ([`checker`]) and one probe ([`probe`]). What a
//! probe result does to a backend (rise/fall, ejection) lives in [`crate::backend`].

pub mod checker;
pub mod grpc;
pub mod probe;

pub use checker::HealthChecker;
pub use probe::{probe_reason, Prober};
