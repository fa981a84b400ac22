//! TLS for [`crate::serve_tls`] (cargo feature `tls`): rustls (on ring) with ALPN `h2` and
//! `http/1.1`, a PEM certificate chain and private key, reloadable while serving.
//!
//! Browsers negotiate HTTP/2 through ALPN, so over TLS long-polling runs on HTTP/2 (where the
//! `multiple-clients` limit does not apply: the server sees each request's version) and
//! WebSocket on HTTP/1.1 connections of its own. What `serve` does per connection is unchanged:
//! the TLS stream wraps the counted, write-bounded socket ([`Conn`]), so the connection limit
//! and the write deadline cover TLS connections too. The handshake must complete within the
//! header read timeout.
//!
//! Without the feature this module only holds [`Io`], the plain socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
#[cfg(feature = "tls")]
use std::{path::Path, path::PathBuf, sync::Arc, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Conn;

/// What `serve` may wrap a connection in: a TLS configuration, or nothing without the feature.
#[cfg(feature = "tls")]
pub(crate) type Acceptor = TlsConfig;
/// What `serve` may wrap a connection in: nothing without the `tls` feature (no value exists).
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub(crate) enum Acceptor {}

/// A connection as hyper reads and writes it: the socket itself, or TLS over it (boxed: the
/// TLS state is large and plain connections should not pay for it).
pub(crate) enum Io {
    /// Cleartext.
    Plain(Conn),
    /// TLS over the socket.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

impl Io {
    /// `conn` as it is, or after a TLS handshake bounded by `timeout` (`None` when the
    /// handshake fails or times out: the connection is then dropped).
    #[cfg(feature = "tls")]
    pub(crate) async fn accept(
        conn: Conn,
        tls: Option<&Acceptor>,
        timeout: Duration,
    ) -> Option<Io> {
        let Some(tls) = tls else {
            return Some(Io::Plain(conn));
        };
        match tokio::time::timeout(timeout, tls.acceptor().accept(conn)).await {
            Ok(Ok(stream)) => Some(Io::Tls(Box::new(stream))),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }

    /// `conn` as it is (built without TLS).
    #[cfg(not(feature = "tls"))]
    pub(crate) async fn accept(
        conn: Conn,
        _tls: Option<&Acceptor>,
        _timeout: std::time::Duration,
    ) -> Option<Io> {
        Some(Io::Plain(conn))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(c) => c.is_write_vectored(),
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_flush(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server's TLS settings: a certificate chain and its private key, read from PEM files,
/// offered with ALPN `h2` and `http/1.1`. Cloning shares it; [`TlsConfig::reload`] replaces
/// the certificate for the connections accepted afterwards (e.g. on `SIGHUP`, after a renewal)
/// without a restart.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<TlsInner>,
}

#[cfg(feature = "tls")]
struct TlsInner {
    cert: PathBuf,
    key: PathBuf,
    current: parking_lot::RwLock<Arc<tokio_rustls::rustls::ServerConfig>>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .finish()
    }
}

#[cfg(feature = "tls")]
impl TlsConfig {
    /// The ALPN protocols offered, in order of preference.
    pub const ALPN: [&'static [u8]; 2] = [b"h2", b"http/1.1"];

    /// Reads the certificate chain (`cert`: PEM, the server's certificate first, then its
    /// intermediates) and the private key (`key`: PEM, PKCS#8, PKCS#1 or SEC1). Fails with
    /// `InvalidInput` and the file's name when a file cannot be read, holds no certificate or
    /// key, or the key does not belong to the certificate.
    pub fn from_pem_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> io::Result<TlsConfig> {
        let (cert, key) = (cert.into(), key.into());
        let config = build(&cert, &key)?;
        Ok(TlsConfig {
            inner: Arc::new(TlsInner {
                cert,
                key,
                current: parking_lot::RwLock::new(Arc::new(config)),
            }),
        })
    }

    /// Reads the two files again and, when they are valid, serves the new certificate to the
    /// connections accepted from now on (established ones keep theirs). On error the current
    /// certificate stays in use and the error is returned.
    pub fn reload(&self) -> io::Result<()> {
        let config = build(&self.inner.cert, &self.inner.key)?;
        *self.inner.current.write() = Arc::new(config);
        Ok(())
    }

    /// The certificate chain's file.
    pub fn cert_path(&self) -> &Path {
        &self.inner.cert
    }

    /// The private key's file.
    pub fn key_path(&self) -> &Path {
        &self.inner.key
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.inner.current.read().clone())
    }
}

#[cfg(feature = "tls")]
fn build(cert: &Path, key: &Path) -> io::Result<tokio_rustls::rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let invalid = |path: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {what}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(cert, format!("cannot read a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(cert, "no CERTIFICATE in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(key, format!("cannot read a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| invalid(key, format!("not usable with {}: {e}", cert.display())))?;
    config.alpn_protocols = TlsConfig::ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
