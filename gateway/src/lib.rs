//! mqtt-gateway: the library behind the `mqtt-gateway` binary.
//!
//! The gateway terminates client connections (TLS with client certificates, or plain TCP on
//! trusted listeners), inspects every MQTT packet in both directions with [`mqtt_inspect`], decides
//! with an immutable policy snapshot, and relays to an unmodified broker over one upstream TCP
//! connection per client. [`server::start`] is what the binary and the integration tests call.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod close;
pub mod cluster;
pub mod config;
pub mod crl_fetch;
pub mod enroll;
pub mod identity;
pub mod labels;
pub mod limits;
pub mod line_file;
pub mod listener;
pub mod metrics;
pub mod metrics_tls;
pub mod ocsp;
pub mod pki;
pub mod policy;
pub mod reload;
pub mod server;
pub mod session;
pub mod shared;
pub mod tls;
pub mod transport;
pub mod workers;

pub use server::{Running, StartError, start, start_on};
