//! Sending and receiving one message per packet, with descriptors attached as SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};

/// The most descriptors one message carries (a spawn request's stdin, stdout and stderr).
pub const MAX_FDS: usize = 3;

/// The most descriptors the kernel passes in one message (SCM_MAX_FD, include/net/scm.h).
/// The receive buffer has room for all of them: then a peer that sends more than [`MAX_FDS`]
/// has every one of them installed here, owned and closed, rather than cut off (`MSG_CTRUNC`)
/// after some were installed that could not be parsed, and so never closed.
const KERNEL_MAX_FDS: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("peer closed the channel")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("packet larger than {MAX_MESSAGE_BYTES} bytes")]
    Truncated,
    #[error("more than {MAX_FDS} descriptors attached")]
    TooManyFds,
}

/// One end of the gateway↔worker link. Sending takes `&self`, so many tasks may send on one
/// channel at once; each packet is delivered whole.
///
/// The socket is registered with the runtime for reading only. A socket registered for
/// writing too (as `tokio-seqpacket` registers it) wakes its owner each time the peer reads a
/// packet, since the kernel then signals it writable: one needless wake-up of the front or the
/// worker for every message, three per request. Sending tries at once and waits for room only
/// when the peer's queue is full ([`Channel::writable`]).
#[derive(Debug)]
pub struct Channel {
    socket: AsyncFd<OwnedFd>,
}

/// A reusable receive buffer: one per receiving loop, so receiving does not allocate.
pub struct RecvBuffer {
    data: Box<[u8]>,
    control: Vec<u8>,
}

impl Default for RecvBuffer {
    fn default() -> Self {
        RecvBuffer {
            // One byte more than the largest message so an oversize packet shows as truncated.
            data: vec![0; MAX_MESSAGE_BYTES + 1].into_boxed_slice(),
            control: nix::cmsg_space!([RawFd; KERNEL_MAX_FDS]),
        }
    }
}

impl Channel {
    /// Creates a connected pair (the gateway keeps one end, the worker inherits the other).
    /// Must be called inside a tokio runtime.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        Ok((Channel::registered(a)?, Channel::registered(b)?))
    }

    /// Wraps an inherited socket descriptor. Must be called inside a tokio runtime.
    pub fn from_owned_fd(fd: OwnedFd) -> std::io::Result<Channel> {
        // An inherited descriptor may be blocking; the runtime needs it non-blocking.
        set_nonblocking(fd.as_fd())?;
        Channel::registered(fd)
    }

    fn registered(fd: OwnedFd) -> std::io::Result<Channel> {
        Ok(Channel {
            socket: register(fd, Interest::READABLE)?,
        })
    }

    /// Gives the socket back as a plain descriptor (to hand it to a child process).
    pub fn into_owned_fd(self) -> OwnedFd {
        self.socket.into_inner()
    }

    /// Sends one message, with `fds` attached. The caller keeps its copies of the descriptors
    /// and should drop them once this returns.
    pub async fn send<T: Serialize>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds);
        }
        let bytes = codec::encode(message)?;
        let mut raw = [0 as RawFd; MAX_FDS];
        for (slot, fd) in raw.iter_mut().zip(fds) {
            *slot = fd.as_raw_fd();
        }
        let rights = [ControlMessage::ScmRights(&raw[..fds.len()])];
        let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        loop {
            // A packet goes whole or not at all (SOCK_SEQPACKET); MSG_NOSIGNAL: a closed peer
            // is an error to report, not a SIGPIPE.
            match sendmsg::<()>(
                self.socket.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                control,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => self.writable().await?,
                Err(errno) => return Err(ChannelError::Io(errno.into())),
            }
        }
    }

    /// Waits until the peer's queue has room again. Rare (the peer is not reading), so rather
    /// than keep the socket registered for writing, a duplicate of it is registered for as long
    /// as the wait lasts (epoll tells two descriptors of one socket apart). Registering reports
    /// a socket that is already writable at once, so no wake-up is missed in between.
    async fn writable(&self) -> std::io::Result<()> {
        let duplicate = self.socket.get_ref().try_clone()?;
        let waiter = register(duplicate, Interest::WRITABLE)?;
        waiter.writable().await?.clear_ready();
        Ok(())
    }

    /// Receives one message and the descriptors that came with it (close-on-exec, owned:
    /// dropping them closes them). End of stream is [`ChannelError::Closed`].
    pub async fn recv<T: DeserializeOwned>(
        &self,
        buffer: &mut RecvBuffer,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let received = loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|socket| receive(socket.get_ref().as_fd(), buffer)) {
                Ok(received) => break received?,
                Err(_would_block) => continue,
            }
        };
        if received.ancillary_truncated || received.fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds);
        }
        if received.truncated || received.bytes > MAX_MESSAGE_BYTES {
            return Err(ChannelError::Truncated);
        }
        if received.bytes == 0 {
            // Every message encodes to at least one byte: an empty read is end of stream.
            return Err(ChannelError::Closed);
        }
        let message = codec::decode(&buffer.data[..received.bytes])?;
        Ok((message, received.fds))
    }
}

fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor: it stays open, and `as_raw_fd` gives the same
    // number, for as long as the AsyncFd holds it.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// What one `recvmsg` brought: the packet's length (in the buffer), its descriptors, and
/// whether the kernel had to cut the packet or its descriptors short.
struct Received {
    bytes: usize,
    fds: Vec<OwnedFd>,
    truncated: bool,
    ancillary_truncated: bool,
}

fn receive(socket: BorrowedFd<'_>, buffer: &mut RecvBuffer) -> std::io::Result<Received> {
    let mut data = [IoSliceMut::new(&mut buffer.data)];
    let message = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut data,
            Some(&mut buffer.control),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
    let ancillary_truncated = message.flags.contains(MsgFlags::MSG_CTRUNC);
    // Own every descriptor first, so that they are closed on any error after this. (A cut-off
    // control buffer cannot be read; with room for KERNEL_MAX_FDS it is never cut off.)
    let mut fds = Vec::new();
    if !ancillary_truncated {
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = control {
                // SAFETY: the kernel has just installed these descriptors in this process for
                // this message; nothing else refers to them, so each gets exactly one owner.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    Ok(Received {
        bytes: message.bytes,
        fds,
        truncated,
        ancillary_truncated,
    })
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::worker::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn message_with_descriptors_arrives_whole() {
        let (gateway, worker) = Channel::pair().unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let message = ToWorker::Kill { id: 9 };
        gateway.send(&message, &[writer.as_fd()]).await.unwrap();
        drop(writer);
        let mut buffer = RecvBuffer::default();
        let (received, fds): (ToWorker, _) = worker.recv(&mut buffer).await.unwrap();
        assert_eq!(received, message);
        assert_eq!(fds.len(), 1);
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.write_all(b"through the socket").unwrap();
        drop(passed);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
    }

    /// Sends `message` until the peer's queue is full: sends go at once until one has to wait
    /// (the kernel queues a few packets per socket, net.unix.max_dgram_qlen). Returns how many
    /// went.
    async fn fill_queue(channel: &Channel, message: &ToWorker) -> usize {
        use std::time::Duration;
        let mut sent = 0;
        while let Ok(result) =
            tokio::time::timeout(Duration::from_millis(50), channel.send(message, &[])).await
        {
            result.unwrap();
            sent += 1;
            assert!(sent < 100_000, "the queue never filled");
        }
        sent
    }

    #[tokio::test]
    async fn a_send_to_a_full_queue_waits_for_room() {
        use std::time::Duration;
        let (a, b) = Channel::pair().unwrap();
        let message = ToWorker::Ping { seq: 1 };
        let sent = fill_queue(&a, &message).await;
        let last = ToWorker::Ping { seq: 2 };
        let pending = tokio::spawn(async move { a.send(&last, &[]).await.map(|()| a) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !pending.is_finished(),
            "a send to a full queue went through"
        );
        let mut buffer = RecvBuffer::default();
        for _ in 0..sent {
            let (received, _): (ToWorker, _) = b.recv(&mut buffer).await.unwrap();
            assert_eq!(received, message);
        }
        let (received, _): (ToWorker, _) =
            tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buffer))
                .await
                .expect("the waiting send never went")
                .unwrap();
        assert_eq!(received, ToWorker::Ping { seq: 2 });
        pending.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_send_waiting_for_room_fails_when_the_peer_goes() {
        use std::time::Duration;
        let (a, b) = Channel::pair().unwrap();
        let message = ToWorker::Ping { seq: 1 };
        fill_queue(&a, &message).await;
        let pending = tokio::spawn(async move { a.send(&message, &[]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(b);
        let sent = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("the waiting send never ended")
            .unwrap();
        assert!(matches!(sent, Err(ChannelError::Io(_))), "{sent:?}");
    }

    #[tokio::test]
    async fn closed_peer_is_reported() {
        let (gateway, worker) = Channel::pair().unwrap();
        drop(gateway);
        let mut buffer = RecvBuffer::default();
        assert!(matches!(
            worker.recv::<ToWorker>(&mut buffer).await,
            Err(ChannelError::Closed)
        ));
    }

    /// A plain socket to forge packets on, and a channel reading them.
    fn raw_pair() -> (OwnedFd, Channel) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (a, Channel::from_owned_fd(b).unwrap())
    }

    #[tokio::test]
    async fn garbage_packet_is_an_error_and_the_channel_goes_on() {
        let (a, b) = raw_pair();
        nix::sys::socket::send(a.as_raw_fd(), &[0xff, 0xff, 0xff], MsgFlags::empty()).unwrap();
        let a = Channel::from_owned_fd(a).unwrap();
        a.send(
            &FromWorker::Spawned {
                id: 1,
                pid: 2,
                script_segments: 1,
            },
            &[],
        )
        .await
        .unwrap();
        let mut buffer = RecvBuffer::default();
        assert!(matches!(
            b.recv::<FromWorker>(&mut buffer).await,
            Err(ChannelError::Codec(_))
        ));
        let (message, _): (FromWorker, _) = b.recv(&mut buffer).await.unwrap();
        assert_eq!(
            message,
            FromWorker::Spawned {
                id: 1,
                pid: 2,
                script_segments: 1
            }
        );
    }

    #[tokio::test]
    async fn oversize_packet_is_refused() {
        let (a, b) = raw_pair();
        // Raise the send buffer so the kernel accepts one packet larger than our limit.
        let big = vec![0u8; MAX_MESSAGE_BYTES + 100];
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &(4 << 20)).unwrap();
        nix::sys::socket::send(a.as_raw_fd(), &big, MsgFlags::empty()).unwrap();
        let mut buffer = RecvBuffer::default();
        assert!(matches!(
            b.recv::<FromWorker>(&mut buffer).await,
            Err(ChannelError::Truncated)
        ));
    }

    #[tokio::test]
    async fn too_many_descriptors_are_closed_and_refused() {
        // One more than we take, one more than the old control buffer held, and the most the
        // kernel passes in one message (SCM_MAX_FD).
        for count in [MAX_FDS + 1, 5, 64, 253] {
            let (a, b) = raw_pair();
            let (reader, writer) = std::io::pipe().unwrap();
            let fds = vec![writer.as_raw_fd(); count];
            let bytes = codec::encode(&FromWorker::Spawned {
                id: 1,
                pid: 1,
                script_segments: 1,
            })
            .unwrap();
            sendmsg::<()>(
                a.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
            drop(writer);
            let mut buffer = RecvBuffer::default();
            let received = b.recv::<FromWorker>(&mut buffer).await;
            assert!(
                matches!(received, Err(ChannelError::TooManyFds)),
                "{count} descriptors: {received:?}"
            );
            // Every received copy of the write end was closed: the reader sees end of file.
            let mut rest = Vec::new();
            let mut reader = reader;
            reader.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        }
    }
}
