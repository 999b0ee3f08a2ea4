//! The NATS side's series (`--nats`, `--nats-publish`): written only when either is on.

use super::text::{Family, Writer};
use crate::source::nats::{payload_reason, ConnStats, NatsStats, Reject};
use crate::wire::DecodeError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Connection state.
pub const CONNECTED: Family = Family::gauge(
    "fpm_nats_connected",
    "1 while the NATS connection of this role (ingest, publish) is up.",
);
/// Connections made.
pub const CONNECTS: Family = Family::counter(
    "fpm_nats_connects_total",
    "NATS connections established, the first and every reconnect, by role.",
);
/// Disconnections.
pub const DISCONNECTS: Family = Family::counter(
    "fpm_nats_disconnects_total",
    "NATS disconnections noticed, by role.",
);
/// Client errors.
pub const ERRORS: Family = Family::counter(
    "fpm_nats_errors_total",
    "Errors the NATS client reported, by role: failed connection attempts (refused credentials, unreachable server, TLS) and server errors.",
);
/// Messages received.
pub const MESSAGES: Family = Family::counter(
    "fpm_nats_messages_total",
    "Messages received on the FPM subscription, valid or not.",
);
/// Frames ingested.
pub const INGESTED: Family = Family::counter(
    "fpm_nats_ingested_frames_total",
    "FPM frames from NATS folded into the rank state.",
);
/// Messages refused.
pub const REJECTED: Family = Family::counter(
    "fpm_nats_rejected_messages_total",
    "NATS messages skipped, by reason: the envelope's (oversize, subject, envelope_*, wrong_topic, engine_limit, publisher_limit, node), a frame published longer than --nats-max-frame-age ago (stale), or the FPM decoder's inside a valid envelope (payload_*).",
);
/// Unknown envelope fields.
pub const UNKNOWN_FIELDS: Family = Family::counter(
    "fpm_nats_unknown_envelope_fields_total",
    "Envelope fields this build does not know; ignored, as Dynamo's decoder ignores them.",
);
/// Sequence gaps.
pub const MISSED: Family = Family::counter(
    "fpm_nats_missed_messages_total",
    "Messages lost before reaching the exporter: gaps in a publisher's envelope sequence.",
);
/// Slow-consumer events.
pub const SLOW: Family = Family::counter(
    "fpm_nats_slow_consumer_events_total",
    "NATS messages dropped because ingestion fell behind the messages sent to it (slow consumer), counted one by one.",
);
/// Publishers tracked.
pub const PUBLISHERS: Family = Family::gauge(
    "fpm_nats_publishers",
    "Publishers (envelope publisher_id per subject) tracked now.",
);
/// Own messages.
pub const OWN: Family = Family::counter(
    "fpm_nats_own_messages_total",
    "Messages of this exporter's own relay seen on the subscription and skipped.",
);
/// Relayed frames.
pub const RELAYED: Family = Family::counter(
    "fpm_nats_relayed_frames_total",
    "Accepted ZMQ frames handed to the connected NATS client by --nats-publish.",
);
/// Relay drops.
pub const RELAY_DROPPED: Family = Family::counter(
    "fpm_nats_relay_dropped_frames_total",
    "Accepted ZMQ frames not relayed, by reason: disconnected (the publish connection was down or never came up), full (the client's queue was full), lagged (the relay fell behind ingestion), stale (older than --nats-max-frame-age when the relay reached it), error (the client refused the message). Each leaves a gap in the relayed sequence.",
);
/// KV puts.
pub const KV_UPDATES: Family = Family::counter(
    "fpm_nats_kv_updates_total",
    "Per-rank load entries written to the JetStream KV bucket, or deleted for expired ranks.",
);
/// KV errors.
pub const KV_ERRORS: Family = Family::counter(
    "fpm_nats_kv_errors_total",
    "Failed KV puts or deletes, bucket creations, corrections or timeouts.",
);
/// KV lag.
pub const KV_DROPPED: Family = Family::counter(
    "fpm_nats_kv_dropped_updates_total",
    "Frames the KV writer skipped because it fell behind (every rank is then rewritten).",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        CONNECTED,
        CONNECTS,
        DISCONNECTS,
        ERRORS,
        MESSAGES,
        INGESTED,
        REJECTED,
        UNKNOWN_FIELDS,
        MISSED,
        SLOW,
        PUBLISHERS,
        OWN,
        RELAYED,
        RELAY_DROPPED,
        KV_UPDATES,
        KV_ERRORS,
        KV_DROPPED,
    ]
}

fn roles(s: &NatsStats) -> Vec<(&'static str, &ConnStats)> {
    [("ingest", &s.ingest), ("publish", &s.publish)]
        .into_iter()
        .filter(|(_, c)| c.enabled.load(Relaxed))
        .collect()
}

fn one(w: &mut Writer, fam: &Family, v: &AtomicU64) {
    w.family(fam);
    w.sample(fam, "", &[], v.load(Relaxed) as f64);
}

/// Writes the NATS families.
pub fn write(w: &mut Writer, s: &NatsStats) {
    let roles = roles(s);
    w.family(&CONNECTED);
    for (r, c) in &roles {
        w.sample(
            &CONNECTED,
            "",
            &[("role", r)],
            c.connected.load(Relaxed) as u8 as f64,
        );
    }
    for (fam, get) in [
        (
            &CONNECTS,
            (|c: &ConnStats| &c.connects) as fn(&ConnStats) -> &AtomicU64,
        ),
        (&DISCONNECTS, |c: &ConnStats| &c.disconnects),
        (&ERRORS, |c: &ConnStats| &c.errors),
    ] {
        w.family(fam);
        for (r, c) in &roles {
            w.sample(fam, "", &[("role", r)], get(c).load(Relaxed) as f64);
        }
    }
    if s.ingest.enabled.load(Relaxed) {
        one(w, &MESSAGES, &s.messages);
        one(w, &INGESTED, &s.ingested);
        w.family(&REJECTED);
        for r in Reject::ALL {
            let n = s.rejected[r as usize].load(Relaxed);
            w.sample(&REJECTED, "", &[("reason", r.as_str())], n as f64);
        }
        for e in DecodeError::ALL {
            let n = s.payload_errors[e.index()].load(Relaxed);
            w.sample(&REJECTED, "", &[("reason", payload_reason(e))], n as f64);
        }
        one(w, &UNKNOWN_FIELDS, &s.unknown_envelope_fields);
        one(w, &MISSED, &s.missed_messages);
        one(w, &SLOW, &s.slow_consumer);
        one(w, &PUBLISHERS, &s.publishers);
        one(w, &OWN, &s.own_messages);
    }
    if s.publish.enabled.load(Relaxed) {
        one(w, &RELAYED, &s.relayed);
        w.family(&RELAY_DROPPED);
        for (reason, v) in [
            ("lagged", &s.relay_dropped_lagged),
            ("error", &s.relay_dropped_error),
            ("disconnected", &s.relay_dropped_disconnected),
            ("full", &s.relay_dropped_full),
            ("stale", &s.relay_dropped_stale),
        ] {
            w.sample(
                &RELAY_DROPPED,
                "",
                &[("reason", reason)],
                v.load(Relaxed) as f64,
            );
        }
        one(w, &KV_UPDATES, &s.kv_updates);
        one(w, &KV_ERRORS, &s.kv_errors);
        one(w, &KV_DROPPED, &s.kv_dropped_lagged);
    }
}
