//! Clients that try to hold the controller: HTTP/2 connections that open no stream (or open
//! one and then only answer PINGs), and one address opening more connections than its share;
//! and clients that hand it strings of any size to keep.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::process::Controller;

const KEY: &str = "e2e-hostile-key-0123456789";

fn controller(cluster: &Cluster, limits: &str) -> Controller {
    let policies = crate::runtimes::repo().join("policies");
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n\
         [[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n[limits]\n{limits}",
        policies.display().to_string()
    ));
    cluster.controller("127.0.0.1:0")
}

fn address(controller: &Controller) -> String {
    controller.url.trim_start_matches("http://").to_owned()
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = vec![(length >> 16) as u8, (length >> 8) as u8, length as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET path` on stream 1, its header block in HPACK with no Huffman coding and no
/// indexing (indexed `:method GET` and `:scheme http`, literal `:path` and `:authority`).
fn get_headers(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, path), (1u8, authority)] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)
}

/// An HTTP/2 client by hand: it sends the preface and its SETTINGS, acknowledges the
/// server's SETTINGS and answers every PING, the way a client that means to stay would.
struct H2Client {
    socket: TcpStream,
    /// Frame types received, in order.
    seen: Vec<u8>,
    /// Whether stream 1's answer has ended.
    answered: bool,
}

impl H2Client {
    fn connect(address: &str) -> H2Client {
        let mut socket = TcpStream::connect(address).expect("connect");
        socket.write_all(PREFACE).expect("preface");
        socket.write_all(&frame(SETTINGS, 0, 0, &[])).expect("settings");
        H2Client {
            socket,
            seen: Vec::new(),
            answered: false,
        }
    }

    fn read_exact_or_closed(&mut self, buffer: &mut [u8]) -> Result<bool, std::io::Error> {
        match self.socket.read_exact(buffer) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Read and answer frames until the server closes the connection (`Ok(elapsed)`) or
    /// `patience` passes with it still open (`Err`).
    fn until_closed(&mut self, patience: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let left = patience.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!("still open after {patience:?}; frames seen {:?}", self.seen));
            }
            self.socket.set_read_timeout(Some(left)).expect("timeout");
            let mut head = [0u8; 9];
            match self.read_exact_or_closed(&mut head) {
                Ok(true) => {}
                Ok(false) => return Ok(started.elapsed()),
                Err(e) => {
                    return Err(format!(
                        "still open after {patience:?} ({e}); frames seen {:?}",
                        self.seen
                    ));
                }
            }
            let length = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            match self.read_exact_or_closed(&mut payload) {
                Ok(true) => {}
                Ok(false) => return Ok(started.elapsed()),
                Err(e) => return Err(format!("read: {e}")),
            }
            self.seen.push(kind);
            let reply = match kind {
                SETTINGS if flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
                PING if flags & ACK == 0 => Some(frame(PING, ACK, 0, &payload)),
                HEADERS | DATA if stream == 1 && flags & END_STREAM != 0 => {
                    self.answered = true;
                    None
                }
                _ => None,
            };
            if let Some(reply) = reply
                && self.socket.write_all(&reply).is_err()
            {
                return Ok(started.elapsed());
            }
        }
    }
}

#[test]
fn an_http2_connection_that_opens_no_stream_is_closed_after_the_header_timeout() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "header_read_timeout_ms = 1000\nidle_timeout_ms = 2000\n");
    let mut client = H2Client::connect(&address(&controller));
    let closed = client.until_closed(Duration::from_secs(20));
    let elapsed = closed.expect("an HTTP/2 client that opens no stream must be let go");
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed before its header timeout: {elapsed:?}"
    );
    assert!(
        client.seen.contains(&GOAWAY),
        "told why with a GOAWAY: {:?}",
        client.seen
    );
    // The controller still answers.
    let (status, _) = crate::process::curl_with_key(&format!("{}/healthz", controller.url), KEY, &[]);
    assert_eq!(status, 200);
}

#[test]
fn an_http2_connection_idle_after_its_request_is_closed_after_the_idle_timeout() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "header_read_timeout_ms = 1000\nidle_timeout_ms = 2000\n");
    let address = address(&controller);
    let mut client = H2Client::connect(&address);
    client
        .socket
        .write_all(&get_headers("/healthz", &address))
        .expect("request");
    let closed = client.until_closed(Duration::from_secs(20));
    assert!(client.answered, "the request was answered: {:?}", client.seen);
    let elapsed = closed.expect("an HTTP/2 client idle after its request must be let go");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "closed before its idle timeout: {elapsed:?}"
    );
}

#[test]
fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let cluster = Cluster::new(&[]);
    let controller = controller(
        &cluster,
        "max_connections = 64\nmax_connections_per_address = 3\nheader_read_timeout_ms = 8000\n",
    );
    let address = address(&controller);
    // Three silent connections from 127.0.0.1 take its share.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&address).expect("connect")).collect();
    // Let the controller accept them (an answered request from elsewhere proves it is past
    // them in its accept queue).
    let healthz = format!("{}/healthz", controller.url);
    let from = |source: &str| crate::process::curl_with_key(&healthz, KEY, &["--interface", source]).0;
    assert_eq!(from("127.0.0.2"), 200);
    // A fourth from the same address is closed at once, long before the header timeout.
    let mut fourth = TcpStream::connect(&address).expect("connect");
    fourth.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = fourth.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the fourth connection must be closed: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another address is served meanwhile, and so is this one once its connections go.
    assert_eq!(from("127.0.0.3"), 200);
    drop(held);
    assert!(crate::process::eventually(Duration::from_secs(5), || from("127.0.0.1") == 200));
}

/// `body` posted from a file (a 900 KiB argument is past what one argument may hold).
fn post_file(url: &str, body: &str, dir: &std::path::Path, extra: &[&str]) -> (u16, String) {
    let file = dir.join("body.json");
    std::fs::write(&file, body).expect("body");
    let data = format!("@{}", file.display());
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-H", "content-type: application/json", "--data-binary", &data]);
    crate::process::curl_with_key(url, crate::first_hour::KEY, &args)
}

#[test]
fn strings_a_client_chooses_are_bounded_in_the_record_the_log_and_the_admin_answer() {
    use crate::first_hour::{controller, simulated};
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    assert!(crate::process::eventually(Duration::from_secs(30), || {
        controller.node_healthy("xeon") == Some(true)
    }));
    let url = format!("{}/v1/chat/completions", controller.url);
    let scratch = tempfile::tempdir().expect("tempdir");
    let huge = "q".repeat(900 * 1024);
    let message = r#"[{"role": "user", "content": "hi"}]"#;
    for i in 0..20 {
        // A 900 KiB model name: refused before anything keeps it.
        let body = format!(r#"{{"model": "{huge}{i}", "max_tokens": 4, "messages": {message}}}"#);
        let (status, text) = post_file(&url, &body, scratch.path(), &[]);
        assert_eq!(status, 400, "{}", &text[..text.len().min(400)]);
        assert!(
            text.contains("at most 256") && text.len() < 2000,
            "{}",
            &text[..text.len().min(400)]
        );
        // A 900 KiB task: refused too.
        let body = format!(
            r#"{{"model": "qwen25-coder-7b", "max_tokens": 4, "metadata": {{"task": "{huge}"}}, "messages": {message}}}"#
        );
        assert_eq!(post_file(&url, &body, scratch.path(), &[]).0, 400);
        // A 900 KiB user: served, and kept as a bounded session id.
        let body =
            format!(r#"{{"model": "qwen25-coder-7b", "max_tokens": 4, "user": "{huge}{i}", "messages": {message}}}"#);
        assert_eq!(
            post_file(&url, &body, scratch.path(), &["-H", "x-switchyard-task: batch"]).0,
            200
        );
        // A model no node serves, of a plausible length: 404, and only its start is kept.
        let unknown = format!("{}-{i}", "u".repeat(200));
        let body = format!(r#"{{"model": "{unknown}", "max_tokens": 4, "messages": {message}}}"#);
        assert_eq!(post_file(&url, &body, scratch.path(), &[]).0, 404);
    }
    let view = controller.admin("/admin/decisions?limit=10000");
    let records = view["records"].as_array().expect("records");
    assert_eq!(records.len(), 40, "20 served and 20 refused: {}", records.len());
    for record in records {
        let request = &record["request"];
        assert!(request["model"].as_str().is_some_and(|m| m.len() <= 70), "{request}");
        assert!(request["session"].as_str().is_none_or(|s| s.len() <= 128), "{request}");
        let reject = record["decided"]["decision"]["reject"]["message"]
            .as_str()
            .unwrap_or("");
        assert!(reject.len() <= 520, "{reject}");
    }
    let sessions: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|r| r["request"]["session"].as_str())
        .collect();
    assert_eq!(sessions.len(), 20, "each long user stays its own session");
    let answer = serde_json::to_string(&view).expect("json").len();
    assert!(answer < 200 * 1024, "the admin answer is {answer} bytes");
    let record_file = cluster.dir.path().join("decisions.redb");
    let size = std::fs::metadata(&record_file).expect("decisions.redb").len();
    assert!(size < 16 * 1024 * 1024, "the record grew to {size} bytes");
    let log = controller.log_text().len();
    assert!(log < 256 * 1024, "the log grew to {log} bytes");
}

#[test]
fn a_connection_bound_over_the_open_file_limit_is_refused_at_start_with_what_to_change() {
    let cluster = Cluster::new(&[]);
    let policies = crate::runtimes::repo().join("policies");
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n[limits]\nmax_connections = 1024\n",
        policies.display().to_string()
    ));
    let config = cluster.dir.path().join("controller.toml");
    // A hard limit of 256 open files, which the controller cannot raise.
    let output = std::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(crate::process::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--agents-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("prlimit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains("max_connections = 1024 needs about 1088 open files")
            && stderr.contains("may open only 256")
            && stderr.contains("lower max_connections to 192"),
        "{stderr}"
    );
}

#[test]
fn a_key_holder_whose_body_never_arrives_is_answered_408_after_the_body_timeout() {
    let cluster = Cluster::new(&[]);
    let controller = controller(
        &cluster,
        "body_read_timeout_ms = 1000\nheader_read_timeout_ms = 30000\n",
    );
    let address = address(&controller);
    let mut socket = TcpStream::connect(&address).expect("connect");
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .expect("send");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let mut answer = String::new();
    let mut buffer = [0u8; 4096];
    while !answer.contains("\r\n\r\n") {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(e) => panic!("no answer while the body never came: {e}"),
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}
