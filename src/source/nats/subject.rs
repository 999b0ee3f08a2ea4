//! Dynamo's event-plane subjects: `namespace.<ns>.component.<c>.endpoint.<e>.<topic>`,
//! every segment percent-encoded as dynamo-runtime's `encode_event_segment` does
//! (see proto/event-plane.md for the source lines).

/// The topic Dynamo publishes forward-pass metrics on.
pub const FPM_TOPIC: &str = "forward-pass-metrics";

/// Encodes one segment as Dynamo does: ASCII letters, digits, `-` and `_` stay, every
/// other byte becomes `%XX` (upper-case hex).
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes a segment encoded by [`encode_segment`]; `None` for a malformed escape or
/// bytes that are not UTF-8.
pub fn decode_segment(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where a subject says a frame comes from (decoded segments).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Dynamo namespace.
    pub namespace: String,
    /// Dynamo component.
    pub component: String,
    /// Dynamo endpoint.
    pub endpoint: String,
}

impl Scope {
    /// The FPM subject of this scope.
    pub fn subject(&self) -> String {
        format!(
            "namespace.{}.component.{}.endpoint.{}.{}",
            encode_segment(&self.namespace),
            encode_segment(&self.component),
            encode_segment(&self.endpoint),
            encode_segment(FPM_TOPIC)
        )
    }

    /// Parses an FPM subject; `None` when it is not one.
    pub fn parse(subject: &str) -> Option<Scope> {
        let mut parts = subject.split('.');
        let mut next = |tag: &str| -> Option<String> {
            (parts.next()? == tag).then_some(())?;
            decode_segment(parts.next()?)
        };
        let namespace = next("namespace")?;
        let component = next("component")?;
        let endpoint = next("endpoint")?;
        (parts.next()? == FPM_TOPIC && parts.next().is_none()).then_some(Scope {
            namespace,
            component,
            endpoint,
        })
    }
}

/// The subscription subject for the given filters (`None`: any value, `*`).
pub fn filter_subject(
    namespace: Option<&str>,
    component: Option<&str>,
    endpoint: Option<&str>,
) -> String {
    let seg = |v: Option<&str>| v.map_or_else(|| "*".to_owned(), encode_segment);
    format!(
        "namespace.{}.component.{}.endpoint.{}.{}",
        seg(namespace),
        seg(component),
        seg(endpoint),
        encode_segment(FPM_TOPIC)
    )
}

/// The engine name of a scope, `<ns>/<component>/<endpoint>`: `%` and `/` inside a
/// segment are written `%25` and `%2F`, so two scopes never share a name.
pub fn engine_name(scope: &Scope) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!(
        "{}/{}/{}",
        esc(&scope.namespace),
        esc(&scope.component),
        esc(&scope.endpoint)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_dynamo() {
        // The cases of dynamo-runtime's test_event_scope_subject_prefix.
        assert_eq!(encode_segment("ns.one"), "ns%2Eone");
        assert_eq!(encode_segment("worker/*"), "worker%2F%2A");
        assert_eq!(encode_segment("generate.>"), "generate%2E%3E");
        assert_eq!(
            encode_segment("forward-pass-metrics"),
            "forward-pass-metrics"
        );
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn parses_what_it_builds_and_nothing_else() {
        let s = Scope {
            namespace: "ns.one".into(),
            component: "worker/*".into(),
            endpoint: "generate".into(),
        };
        let subj = s.subject();
        assert_eq!(
            subj,
            "namespace.ns%2Eone.component.worker%2F%2A.endpoint.generate.forward-pass-metrics"
        );
        assert_eq!(Scope::parse(&subj), Some(s));
        for bad in [
            "namespace.a.component.b.endpoint.c.kv-events",
            "namespace.a.component.b.endpoint.c.forward-pass-metrics.x",
            "namespace.a.component.b.forward-pass-metrics",
            "namespace.a%2.component.b.endpoint.c.forward-pass-metrics",
            "namespace.%FF.component.b.endpoint.c.forward-pass-metrics",
            "",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        assert_eq!(
            filter_subject(None, Some("backend"), None),
            "namespace.*.component.backend.endpoint.*.forward-pass-metrics"
        );
    }

    #[test]
    fn engine_names_are_injective() {
        let s = |n: &str, c: &str, e: &str| Scope {
            namespace: n.into(),
            component: c.into(),
            endpoint: e.into(),
        };
        assert_ne!(
            engine_name(&s("a/b", "c", "gen")),
            engine_name(&s("a", "b/c", "gen"))
        );
        assert_ne!(
            engine_name(&s("a%2Fb", "c", "g")),
            engine_name(&s("a/b", "c", "g"))
        );
        assert_eq!(
            engine_name(&s("dynamo", "backend", "generate")),
            "dynamo/backend/generate"
        );
    }
}
