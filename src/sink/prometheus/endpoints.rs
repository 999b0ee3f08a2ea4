//! Per-endpoint series: connection state and what arrived on the socket, including
//! every skipped message by reason. Labels: engine, endpoint, dp_rank (the rank the
//! endpoint is configured for) and the engine's configured labels.

use super::text::{push_label, Family, Writer};
use crate::source::endpoint::EndpointStats;
use crate::source::zmtp::HandshakeFailure;
use crate::wire::DecodeError;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Connected or not.
pub const CONNECTED: Family = Family::gauge(
    "fpm_endpoint_connected",
    "1 while the SUB socket of the endpoint is connected to its publisher.",
);
/// Successful connects.
pub const CONNECTS: Family = Family::counter(
    "fpm_endpoint_connects_total",
    "Successful connects to the endpoint (the first, and every re-creation after the peer went or fell silent).",
);
/// Messages received.
pub const MESSAGES: Family = Family::counter(
    "fpm_endpoint_messages_total",
    "Multipart messages received on the endpoint, valid or not.",
);
/// Receive errors.
pub const RECEIVE_ERRORS: Family = Family::counter(
    "fpm_endpoint_receive_errors_total",
    "Socket receive errors on the endpoint (disconnects noticed while receiving).",
);
/// Failed handshakes by reason.
pub const HANDSHAKE_FAILURES: Family = Family::counter(
    "fpm_endpoint_handshake_failures_total",
    "Connection attempts the publisher refused during the ZMTP handshake, by reason: security (it requires CURVE or PLAIN), denied (it sent ERROR), protocol (not a ZMTP 3 PUB).",
);
/// Skipped messages by reason.
pub const DECODE_ERRORS: Family = Family::counter(
    "fpm_decode_errors_total",
    "Messages skipped on the endpoint because they are not valid FPM frames, by reason.",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        CONNECTED,
        CONNECTS,
        MESSAGES,
        RECEIVE_ERRORS,
        HANDSHAKE_FAILURES,
        DECODE_ERRORS,
    ]
}

/// Writes the endpoint families.
pub fn write(w: &mut Writer, endpoints: &[Arc<EndpointStats>], engine_labels: &[String]) {
    let labels: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let mut l = engine_labels[e.engine].clone();
            push_label(&mut l, "endpoint", &e.address);
            push_label(
                &mut l,
                "dp_rank",
                itoa::Buffer::new().format(e.expected_rank),
            );
            l
        })
        .collect();
    let both = || endpoints.iter().zip(&labels);
    w.family(&CONNECTED);
    for (e, l) in both() {
        w.sample(&CONNECTED, l, &[], e.connected.load(Relaxed) as u8 as f64);
    }
    for (fam, get) in [
        (
            &CONNECTS,
            (|e: &EndpointStats| e.connects.load(Relaxed)) as fn(&EndpointStats) -> u64,
        ),
        (&MESSAGES, |e: &EndpointStats| e.messages.load(Relaxed)),
        (&RECEIVE_ERRORS, |e: &EndpointStats| {
            e.receive_errors.load(Relaxed)
        }),
    ] {
        w.family(fam);
        for (e, l) in both() {
            w.sample(fam, l, &[], get(e) as f64);
        }
    }
    w.family(&HANDSHAKE_FAILURES);
    for (e, l) in both() {
        for reason in HandshakeFailure::ALL {
            let n = e.handshake_failures[reason.index()].load(Relaxed);
            w.sample(
                &HANDSHAKE_FAILURES,
                l,
                &[("reason", reason.as_str())],
                n as f64,
            );
        }
    }
    w.family(&DECODE_ERRORS);
    for (e, l) in both() {
        for reason in DecodeError::ALL {
            let n = e.decode_errors[reason.index()].load(Relaxed);
            w.sample(&DECODE_ERRORS, l, &[("reason", reason.as_str())], n as f64);
        }
    }
}
