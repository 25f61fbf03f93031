//! Test support, by what it provides:
//! - [`pki`]: the test PKI (rcgen root and intermediate CAs, server and client certificates,
//!   CRLs) and the client-side TLS settings that present it;
//! - [`gateway`]: a real Mosquitto and the gateway in front of it ([`Setup`], [`TestGateway`]),
//!   the broker side, `mosquitto_pub` through the gateway, `/metrics` and audit readers;
//! - [`wire`]: the raw MQTT client (plain TCP or TLS) and frame builders, for byte-level cases;
//! - [`reload`]: hot-reload helpers; [`shim`]: a TLS shim for plain-TCP-only clients;
//! - [`redis`]: a real `redis-server` for the `[cluster]` tests.

#![allow(
    dead_code,
    unreachable_pub,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod gateway;
pub mod pki;
pub mod redis;
pub mod reload;
pub mod shim;
pub mod wire;

pub use gateway::*;
pub use pki::*;
pub use wire::connect_frame;
