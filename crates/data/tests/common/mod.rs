//! A tiny HTTP/1.1 file server on 127.0.0.1 for download tests, with misbehaviours on demand.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// How the server answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Serve the bytes, honouring `Range: bytes=N-`.
    Serve(Vec<u8>),
    /// Serve half the bytes on the first request (announcing all of them) and close; behave
    /// like `Serve` afterwards.
    CutOffOnce(Vec<u8>),
    /// 404 for every request.
    NotFound,
    /// Accept and close every connection without answering.
    Drop,
}

/// The requests a server saw: (path, range header).
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A running server; requests seen are logged as (path, range header).
pub struct Server {
    pub port: u16,
    pub requests: RequestLog,
}

impl Server {
    pub fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        thread::spawn(move || {
            let mut served = 0usize;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                served += 1;
                handle(stream, &behaviour, served, &log);
            }
        });
        Server { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn handle(mut stream: TcpStream, behaviour: &Behaviour, nth: usize, log: &Mutex<Vec<(String, Option<String>)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("range:").or_else(|| h.strip_prefix("Range:")) {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push((path, range.clone()));
    let bytes = match behaviour {
        Behaviour::Drop => return,
        Behaviour::NotFound => {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        Behaviour::Serve(b) | Behaviour::CutOffOnce(b) => b,
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    let body = &bytes[start.min(bytes.len())..];
    let status = if start > 0 {
        format!("206 Partial Content\r\nContent-Range: bytes {start}-{}/{}", bytes.len() - 1, bytes.len())
    } else {
        "200 OK".to_string()
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = stream.write_all(head.as_bytes());
    if matches!(behaviour, Behaviour::CutOffOnce(_)) && nth == 1 {
        let _ = stream.write_all(&body[..body.len() / 2]);
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = stream.write_all(body);
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
