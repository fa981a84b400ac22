//! The binary over HTTPS: `--tls-cert`/`--tls-key` with a certificate of a test CA made here,
//! the `listening on https://` line, a Bayeux handshake over TLS, `/healthz` over HTTP/2 ALPN,
//! the voice API's URIs in https, and the certificate reloaded on SIGHUP.

#![cfg(all(feature = "tls", feature = "voice"))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "bayeux test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

/// Writes a certificate for 127.0.0.1 and its key into `dir`; returns the certificate.
fn issue(ca: &Ca, dir: &Path, cn: &str) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// The server process, killed by PID on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bayeux-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BAYEUX_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bayeux-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("listening on https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no https listening line: {line:?}"));
    Server { child, port }
}

async fn connect(ca: &Ca, port: u16, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

async fn request(ca: &Ca, port: u16, req: &str) -> String {
    let mut s = connect(ca, port, b"http/1.1").await;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_with_voice_uris_and_reload_on_sighup() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("bayeux-server-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = ca();
    let first = issue(&ca, &dir, "first");
    let server = spawn(&dir);
    let port = server.port;

    // HTTP/2 is offered and taken.
    let s = connect(&ca, port, b"h2").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], first);
    drop(s);

    let body = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}]"#;
    let reply = request(
        &ca,
        port,
        &format!(
            "POST /cometd/handshake HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(reply.contains(r#""successful":true"#), "{reply}");

    // The voice API's URIs follow the scheme it is served with.
    let me = request(
        &ca,
        port,
        "GET /api/v2/me/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic YWdlbnQxOnBhc3N3b3Jk\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(me.contains(&format!("https://127.0.0.1:{port}/")), "{me}");

    // Renewed files, then SIGHUP: new connections get the new certificate.
    let second = issue(&ca, &dir, "second");
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = connect(&ca, port, b"http/1.1").await;
        if s.get_ref().1.peer_certificates().unwrap()[0] == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was not reloaded on SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
