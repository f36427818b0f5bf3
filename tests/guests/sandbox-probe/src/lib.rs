//! Test guest: `transform_fn` tries what a guest must not be able to do and reports each result
//! as JSON, so the runtime's tests can check the sandbox from the inside. The body is
//! `{"connect": "127.0.0.1:PORT"}`, an address a test listens on.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use guest_sdk::serde_json::{Value, json};
use guest_sdk::{Context, Error, Handler, Response};

/// The handler: `transform_fn` only.
pub struct SandboxProbe;

#[guest_sdk::handler]
impl Handler for SandboxProbe {
    fn transform_fn(
        _model: Option<&()>,
        body: Vec<u8>,
        _content_type: &str,
        _accept: &str,
        _ctx: &Context,
    ) -> Result<Response, Error> {
        let request: Value = guest_sdk::json::from_slice(&body)?;
        let connect = request["connect"]
            .as_str()
            .unwrap_or("127.0.0.1:9")
            .to_owned();
        let report = json!({
            "etc_passwd": outcome(std::fs::read_to_string("/etc/passwd").map(|s| s.len())),
            "root_dir": outcome(std::fs::read_dir("/").map(|d| d.count())),
            "model_config": outcome(std::fs::read_to_string("/opt/ml/model/config.json").map(|s| s.len())),
            "model_write": outcome(std::fs::File::create("/opt/ml/model/written-by-guest.txt")
                .and_then(|mut f| f.write_all(b"escaped"))),
            "model_parent": outcome(std::fs::read_dir("/opt/ml/model/..").map(|d| d.count())),
            "env_vars": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(),
            "hf_token": std::env::var("HF_TOKEN").ok(),
            "args": std::env::args().collect::<Vec<_>>(),
            "tcp_connect": outcome(
                connect.parse().map_err(std::io::Error::other)
                    .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
                    .and_then(|mut s| { s.write_all(b"hello")?; let mut b = [0u8; 1]; s.read(&mut b) })
            ),
            "dns_lookup": outcome(("localhost", 80).to_socket_addrs().map(|a| a.count())),
            "udp_bind": outcome(UdpSocket::bind("127.0.0.1:0").map(|_| ())),
        });
        Response::json(&report)
    }
}

/// `{"ok": value}` or `{"err": message}`.
fn outcome<T: std::fmt::Debug>(result: std::io::Result<T>) -> Value {
    match result {
        Ok(value) => json!({ "ok": format!("{value:?}") }),
        Err(err) => json!({ "err": err.to_string() }),
    }
}
