//! Noticing clients that hang up.
//!
//! A client that gives up closes its connection, but poem keeps polling the
//! request's handler to completion (it drains in-flight requests of every
//! connection it closes). For the demo route that would mean a pool slot and a
//! server backend held for the rest of `pg_sleep`, and abandoned requests
//! piling up against `max_connections`.
//!
//! So the listener hands out connections wrapped in [`WatchedIo`], which
//! cancels a token when the client's side reads end-of-file or fails (hyper
//! keeps reading while a request is in flight exactly to detect this). The
//! handler races its work against that token; losing the race drops the work,
//! and the dropped [`crate::db::pool::Lease`] ends the statement on the server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Open connections by peer address, each with a token cancelled on hang-up.
#[derive(Default, Clone)]
pub struct Disconnects {
    open: Arc<Mutex<HashMap<SocketAddr, CancellationToken>>>,
}

impl Disconnects {
    /// The token of the connection this request came on (a fresh, never
    /// cancelled one when the connection is unknown).
    pub fn token(&self, remote: &RemoteAddr) -> CancellationToken {
        remote
            .as_socket_addr()
            .and_then(|addr| self.open.lock().expect("not poisoned").get(addr).cloned())
            .unwrap_or_default()
    }
}

/// Wraps an acceptor so every connection it hands out is watched.
pub struct WatchingAcceptor<A> {
    inner: A,
    disconnects: Disconnects,
}

impl<A> WatchingAcceptor<A> {
    pub fn new(inner: A, disconnects: Disconnects) -> Self {
        WatchingAcceptor { inner, disconnects }
    }
}

impl<A: Acceptor> Acceptor for WatchingAcceptor<A> {
    type Io = WatchedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let token = CancellationToken::new();
        let addr = remote.as_socket_addr().copied();
        if let Some(addr) = addr {
            self.disconnects
                .open
                .lock()
                .expect("not poisoned")
                .insert(addr, token.clone());
        }
        let io = WatchedIo {
            inner: io,
            token,
            addr,
            disconnects: self.disconnects.clone(),
        };
        Ok((io, local, remote, scheme))
    }
}

/// A connection that cancels its token when the peer hangs up.
pub struct WatchedIo<T> {
    inner: T,
    token: CancellationToken,
    addr: Option<SocketAddr>,
    disconnects: Disconnects,
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(addr) = self.addr {
            self.disconnects
                .open
                .lock()
                .expect("not poisoned")
                .remove(&addr);
        }
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
