//! The TLS stream against a real rustls client (tokio-rustls) over loopback TCP: buffers released
//! when idle, every byte delivered through small reads and large writes, a client's TLS 1.3
//! KeyUpdate, close_notify in both directions, alerts on a failed handshake, garbage input.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientTls;

use super::TlsStream;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Pki {
    server: Arc<ServerConfig>,
    roots: RootCertStore,
}

fn pki() -> Pki {
    pki_with(None)
}

/// A self-signed server certificate for `localhost`, and a client verifier when given.
fn pki_with(client_verifier: Option<Arc<dyn ClientCertVerifier>>) -> Pki {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    Pki {
        server: Arc::new(server),
        roots,
    }
}

fn client_config(pki: &Pki, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(pki.roots.clone())
            .with_no_client_auth(),
    )
}

/// A connected pair: our server stream and a tokio-rustls client.
async fn pair(
    pki: &Pki,
    version: &'static SupportedProtocolVersion,
) -> (TlsStream, ClientTls<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connector = TlsConnector::from(client_config(pki, version));
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    };
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsStream::accept(tcp, Arc::clone(&pki.server))
            .await
            .unwrap()
    };
    let (server, client) = tokio::join!(server, client);
    (server, client)
}

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS12, &rustls::version::TLS13];

/// One poll of a read with nothing to read: Pending, and the stream holds no buffer.
async fn assert_idle(server: &mut TlsStream) {
    let mut space = [0u8; 64];
    let polled = poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut space);
        Poll::Ready(
            std::pin::Pin::new(&mut *server)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().len()),
        )
    })
    .await;
    assert!(
        polled.is_pending(),
        "nothing was sent, yet the read returned {polled:?}"
    );
    assert_eq!(
        server.held_bytes(),
        0,
        "an idle connection holds buffers: {server:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer_after_traffic_both_ways() {
    let pki = pki();
    for version in VERSIONS {
        let (mut server, mut client) = pair(&pki, version).await;
        assert_idle(&mut server).await;
        let request = vec![7u8; 3000];
        client.write_all(&request).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; request.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
        let reply = vec![9u8; 40_000];
        server.write_all(&reply).await.unwrap();
        server.flush().await.unwrap();
        let mut back = vec![0u8; reply.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, reply);
        assert_idle(&mut server).await;
    }
}

#[tokio::test]
async fn small_reads_and_large_writes_keep_every_byte_in_order() {
    let pki = pki();
    for version in VERSIONS {
        let (server, client) = pair(&pki, version).await;
        // 1 MiB each way at once, the server echoing through split halves with 7-byte reads
        // (more than MAX_UNSENT waits to be sent, so the writer is held back).
        let data: Vec<u8> = (0..1_048_576u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let (mut c_rd, mut c_wr) = tokio::io::split(client);
        let (mut s_rd, mut s_wr) = tokio::io::split(server);
        let echo = tokio::spawn(async move {
            let mut small = [0u8; 7];
            let mut total = 0;
            while total < 1_048_576 {
                let n = s_rd.read(&mut small).await.unwrap();
                assert!(n > 0, "EOF after {total} bytes");
                s_wr.write_all(&small[..n]).await.unwrap();
                total += n;
            }
            s_wr.flush().await.unwrap();
        });
        let to_send = data.clone();
        let sender = tokio::spawn(async move {
            for chunk in to_send.chunks(100_000) {
                c_wr.write_all(chunk).await.unwrap();
            }
            c_wr.flush().await.unwrap();
            c_wr
        });
        let mut back = vec![0u8; data.len()];
        c_rd.read_exact(&mut back).await.unwrap();
        echo.await.unwrap();
        drop(sender.await.unwrap());
        assert!(back == data, "echoed bytes differ");
    }
}

#[tokio::test]
async fn a_client_key_update_is_followed_in_both_directions() {
    let pki = pki();
    let (mut server, mut client) = pair(&pki, &rustls::version::TLS13).await;
    client.write_all(b"before").await.unwrap();
    client.flush().await.unwrap();
    let mut b = [0u8; 6];
    server.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"before");
    // The client sends a KeyUpdate asking us to update too, then data under its new key.
    client.get_mut().1.refresh_traffic_keys().unwrap();
    client.write_all(b"after").await.unwrap();
    client.flush().await.unwrap();
    let mut a = [0u8; 5];
    server.read_exact(&mut a).await.unwrap();
    assert_eq!(&a, b"after");
    // Our reply must be under our new key, or the client fails to decrypt it.
    server.write_all(b"reply").await.unwrap();
    server.flush().await.unwrap();
    let mut r = [0u8; 5];
    client.read_exact(&mut r).await.unwrap();
    assert_eq!(&r, b"reply");
}

/// `from` writes `words` and shuts down; `to` reads them, then a clean end.
async fn last_words(
    from: &mut (impl AsyncWriteExt + Unpin),
    to: &mut (impl AsyncReadExt + Unpin),
    words: &[u8],
) {
    from.write_all(words).await.unwrap();
    from.shutdown().await.unwrap();
    let mut all = Vec::new();
    to.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, words);
}

#[tokio::test]
async fn close_notify_both_ways_and_a_bare_tcp_close_is_an_error() {
    let pki = pki();
    for version in VERSIONS {
        // Server shuts down: the client reads a clean end (close_notify), not an error.
        let (mut server, mut client) = pair(&pki, version).await;
        last_words(&mut server, &mut client, b"bye").await;
        // Client shuts down: the server reads a clean end.
        let (mut server, mut client) = pair(&pki, version).await;
        last_words(&mut client, &mut server, b"last").await;

        // The client's TCP connection ends without close_notify: a truncation, an error. (The
        // client reads first, so that no unread session ticket turns its close into a reset.)
        let (mut server, mut client) = pair(&pki, version).await;
        server.write_all(b"x").await.unwrap();
        server.flush().await.unwrap();
        let mut x = [0u8; 1];
        client.read_exact(&mut x).await.unwrap();
        let (tcp, _) = client.into_inner();
        drop(tcp);
        let mut all = Vec::new();
        let err = server.read_to_end(&mut all).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}

#[tokio::test]
async fn a_failed_handshake_sends_the_alert_and_carries_the_rustls_error() {
    // A server that requires client certificates from a CA this client has none of.
    let other = KeyPair::generate().unwrap();
    let ca = CertificateParams::new(vec!["ca".to_owned()])
        .unwrap()
        .self_signed(&other)
        .unwrap();
    let mut ca_roots = RootCertStore::empty();
    ca_roots.add(ca.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots), provider())
            .build()
            .unwrap();
    let pki = pki_with(Some(verifier));
    let server_config = Arc::clone(&pki.server);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(client_config(&pki, &rustls::version::TLS13));
        // TLS 1.3: the client finishes its side first, then reads the server's alert.
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let mut b = [0u8; 1];
        tls.read(&mut b).await
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = TlsStream::accept(tcp, server_config).await.unwrap_err();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .expect("the rustls error inside the io::Error");
    assert_eq!(*inner, rustls::Error::NoCertificatesPresented);
    assert_eq!(
        super::super::classify(&err),
        super::super::HandshakeFailure::NoCertificate
    );
    let client_err = client.await.unwrap().unwrap_err();
    assert!(
        client_err.to_string().contains("CertificateRequired"),
        "the client got no certificate_required alert: {client_err}"
    );
}

#[tokio::test]
async fn garbage_and_oversized_records_are_refused_without_panic() {
    let pki = pki();
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // An application-data record header announcing 65,535 bytes, before any handshake.
        &[0x17, 0x03, 0x03, 0xff, 0xff, 0, 0, 0],
        // A handshake record announcing a 16 MiB ClientHello.
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0xff, 0xff, 0xff, 0x03, 0x03, 0, 0,
        ],
        &[0x16],
    ];
    for input in inputs {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(input).await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let err = TlsStream::accept(tcp, Arc::clone(&pki.server))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            "{input:?}: {err:?}"
        );
        client.await.unwrap();
    }
}

#[tokio::test]
async fn a_forged_or_oversized_record_after_the_handshake_ends_the_stream_with_an_error() {
    let pki = pki();
    let forged: [&[u8]; 2] = [
        // An application-data record whose ciphertext is noise: the AEAD check fails.
        &[
            0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
        ],
        // A record announcing 65,535 bytes, past the 16 KiB + 256 that TLS allows.
        &[0x17, 0x03, 0x03, 0xff, 0xff, 0, 0, 0, 0],
    ];
    for version in VERSIONS {
        for bytes in forged {
            let (mut server, mut client) = pair(&pki, version).await;
            // A good record first: it is delivered.
            client.write_all(b"good").await.unwrap();
            client.flush().await.unwrap();
            let mut good = [0u8; 4];
            server.read_exact(&mut good).await.unwrap();
            assert_eq!(&good, b"good");
            client.get_mut().0.write_all(bytes).await.unwrap();
            let mut rest = [0u8; 16];
            let err = server.read(&mut rest).await.unwrap_err();
            assert!(
                err.get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .is_some(),
                "{version:?} {bytes:?}: {err:?}"
            );
            // The stream stays failed, and writing fails too.
            assert!(server.read(&mut rest).await.is_err());
            assert!(server.write_all(b"x").await.is_err());
        }
    }
}

/// One poll of [`TlsStream::poll_read_ready`].
async fn ready_once(server: &mut TlsStream) -> Poll<std::io::Result<()>> {
    poll_fn(|cx| Poll::Ready(server.poll_read_ready(cx))).await
}

/// One poll of a read into 64 bytes: the bytes read, or Pending.
async fn read_once(server: &mut TlsStream) -> Poll<std::io::Result<Vec<u8>>> {
    let mut space = [0u8; 64];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut space);
        Poll::Ready(
            std::pin::Pin::new(&mut *server)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().to_vec()),
        )
    })
    .await
}

/// The relay waits on readiness without a buffer: Pending (and nothing held) while nothing
/// arrives, Ready once a record does. After half a record the socket made it Ready once, the
/// read finds nothing, and it is Pending again, not Ready forever (which would spin the relay).
#[tokio::test]
async fn readiness_waits_without_a_buffer_and_does_not_spin_on_half_a_record() {
    let pki = pki();
    for version in VERSIONS {
        let (mut server, mut client) = pair(&pki, version).await;
        assert!(ready_once(&mut server).await.is_pending());
        assert_eq!(server.held_bytes(), 0);
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        assert!(matches!(read_once(&mut server).await, Poll::Ready(Ok(b)) if b == b"hello"));
        assert!(ready_once(&mut server).await.is_pending());

        // The first bytes of an application-data record header, and nothing more yet.
        client.get_mut().0.write_all(&[0x17, 0x03]).await.unwrap();
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        assert!(read_once(&mut server).await.is_pending());
        assert!(
            ready_once(&mut server).await.is_pending(),
            "half a record left the stream ready"
        );
    }
}
