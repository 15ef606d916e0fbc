//! The NDJSON protocol client of the tests: one TCP connection, JSON
//! lines out, JSON (or raw) lines in, and assertions on what comes back.
//! Every read has a deadline (`STEP` unless given). Must stay a plain
//! client: no retries, no hidden waits for routing (see `cluster`).
//!
//! `Client::split` gives the two halves to two tasks (a flooding writer
//! and a reader counting what comes back).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use super::STEP;

/// A protocol client over plain TCP.
pub struct Client {
    rx: ClientRx,
    tx: ClientTx,
}

/// The reading half of a client.
pub struct ClientRx {
    reader: BufReader<OwnedReadHalf>,
}

/// The writing half of a client.
pub struct ClientTx {
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        Self::try_connect(port, None).await.expect("connect")
    }

    /// A client of another address than IPv4 loopback (`[::1]:port`).
    pub async fn connect_to(addr: std::net::SocketAddr) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        Self::from_stream(stream)
    }

    /// A client whose socket receive buffer is only about `bytes`
    /// (SO_RCVBUF, set before connecting): one that stops reading fills
    /// the server's side after a few hundred KB instead of megabytes.
    pub async fn connect_with_recv_buffer(port: u16, bytes: u32) -> Client {
        Self::try_connect(port, Some(bytes)).await.expect("connect")
    }

    /// `connect` (with SO_RCVBUF `recv_buffer` if given) that reports a
    /// failure, or a connect taking longer than `STEP`, instead of
    /// panicking: for tests where the server may just have died.
    pub async fn try_connect(port: u16, recv_buffer: Option<u32>) -> std::io::Result<Client> {
        let socket = TcpSocket::new_v4()?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = tokio::time::timeout(STEP, socket.connect(addr)).await??;
        Ok(Self::from_stream(stream))
    }

    fn from_stream(stream: TcpStream) -> Client {
        let (r, w) = stream.into_split();
        Client {
            rx: ClientRx {
                reader: BufReader::new(r),
            },
            tx: ClientTx { writer: w },
        }
    }

    pub fn split(self) -> (ClientRx, ClientTx) {
        (self.rx, self.tx)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.tx.send_raw(bytes).await;
    }

    pub async fn send(&mut self, v: Value) {
        self.tx.send(v).await;
    }

    /// The next line as JSON; panics after `STEP`.
    pub async fn recv(&mut self) -> Value {
        self.rx.recv().await
    }

    /// The next line, or None on EOF or after `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        self.rx.try_recv(limit).await
    }

    /// True once the server has closed the connection (EOF or reset).
    pub async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(STEP, self.rx.reader.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub async fn expect_event(&mut self, event: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["event"], event, "unexpected line {v}");
        v
    }

    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect_event("error").await;
        assert_eq!(v["code"], code, "unexpected error {v}");
        v
    }

    pub async fn login(&mut self, name: &str) -> Value {
        self.send(json!({"cmd":"login","name":name})).await;
        let v = self.expect_event("login").await;
        assert_eq!(v["ok"], true);
        v
    }

    /// Sends a chat and returns the sender's next line (its outcome).
    pub async fn chat(&mut self, to: &str, content: &str) -> Value {
        self.send(json!({"cmd":"chat","recv":to,"content":content}))
            .await;
        self.recv().await
    }

    /// The next raw line (without its `\n`), or None on EOF or after
    /// `limit`: for replies that must be checked byte for byte.
    pub async fn try_recv_raw(&mut self, limit: Duration) -> Option<String> {
        self.rx.try_recv_raw(limit).await
    }

    /// The outcomes of chats with refs `0..n`, indexed by ref: waits until
    /// each has one; panics on a second one for a ref, on any other line,
    /// or after `limit`.
    pub async fn outcomes(&mut self, n: usize, limit: Duration) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; n];
        let deadline = tokio::time::Instant::now() + limit;
        let mut missing = n;
        while missing > 0 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(v) = self.try_recv(left).await else {
                panic!("{missing} of {n} outcomes missing after {limit:?}");
            };
            assert!(
                v["event"] == "ack" || v["event"] == "error",
                "not an outcome: {v}"
            );
            let i = v["ref"].as_u64().expect("an outcome carries its ref") as usize;
            assert!(got[i].is_none(), "a second outcome for ref {i}: {v}");
            got[i] = Some(v);
            missing -= 1;
        }
        got.into_iter().map(Option::unwrap).collect()
    }

    /// Every line until the server closes the connection (EOF or reset);
    /// panics if that takes longer than `limit`.
    pub async fn recv_until_closed(&mut self, limit: Duration) -> Vec<Value> {
        let mut lines = Vec::new();
        let read_all = async {
            loop {
                let mut line = String::new();
                match self.rx.reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => lines.push(
                        serde_json::from_str(&line)
                            .unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
                    ),
                }
            }
        };
        tokio::time::timeout(limit, read_all)
            .await
            .unwrap_or_else(|_| panic!("still open after {limit:?}"));
        lines
    }

    /// Every byte until the server closes the connection (EOF or reset).
    /// For a client that stopped reading: its last line may be cut off.
    /// Panics after `limit`.
    pub async fn bytes_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let mut bytes = Vec::new();
        let read_all = async {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match self.rx.reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(limit, read_all)
            .await
            .unwrap_or_else(|_| panic!("still open after {limit:?}"));
        bytes
    }

    /// Closes the sending side (`shutdown(SHUT_WR)`): end of input.
    pub async fn finish(&mut self) {
        self.tx.finish().await;
    }
}

impl ClientRx {
    /// The next line as JSON; panics after `STEP`.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(STEP)
            .await
            .expect("expected a line, got EOF or timeout")
    }

    /// The next line, or None on EOF or after `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        let line = self.try_recv_raw(limit).await?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
    }

    /// The next raw line (without its `\n`), or None on EOF or after `limit`.
    pub async fn try_recv_raw(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.next_raw()).await.ok()?
    }

    /// The next raw line (without its `\n`), however long it takes; None
    /// on EOF or a reset. A last line cut off by the end (no `\n`) is
    /// returned as it is.
    pub async fn next_raw(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            // A reset after the server closed: the end, as EOF is.
            Err(_) => None,
        }
    }
}

impl ClientTx {
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, v: Value) {
        self.try_send(&v).await.expect("write");
    }

    /// `send` that reports a write error (the server is gone) instead of
    /// panicking.
    pub async fn try_send(&mut self, v: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(v).unwrap();
        line.extend_from_slice(b"\r\n");
        self.writer.write_all(&line).await
    }

    /// Closes the sending side (`shutdown(SHUT_WR)`): end of input.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }
}
