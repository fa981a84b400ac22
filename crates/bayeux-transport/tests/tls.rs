//! `serve_tls` (feature `tls`) with a certificate of a test CA made here: ALPN picks HTTP/2 or
//! HTTP/1.1, a Bayeux handshake succeeds over each, the certificate is reloaded without a
//! restart (and a bad one is refused while the old one stays), bad files are refused by name,
//! and a client that never finishes its handshake loses its connection.

#[cfg(not(feature = "tls"))]
#[test]
fn tls_needs_the_feature() {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped: tls tests: build with --features tls (cargo test --workspace enables it)"
    );
}

#[cfg(feature = "tls")]
mod with_tls {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use bayeux_core::{Engine, EngineConfig};
    use bayeux_transport::{BayeuxService, TlsConfig, TransportConfig, serve_tls};
    use http_body_util::{BodyExt, Full};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::rustls;
    use tokio_rustls::{TlsConnector, client::TlsStream};

    const HANDSHAKE: &str = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}]"#;

    /// A test CA and the server certificates it signs, as PEM files in a directory of their own.
    struct Pki {
        dir: PathBuf,
        ca_cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new(name: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!(
                "bayeux-tls-{name}-{}-{}",
                std::process::id(),
                bayeux_core::random_hex(4)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "bayeux test CA");
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca_cert = params.self_signed(&key).unwrap().der().clone();
            Pki {
                dir,
                ca_cert,
                issuer: Issuer::new(params, key),
            }
        }

        /// Writes a certificate for `localhost` and 127.0.0.1 named `cn`, and its key; returns
        /// the two paths and the certificate.
        fn issue(&self, cn: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let cert_path = self.dir.join("cert.pem");
            let key_path = self.dir.join("key.pem");
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path, cert.der().clone())
        }

        fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_cert.clone()).unwrap();
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    struct Server {
        addr: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(tls: TlsConfig, header_read_timeout: Duration) -> Server {
        start_with(tls, header_read_timeout, EngineConfig::default()).await
    }

    async fn start_with(
        tls: TlsConfig,
        header_read_timeout: Duration,
        engine: EngineConfig,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = TransportConfig {
            header_read_timeout,
            ..TransportConfig::default()
        };
        let (service, shutdown) = BayeuxService::new(Engine::new(engine), config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
            shutdown.shutdown();
        };
        let task = tokio::spawn(serve_tls(
            listener,
            tls,
            service.clone(),
            service,
            stop,
            Duration::from_secs(2),
        ));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    impl Server {
        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("serve_tls stops")
                .unwrap()
                .unwrap();
        }
    }

    async fn connect(
        pki: &Pki,
        addr: std::net::SocketAddr,
        alpn: &[&[u8]],
    ) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            pki.connector(alpn)
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
    }

    fn negotiated(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
        s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }

    fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
        s.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// A Bayeux handshake over HTTP/1.1 on `s`, written and read by hand.
    async fn handshake_h1(mut s: TlsStream<TcpStream>) -> String {
        let req = format!(
            "POST /cometd/handshake HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HANDSHAKE}",
            HANDSHAKE.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("reply in time")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A Bayeux handshake over HTTP/2 on `s` (hyper's client).
    async fn handshake_h2(s: TlsStream<TcpStream>) -> (http::Version, String) {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("https://localhost/cometd/handshake")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(HANDSHAKE.as_bytes())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("reply in time")
            .unwrap();
        let version = resp.version();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (version, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn alpn_selects_h2_or_http1_and_bayeux_works_over_both() {
        let pki = Pki::new("alpn");
        let (cert, key, _) = pki.issue("first");
        let server = start(
            TlsConfig::from_pem_files(&cert, &key).unwrap(),
            Duration::from_secs(10),
        )
        .await;

        let s = connect(&pki, server.addr, &[b"h2", b"http/1.1"]).await;
        assert_eq!(negotiated(&s).as_deref(), Some(&b"h2"[..]));
        let (version, body) = handshake_h2(s).await;
        assert_eq!(version, http::Version::HTTP_2);
        assert!(body.contains(r#""successful":true"#), "{body}");

        let s = connect(&pki, server.addr, &[b"http/1.1"]).await;
        assert_eq!(negotiated(&s).as_deref(), Some(&b"http/1.1"[..]));
        let reply = handshake_h1(s).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains(r#""successful":true"#), "{reply}");

        // No ALPN at all (old clients): HTTP/1.1.
        let s = connect(&pki, server.addr, &[]).await;
        assert_eq!(negotiated(&s), None);
        assert!(handshake_h1(s).await.contains(r#""successful":true"#));
        server.stop().await;
    }

    #[tokio::test]
    async fn reload_serves_the_new_certificate_and_keeps_the_old_on_error() {
        let pki = Pki::new("reload");
        let (cert, key, first) = pki.issue("first");
        let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
        let server = start(tls.clone(), Duration::from_secs(10)).await;
        let s = connect(&pki, server.addr, &[b"http/1.1"]).await;
        assert_eq!(peer_cert(&s), first);

        // Renewed in place (same paths), then reloaded: new connections get the new one, the
        // established one keeps working.
        let (_, _, second) = pki.issue("second");
        assert_ne!(first, second);
        tls.reload().unwrap();
        let s2 = connect(&pki, server.addr, &[b"http/1.1"]).await;
        assert_eq!(peer_cert(&s2), second);
        assert!(handshake_h1(s).await.contains(r#""successful":true"#));

        // A broken renewal is refused, naming the file; the second certificate stays.
        std::fs::write(&key, "not a key\n").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("key.pem"), "{e}");
        let s3 = connect(&pki, server.addr, &[b"http/1.1"]).await;
        assert_eq!(peer_cert(&s3), second);
        assert!(handshake_h1(s3).await.contains(r#""successful":true"#));
        server.stop().await;
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let pki = Pki::new("bad");
        let (cert, key, _) = pki.issue("one");
        let missing = pki.dir.join("missing.pem");
        let e = TlsConfig::from_pem_files(&missing, &key).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        // The key as certificate: no CERTIFICATE block.
        let e = TlsConfig::from_pem_files(&key, &key).unwrap_err();
        assert!(e.to_string().contains("key.pem"), "{e}");
        // A key that is not the certificate's.
        let other = KeyPair::generate().unwrap();
        let other_path = pki.dir.join("other.pem");
        std::fs::write(&other_path, other.serialize_pem()).unwrap();
        let e = TlsConfig::from_pem_files(&cert, &other_path).unwrap_err();
        assert!(e.to_string().contains("other.pem"), "{e}");
        assert!(TlsConfig::from_pem_files(&cert, &key).is_ok());
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_loses_its_connection() {
        let pki = Pki::new("stall");
        let (cert, key, _) = pki.issue("one");
        let server = start(
            TlsConfig::from_pem_files(&cert, &key).unwrap(),
            Duration::from_millis(300),
        )
        .await;
        // One byte of a ClientHello, then nothing.
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(&[0x16]).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("closed within the header read timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        server.stop().await;
    }

    /// One POST over HTTP/2 on `send`: the reply's `Set-Cookie` (if any) and JSON body.
    async fn post_h2(
        send: &mut hyper::client::conn::http2::SendRequest<Full<bytes::Bytes>>,
        path: &str,
        cookie: &str,
        body: String,
    ) -> (Option<String>, serde_json::Value) {
        let req = http::Request::post(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .header("cookie", cookie)
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (set_cookie, serde_json::from_slice(&body).unwrap())
    }

    fn connect_msg(client_id: &str) -> String {
        format!(
            r#"[{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"long-polling"}}]"#
        )
    }

    /// Two sessions of one browser (one `BAYEUX_BROWSER` cookie) long-polling over one HTTP/2
    /// connection: both connects are held, neither gets `multiple-clients` (over HTTP/1.1 the
    /// second would, see `tests/browser.rs`).
    #[tokio::test]
    async fn over_h2_a_browser_holds_several_long_polls() {
        let pki = Pki::new("h2slots");
        let (cert, key, _) = pki.issue("one");
        let engine = EngineConfig {
            timeout_ms: 1500,
            ..EngineConfig::default()
        };
        let server = start_with(
            TlsConfig::from_pem_files(&cert, &key).unwrap(),
            Duration::from_secs(10),
            engine,
        )
        .await;
        let s = connect(&pki, server.addr, &[b"h2"]).await;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut cookie = String::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut send = send.clone();
            let (set, reply) = post_h2(
                &mut send,
                "/cometd/handshake",
                &cookie,
                HANDSHAKE.to_owned(),
            )
            .await;
            if let Some(set) = set {
                cookie = set.split(';').next().unwrap().to_owned();
            }
            assert!(cookie.starts_with("BAYEUX_BROWSER="), "{cookie:?}");
            let id = reply[0]["clientId"].as_str().unwrap().to_owned();
            // The first connect returns at once; the second is the held one.
            let (_, first) = post_h2(&mut send, "/cometd/connect", &cookie, connect_msg(&id)).await;
            assert_eq!(first[0]["successful"], true, "{first}");
            let cookie = cookie.clone();
            held.push(tokio::spawn(async move {
                let start = std::time::Instant::now();
                let (_, reply) =
                    post_h2(&mut send, "/cometd/connect", &cookie, connect_msg(&id)).await;
                (start.elapsed(), reply)
            }));
        }
        for h in held {
            let (elapsed, reply) = tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("the held connect ends")
                .unwrap();
            let text = reply.to_string();
            assert!(!text.contains("multiple-clients"), "{text}");
            assert_eq!(reply[0]["successful"], true, "{text}");
            assert!(
                elapsed >= Duration::from_millis(1000),
                "held only {elapsed:?}: {text}"
            );
        }
        server.stop().await;
    }
}
