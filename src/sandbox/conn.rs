//! Transport wrapper that lets the fault layer throttle one response body on
//! its connection (`Faults::slow_body`). axum exposes no streaming body we could
//! pace from here, so the pacing happens in the socket's `poll_write` instead.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use super::lock;

/// Chunks a slow body is cut into (fewer for tiny bodies).
const SLOW_CHUNKS: usize = 10;

pub(crate) struct FaultListener {
    inner: TcpListener,
}

impl FaultListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        FaultListener { inner }
    }
}

impl Listener for FaultListener {
    type Io = FaultIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultIo, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Without NODELAY the paced chunks would be coalesced by Nagle.
                    let _ = stream.set_nodelay(true);
                    return (
                        FaultIo {
                            stream,
                            ctl: ConnCtl::default(),
                            active: None,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::debug!(error = %e, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Handle the fault layer gets (as `ConnectInfo<ConnCtl>`) to steer the
/// connection its request arrived on.
#[derive(Clone, Default)]
pub(crate) struct ConnCtl(Arc<Mutex<Option<Plan>>>);

#[derive(Clone, Copy)]
struct Plan {
    body_len: usize,
    duration: Duration,
}

impl ConnCtl {
    /// Paces the next response written on this connection. hyper writes one
    /// response at a time per HTTP/1 connection, so "next" is the one being built.
    pub(crate) fn throttle_next_body(&self, body_len: usize, duration: Duration) {
        if body_len > 0 {
            *lock(&self.0) = Some(Plan { body_len, duration });
        }
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for ConnCtl {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.io().ctl.clone()
    }
}

pub(crate) struct FaultIo {
    stream: TcpStream,
    ctl: ConnCtl,
    active: Option<Throttle>,
}

struct Throttle {
    /// How much of "\r\n\r\n" (end of the response head) has been seen.
    head_match: usize,
    body_left: usize,
    chunk: usize,
    chunk_left: usize,
    interval: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Throttle {
    fn new(plan: Plan) -> Self {
        let chunks = plan.body_len.clamp(1, SLOW_CHUNKS);
        Throttle {
            head_match: 0,
            body_left: plan.body_len,
            chunk: plan.body_len.div_ceil(chunks),
            chunk_left: 0,
            interval: plan.duration / chunks as u32,
            sleep: None,
        }
    }

    fn head_done(&self) -> bool {
        self.head_match == HEAD_END.len()
    }
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";

/// Advances a match of `HEAD_END` by one byte.
fn match_head_end(matched: usize, b: u8) -> usize {
    if b == HEAD_END[matched] {
        matched + 1
    } else if b == b'\r' {
        1
    } else {
        0
    }
}

impl AsyncRead for FaultIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.active.is_none() {
            this.active = lock(&this.ctl.0).take().map(Throttle::new);
        }
        let Some(t) = this.active.as_mut() else {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        };

        if !t.head_done() {
            // Write the head unpaced, stopping exactly where the body starts.
            let mut matched = t.head_match;
            let mut end = buf.len();
            for (i, &b) in buf.iter().enumerate() {
                matched = match_head_end(matched, b);
                if matched == HEAD_END.len() {
                    end = i + 1;
                    break;
                }
            }
            let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &buf[..end]))?;
            for &b in &buf[..n] {
                t.head_match = match_head_end(t.head_match, b);
            }
            if t.head_done() {
                t.sleep = Some(Box::pin(tokio::time::sleep(t.interval)));
            }
            return Poll::Ready(Ok(n));
        }

        if let Some(sleep) = t.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            t.sleep = None;
            t.chunk_left = t.chunk.min(t.body_left);
        }
        let allowed = t.chunk_left.min(buf.len());
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &buf[..allowed]))?;
        t.chunk_left -= n;
        t.body_left -= n;
        if t.body_left == 0 {
            this.active = None;
        } else if t.chunk_left == 0 {
            t.sleep = Some(Box::pin(tokio::time::sleep(t.interval)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
