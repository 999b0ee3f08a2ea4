//! Publishing FPM frames exactly as the engines do: a PUB socket that binds, a
//! sequence counter from 0, and 3-frame messages `[b"", seq, payload]` with
//! `counter_id` stamped to the sequence just before sending. Shared by the demo
//! engine, the load generator, replay and the tests.

use crate::wire::encode::{encode_payload_into, encode_sequence};
use crate::wire::ForwardPassMetrics;
use bytes::Bytes;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

/// One rank's publisher.
pub struct FramePublisher {
    socket: PubSocket,
    next_seq: u64,
    buf: Vec<u8>,
    /// The address it is bound to.
    pub address: String,
}

impl FramePublisher {
    /// Binds a PUB socket on `address` (tcp or ipc). For ipc, the parent directory is
    /// created and a stale socket file from an earlier run is removed first.
    pub async fn bind(address: &str) -> zeromq::ZmqResult<Self> {
        if let Some(path) = address.strip_prefix("ipc://") {
            let path = std::path::Path::new(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::remove_file(path);
        }
        let mut socket = PubSocket::new();
        socket.bind(address).await?;
        Ok(FramePublisher {
            socket,
            next_seq: 0,
            buf: Vec::with_capacity(512),
            address: address.into(),
        })
    }

    /// Sends one frame, stamping `counter_id` with the next sequence number.
    /// Like the engines, a frame nobody is subscribed to is dropped.
    pub async fn send(&mut self, metrics: &mut ForwardPassMetrics) -> zeromq::ZmqResult<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        metrics.counter_id = seq;
        encode_payload_into(metrics, &mut self.buf);
        self.send_raw(seq, Bytes::copy_from_slice(&self.buf))
            .await?;
        Ok(seq)
    }

    /// Sends an already-encoded payload under sequence `seq`.
    pub async fn send_raw(&mut self, seq: u64, payload: Bytes) -> zeromq::ZmqResult<()> {
        let frames = vec![
            Bytes::new(),
            Bytes::copy_from_slice(&encode_sequence(seq)),
            payload,
        ];
        let msg = ZmqMessage::try_from(frames).expect("three frames");
        self.socket.send(msg).await
    }

    /// Sends arbitrary frames (tests of hostile input).
    pub async fn send_frames(&mut self, frames: Vec<Bytes>) -> zeromq::ZmqResult<()> {
        match ZmqMessage::try_from(frames) {
            Ok(msg) => self.socket.send(msg).await,
            Err(_) => Ok(()),
        }
    }

    /// The sequence number the next frame will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// Closes the socket (and removes an ipc socket file).
    pub async fn close(self) {
        let address = self.address.clone();
        let _ = self.socket.close().await;
        if let Some(path) = address.strip_prefix("ipc://") {
            let _ = std::fs::remove_file(path);
        }
    }
}
