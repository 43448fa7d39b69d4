//! Helpers shared by the fuzz targets: a reader that hands out its bytes in chosen pieces (a
//! CGI's pipe or a front server's socket delivers them however the kernel likes), and a
//! `block_on` for futures that never wait on anything.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

/// An `AsyncRead` over `data` that returns at most `sizes[i % sizes.len()]` bytes on read `i`
/// (each size at least 1), and is always ready.
pub struct PieceReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    reads: usize,
}

impl<'a> PieceReader<'a> {
    pub fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
        let sizes = if sizes.is_empty() {
            vec![usize::MAX]
        } else {
            sizes
        };
        PieceReader {
            data,
            sizes: sizes.into_iter().map(|size| size.max(1)).collect(),
            reads: 0,
        }
    }

    /// Everything in one read (as far as the caller's buffer allows).
    pub fn whole(data: &'a [u8]) -> Self {
        PieceReader::new(data, vec![usize::MAX])
    }

    /// One byte per read: every line end straddles two reads somewhere.
    pub fn bytewise(data: &'a [u8]) -> Self {
        PieceReader::new(data, vec![1])
    }

    /// Piece sizes 1..=13 in an order that depends on `seed`.
    pub fn uneven(data: &'a [u8], seed: usize) -> Self {
        let sizes = (0..16).map(|i| (seed.wrapping_mul(31) + i * 7) % 13 + 1);
        PieceReader::new(data, sizes.collect())
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

impl AsyncRead for PieceReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes[this.reads % this.sizes.len()];
        this.reads += 1;
        let n = size.min(buf.remaining()).min(this.data.len());
        let (piece, rest) = this.data.split_at(n);
        buf.put_slice(piece);
        this.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (all its I/O is in memory and always ready). A future that
/// does return `Pending` would wait forever in real life too: that is a bug, and a panic here.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a future over in-memory input returned Pending"),
    }
}
