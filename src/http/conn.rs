//! One connection's clock: what it is waiting for from the client, since
//! when, and the deadline that follows. The socket wrapper fails a read past
//! the deadline (hyper then closes the connection); the service wrapper moves
//! the phase when a request starts and ends; the ingest handler marks the
//! time it spends waiting for a body.
//!
//! hyper 1's own `header_read_timeout` also runs while a keep-alive
//! connection idles between requests, so it cannot give a 10 s head and a
//! 75 s idle limit at once; this does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// What a connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The rest of a request head: bounded by the header read timeout.
    Head,
    /// A new request on a kept-alive connection: bounded by the idle timeout.
    Idle,
    /// A request body (the handler bounds it, and answers 408).
    Body,
    /// Nothing from the client: the relay is working on a request.
    Busy,
}

/// The timeouts a connection's clock applies.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Shared by a connection's socket, its service and its handler.
pub struct ConnWatch {
    state: Mutex<(Phase, Instant)>,
    timeouts: Timeouts,
    /// Set once the listener has chosen this connection to close.
    killed: AtomicBool,
    kill: Notify,
}

impl ConnWatch {
    /// A new connection: its first head is due within the header timeout.
    pub fn new(timeouts: Timeouts) -> Arc<ConnWatch> {
        Arc::new(ConnWatch {
            state: Mutex::new((Phase::Head, Instant::now())),
            timeouts,
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        })
    }

    /// The current phase and since when.
    pub fn phase(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, phase: Phase) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (phase, Instant::now());
    }

    /// Marks the handler's wait for a body until the guard is dropped.
    pub fn awaiting_body(self: &Arc<Self>) -> BodyWait {
        self.set(Phase::Body);
        BodyWait(self.clone())
    }

    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase() {
            (Phase::Head, since) => {
                Some((since + self.timeouts.header_read, "header read timeout"))
            }
            (Phase::Idle, since) => Some((since + self.timeouts.idle, "idle timeout")),
            _ => None,
        }
    }

    /// Bytes arrived: an idle connection now has a head under way.
    fn on_bytes(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 == Phase::Idle {
            *s = (Phase::Head, Instant::now());
        }
    }

    /// Asks the connection's task to drop it (the listener is at its cap).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Resolves once [`ConnWatch::kill`] was called.
    pub async fn killed(&self) {
        self.kill.notified().await
    }
}

/// See [`ConnWatch::awaiting_body`].
pub struct BodyWait(Arc<ConnWatch>);

impl Drop for BodyWait {
    fn drop(&mut self) {
        self.0.set(Phase::Busy);
    }
}

/// The socket, failing a read that waits past the connection's deadline.
pub struct Guarded {
    io: TcpStream,
    watch: Arc<ConnWatch>,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Guarded {
    pub fn new(io: TcpStream, watch: Arc<ConnWatch>) -> Guarded {
        Guarded {
            io,
            watch,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.watch.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some((deadline, what)) = this.watch.deadline() else {
                    return Poll::Pending;
                };
                if this.armed != Some(deadline) {
                    this.timer.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// warp's service with the connection's clock: busy from a request's head
/// to its answer, idle after; the handler finds the [`ConnWatch`] in the
/// request's extensions.
#[derive(Clone)]
pub struct Tracked<S> {
    pub inner: S,
    pub watch: Arc<ConnWatch>,
}

type Answer = Result<warp::reply::Response, std::convert::Infallible>;

impl<S> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone,
    S::Future: Send + 'static,
{
    type Response = warp::reply::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        self.watch.set(Phase::Busy);
        req.extensions_mut().insert(self.watch.clone());
        // warp's service is always ready (its poll_ready returns Ready).
        let answer = self.inner.clone().call(req);
        let watch = self.watch.clone();
        Box::pin(async move {
            let r = answer.await;
            watch.set(Phase::Idle);
            // This runs inside the connection's task, whose socket was last
            // polled while busy (no deadline): wake it once more so the read
            // that waits for the next request arms the idle deadline.
            std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::Ready(())
            })
            .await;
            r
        })
    }
}
