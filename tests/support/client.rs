//! The NDJSON protocol client of the tests: one TCP connection, JSON
//! lines out, JSON (or raw) lines in, and assertions on what comes back.
//! Every read has a deadline (`STEP` unless given). Must stay a plain
//! client: no retries, no hidden waits for routing (see `cluster`).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::STEP;

/// A protocol client over plain TCP.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timeout")
            .expect("connect");
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, v: Value) {
        let mut line = serde_json::to_vec(&v).unwrap();
        line.extend_from_slice(b"\r\n");
        self.send_raw(&line).await;
    }

    /// The next line as JSON; panics after `STEP`.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(STEP)
            .await
            .expect("expected a line, got EOF or timeout")
    }

    /// The next line, or None on EOF or after `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(limit, self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(_)) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
            ),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// True once the server has closed the connection (EOF or reset).
    pub async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(STEP, self.reader.read_line(&mut line)).await,
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
        let mut line = String::new();
        match tokio::time::timeout(limit, self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(_)) => Some(line.trim_end_matches('\n').to_owned()),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// Closes the sending side (`shutdown(SHUT_WR)`): end of input.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }
}
