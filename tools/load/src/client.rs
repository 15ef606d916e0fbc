//! A pipelined protocol client: connect (optionally from a given source
//! address), a buffered line reader that yields borrowed lines, reply
//! parsing into a borrowed struct, and the blocking helpers (login,
//! logout, one request and its reply) used outside the hot loops.
//! Knows the wire format only: it must not count, time or judge replies
//! (the modes do).

use std::io;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// One server line, fields borrowed from the read buffer. Our names and
/// contents never need escaping; a line that does fails to parse and is
/// counted as unparseable by the caller.
#[derive(Debug, Deserialize)]
pub struct Reply<'a> {
    #[serde(borrow)]
    pub event: &'a str,
    /// Every request of this generator carries a numeric ref.
    #[serde(rename = "ref", default)]
    pub reference: Option<u64>,
    #[serde(borrow, default)]
    pub code: Option<&'a str>,
    #[serde(borrow, default)]
    pub from: Option<&'a str>,
    #[serde(borrow, default)]
    pub content: Option<&'a str>,
    #[serde(borrow, default)]
    pub reason: Option<&'a str>,
}

impl<'a> Reply<'a> {
    pub fn parse(line: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Reads lines into one growing buffer and hands them out borrowed.
pub struct LineReader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    pos: usize,
}

impl LineReader {
    fn new(rd: OwnedReadHalf) -> Self {
        Self {
            rd,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next complete line already buffered (without its `\n`).
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n')?;
        let start = self.pos;
        self.pos += n + 1;
        Some(&self.buf[start..start + n])
    }

    /// Reads more bytes; false at end of stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let want = if self.buf.capacity() == 0 {
            4096
        } else {
            64 * 1024
        };
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }

    /// The next line, reading as needed; an owned copy. None at EOF.
    pub async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.next_line() {
                return Ok(Some(line.to_vec()));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// A connection to a message server.
pub struct Client {
    pub reader: LineReader,
    pub writer: OwnedWriteHalf,
}

/// Connects to `addr`, from `source` if given (port chosen by the kernel).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Client {
    pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Self> {
        let stream = connect(addr, source).await.with_context(|| match source {
            Some(ip) => format!("connecting to {addr} from {ip}"),
            None => format!("connecting to {addr}"),
        })?;
        let (rd, writer) = stream.into_split();
        Ok(Self {
            reader: LineReader::new(rd),
            writer,
        })
    }

    pub async fn send(&mut self, line: &[u8]) -> io::Result<()> {
        self.writer.write_all(line).await
    }

    /// Waits for the reply carrying `reference`, skipping other lines.
    /// Returns (event, code) of that reply.
    pub async fn reply_to(&mut self, reference: u64) -> anyhow::Result<(String, Option<String>)> {
        loop {
            let Some(line) = self.reader.read_line().await? else {
                bail!("connection closed while waiting for the reply to ref {reference}");
            };
            let Ok(reply) = Reply::parse(&line) else {
                continue;
            };
            if reply.event == "kicked" {
                bail!("kicked ({})", reply.reason.unwrap_or("?"));
            }
            if reply.reference == Some(reference) {
                return Ok((reply.event.to_owned(), reply.code.map(str::to_owned)));
            }
            if reply.reference.is_none()
                && reply.event == "error"
                && reply.code == Some("server_full")
            {
                bail!("server_full");
            }
        }
    }

    /// Logs in as `name`; an error unless the server says `login`.
    pub async fn login(&mut self, name: &str, reference: u64) -> anyhow::Result<()> {
        let line = format!("{{\"cmd\":\"login\",\"name\":\"{name}\",\"ref\":{reference}}}\n");
        self.send(line.as_bytes()).await?;
        match self.reply_to(reference).await? {
            (event, _) if event == "login" => Ok(()),
            (event, code) => bail!("login {name} failed: {event} {}", code.unwrap_or_default()),
        }
    }

    pub async fn logout(&mut self, reference: u64) -> anyhow::Result<()> {
        let line = format!("{{\"cmd\":\"logout\",\"ref\":{reference}}}\n");
        self.send(line.as_bytes()).await?;
        match self.reply_to(reference).await? {
            (event, _) if event == "logout" => Ok(()),
            (event, code) => bail!("logout failed: {event} {}", code.unwrap_or_default()),
        }
    }
}

/// Appends a chat request line (content must need no JSON escaping).
pub fn push_chat(
    out: &mut Vec<u8>,
    recv: &str,
    content: impl FnOnce(&mut Vec<u8>),
    reference: u64,
) {
    out.extend_from_slice(b"{\"cmd\":\"chat\",\"recv\":\"");
    out.extend_from_slice(recv.as_bytes());
    out.extend_from_slice(b"\",\"content\":\"");
    content(out);
    out.extend_from_slice(b"\",\"ref\":");
    push_u64(out, reference);
    out.extend_from_slice(b"}\n");
}

/// Appends the decimal form of `v`.
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_line_is_valid_json() {
        let mut out = Vec::new();
        push_chat(&mut out, "bob", |o| o.extend_from_slice(b"hi"), 1234567);
        assert_eq!(
            out,
            b"{\"cmd\":\"chat\",\"recv\":\"bob\",\"content\":\"hi\",\"ref\":1234567}\n"
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ref"], 1234567);
        let mut z = Vec::new();
        push_u64(&mut z, 0);
        push_u64(&mut z, u64::MAX);
        assert_eq!(z, b"018446744073709551615");
    }

    #[test]
    fn parses_server_lines() {
        let r =
            Reply::parse(br#"{"event":"ack","id":"s.1.2","ref":7,"status":"delivered"}"#).unwrap();
        assert_eq!((r.event, r.reference), ("ack", Some(7)));
        let r = Reply::parse(
            br#"{"event":"error","code":"offline","message":"the recipient is not online","ref":8}"#,
        )
        .unwrap();
        assert_eq!(
            (r.event, r.code, r.reference),
            ("error", Some("offline"), Some(8))
        );
        let r = Reply::parse(
            br#"{"event":"message","id":"s.1.2","from":"a","to":"b","content":"xyz","ts":1}"#,
        )
        .unwrap();
        assert_eq!(
            (r.from, r.content, r.reference),
            (Some("a"), Some("xyz"), None)
        );
    }
}
