//! Sending and receiving one message per packet, with descriptors attached as SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{de::DeserializeOwned, Serialize};
use tokio_seqpacket::ancillary::{AncillaryMessageWriter, OwnedAncillaryMessage};
use tokio_seqpacket::UnixSeqpacket;

use crate::codec::{self, CodecError, MAX_MESSAGE_BYTES};

/// The most descriptors one message carries (a spawn request's stdin, stdout and stderr).
pub const MAX_FDS: usize = 3;

/// Room for one SCM_RIGHTS control message with [`MAX_FDS`] descriptors, with slack for
/// alignment. A peer that sends more is cut off by the kernel (`MSG_CTRUNC`), which we refuse.
const ANCILLARY_BYTES: usize = 128;

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
#[derive(Debug)]
pub struct Channel {
    socket: UnixSeqpacket,
}

/// A reusable receive buffer: one per receiving loop, so receiving does not allocate.
pub struct RecvBuffer(Box<[u8]>);

impl Default for RecvBuffer {
    fn default() -> Self {
        // One byte more than the largest message so an oversize packet shows as truncated.
        RecvBuffer(vec![0; MAX_MESSAGE_BYTES + 1].into_boxed_slice())
    }
}

impl Channel {
    /// Creates a connected pair (the gateway keeps one end, the worker inherits the other).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = UnixSeqpacket::pair()?;
        Ok((Channel { socket: a }, Channel { socket: b }))
    }

    /// Wraps an inherited socket descriptor. Must be called inside a tokio runtime.
    pub fn from_owned_fd(fd: OwnedFd) -> std::io::Result<Channel> {
        // An inherited descriptor may be blocking; the runtime needs it non-blocking.
        set_nonblocking(fd.as_fd())?;
        Ok(Channel {
            socket: UnixSeqpacket::try_from(fd)?,
        })
    }

    /// Gives the socket back as a plain descriptor (to hand it to a child process).
    pub fn into_owned_fd(self) -> OwnedFd {
        OwnedFd::from(self.socket)
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
        let mut ancillary_buffer = [0u8; ANCILLARY_BYTES];
        let mut ancillary = AncillaryMessageWriter::new(&mut ancillary_buffer);
        if !fds.is_empty() {
            ancillary
                .add_fds(fds.iter().copied())
                .map_err(|_| ChannelError::TooManyFds)?;
        }
        self.socket
            .send_vectored_with_ancillary(&[IoSlice::new(&bytes)], &mut ancillary)
            .await?;
        Ok(())
    }

    /// Receives one message and the descriptors that came with it (close-on-exec, owned:
    /// dropping them closes them). End of stream is [`ChannelError::Closed`].
    pub async fn recv<T: DeserializeOwned>(
        &self,
        buffer: &mut RecvBuffer,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let mut ancillary_buffer = [0u8; ANCILLARY_BYTES];
        let (info, ancillary) = self
            .socket
            .recv_vectored_with_ancillary(
                &mut [IoSliceMut::new(&mut buffer.0)],
                &mut ancillary_buffer,
            )
            .await?;
        // Take ownership of every descriptor first, so that they are closed on any error below.
        let mut fds = Vec::new();
        let ancillary_truncated = info.ancillary_truncated();
        for control in ancillary.into_messages() {
            if let OwnedAncillaryMessage::FileDescriptors(received) = control {
                fds.extend(received);
            }
        }
        if ancillary_truncated || fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds);
        }
        if info.truncated() || info.bytes_read() > MAX_MESSAGE_BYTES {
            return Err(ChannelError::Truncated);
        }
        if info.bytes_read() == 0 {
            // Every message encodes to at least one byte: an empty read is end of stream.
            return Err(ChannelError::Closed);
        }
        let message = codec::decode(&buffer.0[..info.bytes_read()])?;
        Ok((message, fds))
    }
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

    #[tokio::test]
    async fn garbage_packet_is_an_error_and_the_channel_goes_on() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        let (a, b) = (Channel { socket: a }, Channel { socket: b });
        a.socket.send(&[0xff, 0xff, 0xff]).await.unwrap();
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
        let (a, b) = UnixSeqpacket::pair().unwrap();
        let b = Channel { socket: b };
        // Raise the send buffer so the kernel accepts one packet larger than our limit.
        let big = vec![0u8; MAX_MESSAGE_BYTES + 100];
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &(4 << 20)).unwrap();
        a.send(&big).await.unwrap();
        let mut buffer = RecvBuffer::default();
        assert!(matches!(
            b.recv::<FromWorker>(&mut buffer).await,
            Err(ChannelError::Truncated)
        ));
    }

    #[tokio::test]
    async fn too_many_descriptors_are_closed_and_refused() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        let b = Channel { socket: b };
        let (reader, writer) = std::io::pipe().unwrap();
        let fds = [writer.as_fd(); 4];
        let bytes = codec::encode(&FromWorker::Spawned {
            id: 1,
            pid: 1,
            script_segments: 1,
        })
        .unwrap();
        let mut ancillary_buffer = [0u8; 256];
        let mut ancillary = AncillaryMessageWriter::new(&mut ancillary_buffer);
        ancillary.add_fds(fds).unwrap();
        a.send_vectored_with_ancillary(&[IoSlice::new(&bytes)], &mut ancillary)
            .await
            .unwrap();
        drop(writer);
        let mut buffer = RecvBuffer::default();
        assert!(matches!(
            b.recv::<FromWorker>(&mut buffer).await,
            Err(ChannelError::TooManyFds)
        ));
        // Every received copy of the write end was closed: the reader sees end of file.
        let mut rest = Vec::new();
        let mut reader = reader;
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
