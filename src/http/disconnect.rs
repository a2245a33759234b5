//! Noticing clients that hang up.
//!
//! A client that gives up closes its connection, but hyper keeps polling the
//! request's handler to completion. For the demo route that would mean a pool
//! slot and a server backend held for the rest of `pg_sleep`, and abandoned
//! requests piling up against `max_connections`.
//!
//! So the server ([`super::server`]) wraps every connection in [`WatchedIo`],
//! which cancels a token when the client's side reads end-of-file or fails
//! (hyper keeps reading while a request is in flight exactly to detect this),
//! and hands each request the token as a [`ClientGone`] extension. The handler
//! races its work against it; losing the race drops the work, and the dropped
//! [`crate::db::pool::Lease`] ends the statement on the server.
//!
//! Not redundant with hyper's own end-of-file handling: without the race,
//! the abandoned statements of
//! `reliability::abandoned_requests_free_their_backend_and_pool_slot` still
//! end, but about a second after their clients left instead of within a
//! fifth of one.

use std::pin::Pin;
use std::task::{Context, Poll};

use poem::Request;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Cancelled when the client of the request's connection has hung up.
#[derive(Clone, Default)]
pub struct ClientGone(pub CancellationToken);

impl ClientGone {
    /// The token of the connection `req` came on (a fresh, never cancelled
    /// one for a request that did not come through [`super::server`]).
    pub fn of(req: &Request) -> CancellationToken {
        req.extensions()
            .get::<ClientGone>()
            .map(|gone| gone.0.clone())
            .unwrap_or_default()
    }
}

/// A connection that cancels its token when the peer hangs up.
pub struct WatchedIo<T> {
    inner: T,
    token: CancellationToken,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, token: CancellationToken) -> Self {
        WatchedIo { inner, token }
    }
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.token.cancel() // end of file: the client is gone
            }
            Poll::Ready(Err(_)) => self.token.cancel(),
            _ => {}
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
