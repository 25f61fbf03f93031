//! Device enrollment over EST (RFC 7030): a TLS listener of its own (`[enrollment]`) backed by a
//! `pki` directory (`crate::pki`), answering `cacerts`, `simpleenroll` (HTTP Basic: NAME and a
//! one-time token from `mqtt-gateway pki token`) and `simplereenroll` (TLS client authentication
//! with the device's current certificate).

pub mod token;
