//! Turning "one endpoint plus a rank range" into one ZMQ address per dp rank, by the
//! engines' own conventions: tcp ranks listen on base port + r (vLLM/Dynamo), ipc
//! ranks on `<base>.<r>` (SGLang). Neutral ground: the sources subscribe to these
//! addresses and the publisher side binds them.

/// Why an endpoint or rank range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(pub String);

/// A half-open range of dp ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankRange {
    /// First rank.
    pub start: u64,
    /// One past the last rank.
    pub end: u64,
}

/// Most ranks one engine may declare (a guard against typos like `--ranks 80000`).
pub const MAX_RANKS_PER_ENGINE: u64 = 1024;

impl RankRange {
    /// Parses `N` (ranks 0..N-1), `A-B` (inclusive) or `A..B` (exclusive).
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let bad = || EndpointError(format!("invalid rank range {s:?}: use N, A-B or A..B"));
        let num = |t: &str| t.trim().parse::<u64>().map_err(|_| bad());
        let range = if let Some((a, b)) = s.split_once("..") {
            RankRange {
                start: num(a)?,
                end: num(b)?,
            }
        } else if let Some((a, b)) = s.split_once('-') {
            RankRange {
                start: num(a)?,
                end: num(b)? + 1,
            }
        } else {
            RankRange {
                start: 0,
                end: num(s)?,
            }
        };
        if range.end <= range.start {
            return Err(EndpointError(format!("rank range {s:?} is empty")));
        }
        if range.end - range.start > MAX_RANKS_PER_ENGINE {
            return Err(EndpointError(format!(
                "rank range {s:?} has more than {MAX_RANKS_PER_ENGINE} ranks"
            )));
        }
        Ok(range)
    }

    /// The ranks in order.
    pub fn iter(self) -> impl Iterator<Item = u64> {
        self.start..self.end
    }
}

/// The address of dp rank `rank` for the base endpoint `base`.
pub fn rank_address(base: &str, rank: u64) -> Result<String, EndpointError> {
    if let Some(rest) = base.strip_prefix("tcp://") {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| EndpointError(format!("{base}: tcp endpoint needs host:port")))?;
        if host.is_empty() {
            return Err(EndpointError(format!("{base}: tcp endpoint needs a host")));
        }
        let host = if host == "*" { "127.0.0.1" } else { host };
        let port: u64 = port
            .parse()
            .map_err(|_| EndpointError(format!("{base}: port {port:?} is not a number")))?;
        let p = port + rank;
        if p == 0 || p > 65535 {
            return Err(EndpointError(format!(
                "{base}: rank {rank} would listen on port {p}, outside 1..=65535"
            )));
        }
        Ok(format!("tcp://{host}:{p}"))
    } else if let Some(path) = base.strip_prefix("ipc://") {
        if path.is_empty() {
            return Err(EndpointError(format!("{base}: ipc endpoint needs a path")));
        }
        Ok(format!("ipc://{path}.{rank}"))
    } else {
        Err(EndpointError(format!(
            "{base}: endpoint must start with tcp:// or ipc://"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions_of_both_engines() {
        assert_eq!(
            rank_address("tcp://127.0.0.1:20380", 3).unwrap(),
            "tcp://127.0.0.1:20383"
        );
        assert_eq!(
            rank_address("tcp://*:20380", 0).unwrap(),
            "tcp://127.0.0.1:20380"
        );
        assert_eq!(
            rank_address("ipc:///tmp/fpm", 2).unwrap(),
            "ipc:///tmp/fpm.2"
        );
        assert!(rank_address("tcp://h:65535", 1)
            .unwrap_err()
            .0
            .contains("65536"));
        assert!(rank_address("udp://h:1", 0).is_err());
        assert!(rank_address("tcp://h:x", 0).is_err());
    }

    #[test]
    fn rank_ranges() {
        assert_eq!(
            RankRange::parse("4").unwrap(),
            RankRange { start: 0, end: 4 }
        );
        assert_eq!(
            RankRange::parse("2-5").unwrap(),
            RankRange { start: 2, end: 6 }
        );
        assert_eq!(
            RankRange::parse("2..5").unwrap(),
            RankRange { start: 2, end: 5 }
        );
        assert!(RankRange::parse("0").is_err());
        assert!(RankRange::parse("5-2").is_err());
        assert!(RankRange::parse("x").is_err());
        assert!(RankRange::parse("100000").is_err());
    }
}
