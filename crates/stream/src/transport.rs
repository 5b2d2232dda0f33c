//! A client's socket: plain TCP, or TCP upgraded to TLS (after STARTTLS, or from the first
//! byte on a direct-TLS listener).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;

/// A TCP connection, encrypted or not.
pub enum Transport {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP, accepted (we are the TLS server).
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS over TCP, initiated (we are the TLS client: outgoing server-to-server streams).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::ClientTls(_))
    }

    /// The certificate chain the peer presented during the TLS handshake, leaf first
    /// (empty for plaintext or when the peer sent none).
    pub fn peer_certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        let certs = match self {
            Transport::Plain(_) => None,
            Transport::Tls(s) => s.get_ref().1.peer_certificates(),
            Transport::ClientTls(s) => s.get_ref().1.peer_certificates(),
        };
        certs
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::ClientTls(s) => s.is_write_vectored(),
        }
    }
}
