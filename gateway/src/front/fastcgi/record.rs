//! FastCGI records on the wire (FastCGI Specification 1.0, section 3.3): an 8-byte header
//! `{version, type, requestId (u16 be), contentLength (u16 be), paddingLength, reserved}`,
//! the content, then the padding. [`RecordCodec`] decodes and encodes them for
//! `tokio_util::codec` and holds at most one record in memory at a time.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::FcgiError;

/// `FCGI_VERSION_1`, the only version there is (section 8).
pub const FCGI_VERSION_1: u8 = 1;
/// `FCGI_HEADER_LEN`: every record starts with this many bytes.
pub const HEADER_LEN: usize = 8;
/// The content of one record is at most this long: `contentLength` is a 16-bit field.
pub const MAX_CONTENT_LEN: usize = u16::MAX as usize;
/// `FCGI_NULL_REQUEST_ID`: management records (GET_VALUES, UNKNOWN_TYPE) carry this id.
pub const NULL_REQUEST_ID: u16 = 0;

/// `FCGI_KEEP_CONN` in the flags of BEGIN_REQUEST: keep the connection open after the request.
pub const FCGI_KEEP_CONN: u8 = 1;
/// `FCGI_RESPONDER`, the one role served here (section 6.2).
pub const FCGI_RESPONDER: u16 = 1;
/// `FCGI_AUTHORIZER` (section 6.3), refused with [`FCGI_UNKNOWN_ROLE`].
pub const FCGI_AUTHORIZER: u16 = 2;
/// `FCGI_FILTER` (section 6.4), refused with [`FCGI_UNKNOWN_ROLE`].
pub const FCGI_FILTER: u16 = 3;

/// END_REQUEST `protocolStatus`: the request ended normally (or was aborted).
pub const FCGI_REQUEST_COMPLETE: u8 = 0;
/// END_REQUEST `protocolStatus`: a second request on a connection that serves one at a time.
pub const FCGI_CANT_MPX_CONN: u8 = 1;
/// END_REQUEST `protocolStatus`: out of a resource (not sent by this layer).
pub const FCGI_OVERLOADED: u8 = 2;
/// END_REQUEST `protocolStatus`: a role other than RESPONDER.
pub const FCGI_UNKNOWN_ROLE: u8 = 3;

/// The record types of section 8; `Other` keeps any other value so that it can be answered
/// with UNKNOWN_TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    Other(u8),
}

impl RecordType {
    /// The wire value of this type.
    pub fn to_u8(self) -> u8 {
        match self {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Other(value) => value,
        }
    }
}

impl From<u8> for RecordType {
    fn from(value: u8) -> Self {
        match value {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Other(other),
        }
    }
}

/// One record without its padding. `content` is at most [`MAX_CONTENT_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_type: RecordType,
    pub request_id: u16,
    pub content: Bytes,
}

impl Record {
    pub fn new(record_type: RecordType, request_id: u16, content: impl Into<Bytes>) -> Self {
        Record {
            record_type,
            request_id,
            content: content.into(),
        }
    }
}

/// Decodes and encodes [`Record`]s. Decoding refuses any version but 1; encoding pads the
/// content to a multiple of 8 bytes, as the specification recommends (section 3.3).
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordCodec;

impl Decoder for RecordCodec {
    type Item = Record;
    type Error = FcgiError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Record>, FcgiError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        if header[0] != FCGI_VERSION_1 {
            return Err(FcgiError::UnsupportedVersion(header[0]));
        }
        let record_type = RecordType::from(header[1]);
        let request_id = u16::from_be_bytes([header[2], header[3]]);
        let content_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let padding_len = usize::from(header[6]);
        let record_len = HEADER_LEN + content_len + padding_len;
        if src.len() < record_len {
            // At most one record (≤ 8 + 65535 + 255 bytes) is ever reserved for.
            src.reserve(record_len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let content = src.split_to(content_len).freeze();
        src.advance(padding_len);
        Ok(Some(Record {
            record_type,
            request_id,
            content,
        }))
    }
}

impl Encoder<Record> for RecordCodec {
    type Error = FcgiError;

    fn encode(&mut self, record: Record, dst: &mut BytesMut) -> Result<(), FcgiError> {
        let content_len = u16::try_from(record.content.len())
            .map_err(|_| FcgiError::ContentTooLong(record.content.len()))?;
        let padding_len = padding_for(record.content.len());
        dst.reserve(HEADER_LEN + record.content.len() + usize::from(padding_len));
        dst.put_u8(FCGI_VERSION_1);
        dst.put_u8(record.record_type.to_u8());
        dst.put_u16(record.request_id);
        dst.put_u16(content_len);
        dst.put_u8(padding_len);
        dst.put_u8(0);
        dst.put_slice(&record.content);
        dst.put_bytes(0, usize::from(padding_len));
        Ok(())
    }
}

/// The padding that brings `content_len` to a multiple of 8.
fn padding_for(content_len: usize) -> u8 {
    // (8 - n % 8) % 8 is always in 0..8.
    ((8 - content_len % 8) % 8) as u8
}

/// The body of BEGIN_REQUEST (section 5.1): `{role (u16 be), flags, reserved[5]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequestBody {
    pub role: u16,
    pub flags: u8,
}

impl BeginRequestBody {
    /// The body is exactly 8 bytes; anything else is a malformed record.
    pub fn parse(content: &[u8]) -> Result<Self, FcgiError> {
        match content {
            [role_hi, role_lo, flags, _, _, _, _, _] => Ok(BeginRequestBody {
                role: u16::from_be_bytes([*role_hi, *role_lo]),
                flags: *flags,
            }),
            _ => Err(FcgiError::MalformedBeginRequest(content.len())),
        }
    }

    pub fn keep_conn(self) -> bool {
        self.flags & FCGI_KEEP_CONN != 0
    }

    pub fn to_bytes(self) -> [u8; 8] {
        let [role_hi, role_lo] = self.role.to_be_bytes();
        [role_hi, role_lo, self.flags, 0, 0, 0, 0, 0]
    }
}

/// The body of END_REQUEST (section 5.5): `{appStatus (u32 be), protocolStatus, reserved[3]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequestBody {
    pub app_status: u32,
    pub protocol_status: u8,
}

impl EndRequestBody {
    /// The body is exactly 8 bytes; anything else is a malformed record.
    pub fn parse(content: &[u8]) -> Result<Self, FcgiError> {
        match content {
            [a, b, c, d, status, _, _, _] => Ok(EndRequestBody {
                app_status: u32::from_be_bytes([*a, *b, *c, *d]),
                protocol_status: *status,
            }),
            _ => Err(FcgiError::MalformedEndRequest(content.len())),
        }
    }

    pub fn to_bytes(self) -> [u8; 8] {
        let [a, b, c, d] = self.app_status.to_be_bytes();
        [a, b, c, d, self.protocol_status, 0, 0, 0]
    }
}

/// The body of UNKNOWN_TYPE (section 4.2): `{type, reserved[7]}`.
pub fn unknown_type_body(record_type: RecordType) -> [u8; 8] {
    [record_type.to_u8(), 0, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(record: Record) -> BytesMut {
        let mut buf = BytesMut::new();
        RecordCodec
            .encode(record, &mut buf)
            .expect("content fits in a record");
        buf
    }

    #[test]
    fn round_trips_every_size_class_with_padding_to_8() {
        for len in [
            0usize,
            1,
            7,
            8,
            9,
            255,
            4096,
            65_528,
            65_529,
            MAX_CONTENT_LEN,
        ] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let record = Record::new(RecordType::Stdout, 0xBEEF, content);
            let mut buf = encode(record.clone());
            assert_eq!(buf.len() % 8, 0, "len {len}: padded to 8");
            assert!(
                buf.len() - HEADER_LEN - len < 8,
                "len {len}: minimal padding"
            );
            let decoded = RecordCodec.decode(&mut buf).expect("valid record");
            assert_eq!(decoded, Some(record), "len {len}");
            assert!(buf.is_empty(), "len {len}: padding consumed");
        }
    }

    #[test]
    fn decodes_byte_by_byte_and_several_records_in_a_row() {
        let mut wire = BytesMut::new();
        let records = [
            Record::new(
                RecordType::BeginRequest,
                1,
                b"\0\x01\x01\0\0\0\0\0".to_vec(),
            ),
            Record::new(RecordType::Params, 1, b"hello".to_vec()),
            Record::new(RecordType::Other(200), 7, Bytes::new()),
        ];
        for record in &records {
            RecordCodec.encode(record.clone(), &mut wire).expect("fits");
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(record) = RecordCodec.decode(&mut buf).expect("valid") {
                out.push(record);
            }
        }
        assert_eq!(out, records);
        assert!(buf.is_empty());
    }

    #[test]
    fn honours_padding_chosen_by_the_peer() {
        // contentLength 3, paddingLength 200: padding other than the minimum is legal.
        let mut buf = BytesMut::from(&[1u8, 5, 0, 1, 0, 3, 200, 0][..]);
        buf.put_slice(b"abc");
        buf.put_bytes(0xAA, 200);
        buf.put_slice(&[1, 5, 0, 1, 0, 0, 0, 0]);
        let first = RecordCodec.decode(&mut buf).expect("valid");
        assert_eq!(first, Some(Record::new(RecordType::Stdin, 1, &b"abc"[..])));
        let second = RecordCodec.decode(&mut buf).expect("valid");
        assert_eq!(
            second,
            Some(Record::new(RecordType::Stdin, 1, Bytes::new()))
        );
    }

    #[test]
    fn refuses_any_version_but_1() {
        for version in [0u8, 2, 0x47, 255] {
            let mut buf = BytesMut::from(&[version, 1, 0, 1, 0, 8, 0, 0][..]);
            let err = RecordCodec.decode(&mut buf).expect_err("bad version");
            assert!(
                matches!(err, FcgiError::UnsupportedVersion(v) if v == version),
                "{err:?}"
            );
        }
    }

    #[test]
    fn refuses_to_encode_more_than_65535_bytes() {
        let record = Record::new(RecordType::Stdout, 1, vec![0u8; MAX_CONTENT_LEN + 1]);
        let err = RecordCodec
            .encode(record, &mut BytesMut::new())
            .expect_err("too long");
        assert!(matches!(err, FcgiError::ContentTooLong(65_536)), "{err:?}");
    }

    #[test]
    fn record_type_values_round_trip() {
        for value in 0..=u8::MAX {
            assert_eq!(RecordType::from(value).to_u8(), value);
        }
    }

    #[test]
    fn begin_and_end_request_bodies() {
        let begin = BeginRequestBody {
            role: FCGI_RESPONDER,
            flags: FCGI_KEEP_CONN,
        };
        assert_eq!(BeginRequestBody::parse(&begin.to_bytes()).ok(), Some(begin));
        assert!(begin.keep_conn());
        assert!(BeginRequestBody::parse(&[0, 1, 1]).is_err());
        let end = EndRequestBody {
            app_status: 0xDEAD_BEEF,
            protocol_status: FCGI_UNKNOWN_ROLE,
        };
        assert_eq!(EndRequestBody::parse(&end.to_bytes()).ok(), Some(end));
        assert!(EndRequestBody::parse(&[0; 9]).is_err());
    }
}
