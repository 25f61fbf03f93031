//! One bounded HTTP/1.1 GET: hyper's connection-level client over our own `TcpStream` (no pool,
//! no redirects, no TLS: a CRL carries its own signature, and CAs publish CRL distribution
//! points over `http://`, RFC 5280 §4.2.1.13). The whole exchange has a deadline and the body a
//! size bound, checked against `Content-Length` first and while reading.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::verify::Refusal;
use crate::labels::CrlFetchResult;

/// A `crl_urls` entry: `http://host[:port]/path`.
///
/// # Errors
/// Not an absolute `http://` URL with a host (the text says which part is wrong).
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}): expected http://host[:port]/path"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https is not supported: fetch the CRL over http (it is signed by the CA, and is checked here before use)".to_owned());
        }
        _ => return Err("expected http://host[:port]/path".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(uri)
}

/// GETs `uri`; the body, at most `max_bytes`, within `deadline`.
///
/// # Errors
/// [`CrlFetchResult::Network`], [`CrlFetchResult::Timeout`], [`CrlFetchResult::HttpStatus`] or
/// [`CrlFetchResult::TooLarge`], with a detail.
pub async fn get(uri: &Uri, max_bytes: usize, deadline: Duration) -> Result<Vec<u8>, Refusal> {
    request(uri, None, max_bytes, deadline).await
}

/// GETs `uri`, or POSTs `body` (content type, bytes) to it; the answer's body, at most
/// `max_bytes`, within `deadline`. (OCSP queries are POSTs: `crate::ocsp`.)
///
/// # Errors
/// As [`get`].
pub async fn request(
    uri: &Uri,
    body: Option<(&'static str, &[u8])>,
    max_bytes: usize,
    deadline: Duration,
) -> Result<Vec<u8>, Refusal> {
    let mut driver = None;
    let result = tokio::time::timeout(deadline, exchange(uri, body, max_bytes, &mut driver)).await;
    if let Some(task) = driver {
        task.abort();
    }
    result.unwrap_or_else(|_| {
        Err((
            CrlFetchResult::Timeout,
            format!("no whole answer within {deadline:?}"),
        ))
    })
}

async fn exchange(
    uri: &Uri,
    body: Option<(&'static str, &[u8])>,
    max_bytes: usize,
    driver: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<Vec<u8>, Refusal> {
    let network =
        |what: &str, e: &dyn std::fmt::Display| (CrlFetchResult::Network, format!("{what}: {e}"));
    let host = uri.host().unwrap_or_default();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| network("connect", &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| network("HTTP", &e))?;
    *driver = Some(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let builder = match body {
        None => hyper::Request::get(path),
        Some((content_type, _)) => hyper::Request::post(path).header(CONTENT_TYPE, content_type),
    }
    .header(HOST, authority)
    .header(
        USER_AGENT,
        concat!("mqtt-gateway/", env!("CARGO_PKG_VERSION")),
    );
    let payload = body.map_or_else(Bytes::new, |(_, b)| Bytes::copy_from_slice(b));
    let request = builder
        .body(Full::new(payload))
        .map_err(|e| network("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| network("HTTP", &e))?;
    let status = response.status();
    if !status.is_success() {
        return Err((CrlFetchResult::HttpStatus, format!("HTTP status {status}")));
    }
    let too_large = || {
        (
            CrlFetchResult::TooLarge,
            format!("the body is larger than {max_bytes} bytes"),
        )
    };
    let announced = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > u64::try_from(max_bytes).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                network("body", &e)
            }
        })?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-connection HTTP server on a local port that reads the request head and answers
    /// `answer` (or nothing, holding the connection, when `None`).
    async fn serve_once(answer: Option<Vec<u8>>) -> Uri {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(buf.get(..n).unwrap());
            }
            assert!(head.starts_with(b"GET /ca.crl HTTP/1.1\r\n"));
            match answer {
                Some(a) => {
                    let _ = s.write_all(&a).await;
                    let _ = s.shutdown().await;
                }
                None => std::future::pending::<()>().await,
            }
        });
        format!("http://{addr}/ca.crl").parse().unwrap()
    }

    #[tokio::test]
    async fn a_fetch_is_bounded_in_size_and_time_and_needs_a_2xx() {
        let chunked_big = {
            let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..3 {
                a.extend_from_slice(b"400\r\n");
                a.extend_from_slice(&[b'x'; 0x400]);
                a.extend_from_slice(b"\r\n");
            }
            a.extend_from_slice(b"0\r\n\r\n");
            a
        };
        type Row = (&'static str, Option<Vec<u8>>, Result<usize, CrlFetchResult>);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("200 with a body", Some(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec()), Ok(3)),
            ("404", Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()), Err(CrlFetchResult::HttpStatus)),
            ("redirects are not followed", Some(b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n".to_vec()), Err(CrlFetchResult::HttpStatus)),
            ("announced too large", Some(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n".to_vec()), Err(CrlFetchResult::TooLarge)),
            ("chunked, grows too large", Some(chunked_big), Err(CrlFetchResult::TooLarge)),
            ("not HTTP", Some(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()), Err(CrlFetchResult::Network)),
            ("never answers", None, Err(CrlFetchResult::Timeout)),
        ];
        for (name, answer, want) in table {
            let uri = serve_once(answer).await;
            let got = get(&uri, 2048, Duration::from_millis(500))
                .await
                .map(|body| body.len())
                .map_err(|(result, _)| result);
            assert_eq!(got, want, "{name}");
        }
        // Nobody listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let uri: Uri = format!("http://{closed}/ca.crl").parse().unwrap();
        let got = get(&uri, 2048, Duration::from_secs(5)).await;
        assert_eq!(got.map_err(|(r, _)| r), Err(CrlFetchResult::Network));
    }

    #[test]
    fn only_absolute_http_urls_with_a_host_are_accepted() {
        #[rustfmt::skip]
        let table = [
            ("http://pki.example/intermediate.crl", None),
            ("http://127.0.0.1:8080/ca.crl", None),
            ("http://[::1]:8080/ca.crl", None),
            ("https://pki.example/ca.crl", Some("https is not supported")),
            ("ftp://pki.example/ca.crl", Some("expected http://")),
            ("/ca.crl", Some("expected http://")),
            ("http://", Some("not a URL")),
            ("not a url", Some("not a URL")),
        ];
        for (url, want) in table {
            match (check_url(url), want) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.contains(want), "{url}: {e}"),
                (got, want) => panic!("{url}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
