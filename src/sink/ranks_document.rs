//! The `/v1/ranks` document: every rank and engine of one snapshot, streamed in pieces.
//! The rank itself is [`RankJson`], shared with the stream's snapshot events.

use super::shared_json::{window_names, EngineJson, RankJson};
use crate::state::load_snapshots::SnapshotJoin;
use crate::state::{Registry, Snapshot};

/// Renders the whole `/v1/ranks` document at once (benchmarks and tests; the
/// endpoint streams it with [`RanksDocument`]).
pub fn ranks_document(registry: &Registry, snap: &Snapshot) -> Vec<u8> {
    let names = window_names(registry);
    let mut stage = Stage::Head;
    let mut out = Vec::new();
    write_piece(
        registry,
        snap,
        &names,
        None,
        &mut stage,
        usize::MAX,
        &mut out,
    );
    out
}

/// Where the next piece of a document starts.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Head,
    Rank(usize),
    Engines,
    Done,
}

/// The `/v1/ranks` document of one snapshot, handed out in pieces of about `chunk`
/// bytes: with 1,024 ranks the whole is several MB, which built at once would stay
/// resident (the allocator keeps such buffers) after every request. The bytes are
/// those `serde_json` writes for the whole document.
pub struct RanksDocument {
    registry: std::sync::Arc<Registry>,
    snap: Snapshot,
    names: Vec<String>,
    join: Option<SnapshotJoin>,
    stage: Stage,
}

impl RanksDocument {
    /// The document of `snap`, nothing rendered yet.
    pub fn new(registry: std::sync::Arc<Registry>, snap: Snapshot) -> Self {
        let names = window_names(&registry);
        RanksDocument {
            registry,
            snap,
            names,
            join: None,
            stage: Stage::Head,
        }
    }

    /// Each rank with its engine's load snapshot of the same dp rank
    /// (`load_snapshot`), for engines that read them.
    pub fn with_join(mut self, join: SnapshotJoin) -> Self {
        self.join = Some(join);
        self
    }

    /// The next piece (at least `chunk` bytes unless it is the last), `None` once the
    /// document is complete.
    pub fn next_piece(&mut self, chunk: usize) -> Option<Vec<u8>> {
        if matches!(self.stage, Stage::Done) {
            return None;
        }
        let mut out = Vec::with_capacity(chunk.saturating_add(8192).min(1 << 22));
        write_piece(
            &self.registry,
            &self.snap,
            &self.names,
            self.join.as_ref(),
            &mut self.stage,
            chunk,
            &mut out,
        );
        Some(out)
    }
}

/// Appends to `out` from `stage` on until `out` holds `chunk` bytes or the document
/// ends, in exactly the layout of a derived `Serialize` of
/// `{generated_at_ns, windows, ranks: [..], engines: [..]}`.
fn write_piece(
    registry: &Registry,
    snap: &Snapshot,
    names: &[String],
    join: Option<&SnapshotJoin>,
    stage: &mut Stage,
    chunk: usize,
    out: &mut Vec<u8>,
) {
    let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write(out);
    loop {
        match *stage {
            Stage::Head => {
                out.extend_from_slice(b"{\"generated_at_ns\":");
                json(out, &snap.at_unix_ns);
                out.extend_from_slice(b",\"windows\":");
                json(out, &names);
                out.extend_from_slice(b",\"ranks\":[");
                *stage = Stage::Rank(0);
            }
            Stage::Rank(i) if i < snap.ranks.len() => {
                if i > 0 {
                    out.push(b',');
                }
                let r = &snap.ranks[i];
                json(out, &RankJson::new(registry, r, names).joined(join, r));
                *stage = Stage::Rank(i + 1);
            }
            Stage::Rank(_) => {
                out.extend_from_slice(b"],\"engines\":");
                *stage = Stage::Engines;
            }
            Stage::Engines => {
                let engines: Vec<EngineJson> = snap
                    .engines
                    .iter()
                    .map(|e| EngineJson::new(registry, e, names))
                    .collect();
                json(out, &engines);
                out.push(b'}');
                *stage = Stage::Done;
                return;
            }
            Stage::Done => return,
        }
        if out.len() >= chunk {
            return;
        }
    }
}

/// `serde_json::to_writer` behind a trait object, so [`write_piece`] can write values
/// of several types through one helper.
mod erased {
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("JSON of plain data cannot fail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sequence::SeqEvent;
    use crate::state::{EngineInfo, RankCache, RankFilter, StateConfig};
    use crate::wire::{Count, ForwardPassMetrics, Real};
    use serde::Serialize;

    /// An iteration frame whose values differ by rank and sequence.
    fn frame(rank: u64, seq: u64) -> ForwardPassMetrics {
        let mut m = ForwardPassMetrics {
            version: 1,
            worker_id: "w\"\\\n".into(),
            dp_rank: rank,
            ..Default::default()
        };
        m.wall_time = Real(0.01 + 0.003 * (rank + seq) as f64);
        let s = &mut m.scheduled_requests;
        s.num_prefill_requests = Count(1 + seq);
        s.sum_prefill_tokens = Count(512 * (1 + rank));
        s.num_decode_requests = Count(8 + rank + seq);
        s.sum_decode_kv_tokens = Count(4096 + 64 * seq);
        m
    }

    /// Ranks 0..n of engine 1 (a hostile worker_id among them), a few frames each.
    fn add_ranks(registry: &Registry, n: usize) {
        let ep: std::sync::Arc<str> = "ipc:///x".into();
        for r in 0..n as u64 {
            let mut cache = RankCache::default();
            for seq in 0..3 {
                let ev = if seq == 0 {
                    SeqEvent::First
                } else {
                    SeqEvent::InOrder
                };
                let m = frame(r, seq);
                registry.ingest(&mut cache, 1, &ep, seq, ev, m, &registry.now());
            }
        }
    }

    /// The document as one derived `Serialize`, as it was built before streaming.
    fn whole(registry: &Registry, snap: &Snapshot) -> Vec<u8> {
        #[derive(Serialize)]
        struct Doc<'a> {
            generated_at_ns: u64,
            windows: &'a [String],
            ranks: Vec<RankJson<'a>>,
            engines: Vec<EngineJson<'a>>,
        }
        let names = window_names(registry);
        serde_json::to_vec(&Doc {
            generated_at_ns: snap.at_unix_ns,
            windows: &names,
            ranks: snap
                .ranks
                .iter()
                .map(|r| RankJson::new(registry, r, &names))
                .collect(),
            engines: snap
                .engines
                .iter()
                .map(|e| EngineJson::new(registry, e, &names))
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn pieces_add_up_to_the_whole_document() {
        let engines = ["a", "b"]
            .map(|n| EngineInfo {
                name: n.into(),
                labels: vec![("role".into(), "x\"y".into())],
            })
            .to_vec();
        let registry = Registry::new(StateConfig::default(), engines);
        for ranks in [0usize, 1, 40] {
            add_ranks(&registry, ranks);
            let snap = registry.snapshot(&RankFilter::default());
            assert_eq!(snap.ranks.len(), ranks);
            let want = whole(&registry, &snap);
            assert_eq!(ranks_document(&registry, &snap), want);
            for chunk in [1, 700, 1 << 20] {
                let mut doc = RanksDocument::new(registry.clone(), snap.clone());
                let mut pieces = Vec::new();
                while let Some(p) = doc.next_piece(chunk) {
                    pieces.push(p);
                }
                assert_eq!(
                    String::from_utf8(pieces.concat()).unwrap(),
                    String::from_utf8(want.clone()).unwrap(),
                    "{ranks} ranks, chunk {chunk}"
                );
                if chunk == 1 {
                    assert_eq!(pieces.len(), 3 + snap.ranks.len(), "one piece per element");
                }
            }
        }
    }
}
