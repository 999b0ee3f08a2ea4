//! Why a message was skipped: the stable, countable reasons of the decoder and the
//! framing check, which every source counts under its `reason` label.

use std::fmt;

/// Why a message was skipped. The `as_str` names are the `reason` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeError {
    /// The multipart message did not have exactly 3 frames.
    FrameCount,
    /// The sequence frame was not 8 bytes.
    SequenceSize,
    /// The payload frame was empty.
    EmptyPayload,
    /// The payload exceeded [`MAX_PAYLOAD_BYTES`](super::MAX_PAYLOAD_BYTES).
    Oversize,
    /// The payload ended in the middle of a value.
    Truncated,
    /// Bytes that are not msgpack (reserved markers, invalid UTF-8 keys).
    Malformed,
    /// Valid msgpack of the wrong shape or types (not a map/array, a string for a count...).
    WrongShape,
    /// NaN, infinity, a negative count or a magnitude beyond 2^64 (the policy of the `number` module).
    InvalidValue,
    /// Containers nested deeper than any real payload.
    TooDeep,
    /// Extra bytes after the payload's one value.
    TrailingBytes,
    /// A schema version this build does not understand.
    UnsupportedVersion,
}

impl DecodeError {
    /// Every reason, in label order (used to pre-create counters).
    pub const ALL: [DecodeError; 11] = [
        DecodeError::FrameCount,
        DecodeError::SequenceSize,
        DecodeError::EmptyPayload,
        DecodeError::Oversize,
        DecodeError::Truncated,
        DecodeError::Malformed,
        DecodeError::WrongShape,
        DecodeError::InvalidValue,
        DecodeError::TooDeep,
        DecodeError::TrailingBytes,
        DecodeError::UnsupportedVersion,
    ];

    /// The stable `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::FrameCount => "frame_count",
            DecodeError::SequenceSize => "sequence_size",
            DecodeError::EmptyPayload => "empty_payload",
            DecodeError::Oversize => "oversize",
            DecodeError::Truncated => "truncated",
            DecodeError::Malformed => "malformed",
            DecodeError::WrongShape => "wrong_shape",
            DecodeError::InvalidValue => "invalid_value",
            DecodeError::TooDeep => "too_deep",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::UnsupportedVersion => "unsupported_version",
        }
    }

    /// Index into [`DecodeError::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub(super) fn from_rmp(err: &rmp_serde::decode::Error) -> Self {
        use rmp_serde::decode::Error as E;
        match err {
            E::InvalidMarkerRead(_) | E::InvalidDataRead(_) => DecodeError::Truncated,
            E::DepthLimitExceeded => DecodeError::TooDeep,
            E::Utf8Error(_) => DecodeError::Malformed,
            E::TypeMismatch(rmp::Marker::Reserved) => DecodeError::Malformed,
            E::TypeMismatch(_) | E::OutOfRange | E::LengthMismatch(_) => DecodeError::WrongShape,
            E::Syntax(msg) | E::Uncategorized(msg) => {
                for reason in DecodeError::ALL {
                    if msg.starts_with(reason.as_str()) {
                        return reason;
                    }
                }
                if msg.contains("Reserved") {
                    DecodeError::Malformed
                } else {
                    DecodeError::WrongShape
                }
            }
        }
    }
}

// Displayed as its `reason` label value: one vocabulary in logs and metrics.
impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecodeError {}
