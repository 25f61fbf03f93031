//! The bytes under MQTT: how a client's connection and the broker's are carried. No decision is
//! made here; `session` reads and writes through these streams.
//!
//! - [`io`]: a client's stream (plain TCP, TLS, WebSocket) as one type, and waiting for input
//!   without holding a buffer;
//! - [`broker_stream`]: the connection to the broker (TCP or a Unix socket) and its address;
//! - [`websocket`]: the HTTP upgrade of a `protocol = "websocket"` listener and its framing;
//! - [`proxy_protocol`]: the PROXY v1/v2 header a load balancer puts in front of a client's bytes,
//!   and the v2 header the gateway may send the broker.

pub mod broker_stream;
pub mod io;
pub mod proxy_protocol;
pub mod websocket;
