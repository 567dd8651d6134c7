//! Test support: `spike serve` as a child process, and children killed however a test ends.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `spike serve`, killed when dropped.
pub struct Serve {
    /// The process.
    pub child: Kill,
    /// Its first stdout line: `listening on ws://…/rooms (data in …; <access>)`.
    pub line: String,
    /// Its rooms' base URL, `ws://127.0.0.1:PORT/rooms`.
    pub base: String,
}

impl Serve {
    /// Runs `spike serve --listen 127.0.0.1:0 <args>` in `dir`, without `SPIKE_SECRET` and with
    /// `env` added, its stderr going to `stderr`, and waits for its address line.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env_remove("SPIKE_SECRET")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn spike serve");
        let stdout = child.stdout.take().expect("stdout");
        let child = Kill(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address line");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("ws://"))
            .unwrap_or_else(|| panic!("no ws:// address in {line:?}"))
            .to_owned();
        Self { child, line, base }
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> &str {
        self.base
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host")
    }
}

/// Reads one HTTP/1.1 request: its head (the request line and headers, through the blank
/// line) and its body (`Content-Length` bytes). A connection closed before the blank line
/// ends the head there.
pub fn read_request(reader: &mut impl std::io::BufRead) -> std::io::Result<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((head, body))
}
