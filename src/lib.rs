//! Portico: a load-balancing HTTP gateway on Pingora. `build` wires a validated
//! [`config::Config`] into a Pingora `Server`; `main.rs` and the tests share that seam.
#![forbid(unsafe_code)]

pub mod config;
pub mod balancer;
pub mod health;
pub mod pool;
