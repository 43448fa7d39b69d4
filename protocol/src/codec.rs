//! The only file that knows the serializer. Swapping bincode out means changing this file.
//!
//! bincode is pinned to 2.0.1: 3.0.0 is an empty tombstone release, and 1.x without a limit
//! allocates whatever length a forged packet claims (RUSTSEC-2025-0141 marks the crate
//! unmaintained). Every decode here is of one whole packet with a hard byte limit.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::{de::DeserializeOwned, Serialize};

/// The largest encoded message. A spawn request carries the whole CGI environment, and HTTP
/// headers are capped well below this by the gateway; anything larger is a protocol violation.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_MESSAGE_BYTES>>;

fn config() -> Config {
    config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes one message into one packet's bytes.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(message, config())?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes one packet. The packet must hold exactly one message and nothing else.
pub fn decode<T: DeserializeOwned>(packet: &[u8]) -> Result<T, CodecError> {
    if packet.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(packet.len()));
    }
    let (message, used) = bincode::serde::decode_from_slice(packet, config())?;
    if used != packet.len() {
        return Err(CodecError::TrailingBytes(packet.len() - used));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::worker::*;

    fn spawn_request() -> ToWorker {
        ToWorker::Spawn(SpawnRequest {
            id: 7,
            path: vec![b"hello.sh".to_vec(), b"extra".to_vec()],
            env: vec![b"QUERY_STRING=a=1".to_vec(), b"HTTP_X=\xff\x00".to_vec()],
            limits: Limits {
                cpu_seconds: Some(30),
                address_space_bytes: None,
                file_size_bytes: Some(1 << 20),
                open_files: Some(64),
                processes: None,
            },
            stdin: Stdin::Null,
        })
    }

    #[test]
    fn every_message_round_trips() {
        let to_worker = [
            spawn_request(),
            ToWorker::Kill { id: u64::MAX },
            ToWorker::Shutdown,
            ToWorker::Ping { seq: 7 },
        ];
        for message in to_worker {
            assert_eq!(
                decode::<ToWorker>(&encode(&message).unwrap()).unwrap(),
                message
            );
        }
        let from_worker = [
            FromWorker::Ready {
                version: PROTOCOL_VERSION,
                pid: 1,
            },
            FromWorker::Spawned {
                id: 1,
                pid: 42,
                script_segments: 1,
            },
            FromWorker::SpawnFailed {
                id: 2,
                error: SpawnError::NoResources { errno: 11 },
            },
            FromWorker::SpawnFailed {
                id: 3,
                error: SpawnError::BadRequest("x".into()),
            },
            FromWorker::Exited {
                id: 4,
                status: ExitStatus::Signal(9),
            },
            FromWorker::Exited {
                id: 5,
                status: ExitStatus::Code(-1),
            },
            FromWorker::Pong { seq: u64::MAX },
            FromWorker::SpawnedAndExited {
                id: 6,
                pid: 43,
                script_segments: 2,
                status: ExitStatus::Code(0),
            },
        ];
        for message in from_worker {
            assert_eq!(
                decode::<FromWorker>(&encode(&message).unwrap()).unwrap(),
                message
            );
        }
    }

    #[test]
    fn oversize_message_is_not_encoded() {
        let huge = ToWorker::Spawn(SpawnRequest {
            id: 1,
            path: vec![b"x".to_vec()],
            env: vec![vec![b'a'; MAX_MESSAGE_BYTES]],
            limits: Limits {
                cpu_seconds: None,
                address_space_bytes: None,
                file_size_bytes: None,
                open_files: None,
                processes: None,
            },
            stdin: Stdin::Given,
        });
        assert!(encode(&huge).is_err());
    }

    #[test]
    fn oversize_packet_is_rejected_before_decoding() {
        let packet = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<FromWorker>(&packet),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn forged_length_does_not_allocate() {
        // Variant 0 of ToWorker (Spawn), id 1, then a path of u64::MAX segments (varint 253 + 8 bytes).
        let mut packet = vec![0u8, 1, 253];
        packet.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<ToWorker>(&packet).is_err());
        // A path of one 1-byte segment, then an env vector that claims 2^32 entries.
        let mut packet = vec![0u8, 1, 1, b'/', 252];
        packet.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<ToWorker>(&packet).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2000 {
            let packet: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<FromWorker>(&packet);
            let _ = decode::<ToWorker>(&packet);
        }
        assert!(decode::<FromWorker>(&[]).is_err());
        assert!(decode::<FromWorker>(&[200]).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut packet = encode(&ToWorker::Shutdown).unwrap();
        packet.push(0);
        assert!(matches!(
            decode::<ToWorker>(&packet),
            Err(CodecError::TrailingBytes(1))
        ));
    }
}
