//! HTTP clients for the tests: reqwest for ordinary requests, and a small raw HTTP/1.1 client
//! for what reqwest cannot send (unnormalised paths such as `/cgi-bin/../x`) or cannot show
//! (several requests on one known TCP connection, a response that arrives while the request
//! body is still being refused).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Sends `count` GETs of `url` at once and asserts that each is answered 200.
pub async fn all_answer_200_at_once(http: &reqwest::Client, url: &str, count: usize) {
    let requests = (0..count).map(|_| {
        let request = http.get(url).send();
        async move { request.await.map(|response| response.status().as_u16()) }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.expect("an answer"), 200);
    }
}

/// A reqwest client that never uses a proxy and gives up on any request after `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

/// Limits for the raw response reader, so a misbehaving server cannot make a test hang or eat
/// memory.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How [`read_response`]'s error begins for a chunked body cut off after its head, followed
/// by the head's status.
pub const CUT_OFF_AFTER_HEAD: &str = "answer cut off after a head of ";

/// A response read by the raw client.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

async fn read_line_limited<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r
        .take(u64::try_from(MAX_HEAD).unwrap_or(u64::MAX))
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(bad("response line too long"));
    }
    let text = String::from_utf8(line).map_err(|_| bad("response head is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one response (status line, headers, body framed by chunked encoding, Content-Length,
/// or the end of the connection) from `r`. `head_request` says a HEAD was sent (no body).
pub async fn read_response<R: AsyncBufRead + Unpin>(
    r: &mut R,
    head_request: bool,
) -> io::Result<RawResponse> {
    let status_line = read_line_limited(r).await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    let mut head_size = status_line.len();
    loop {
        let line = read_line_limited(r).await?;
        if line.is_empty() {
            break;
        }
        head_size += line.len();
        if head_size > MAX_HEAD {
            return Err(bad("response head too large"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        // A chunked body that ends without its last chunk is an answer cut off (the gateway
        // does so when it loses the CGI mid-answer): said apart, with its status.
        response.body = read_chunked(r).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("{CUT_OFF_AFTER_HEAD}{status}: {error}"),
            )
        })?;
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large for the raw client"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        response.body = body;
    } else {
        let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX);
        r.take(limit).read_to_end(&mut response.body).await?;
    }
    Ok(response)
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line_limited(r).await?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line_limited(r).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large for the raw client"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        if !read_line_limited(r).await?.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// Sends `GET target` exactly as given (no normalisation) on a new connection with
/// `Connection: close`, and reads the response, all within `timeout`.
pub async fn raw_get(addr: SocketAddr, target: &str, timeout: Duration) -> io::Result<RawResponse> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(request.as_bytes()).await?;
        let mut reader = BufReader::new(read);
        read_response(&mut reader, false).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {target} timed out")))?
}
