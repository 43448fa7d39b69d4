//! The FastCGI record and name-value parsers, on any byte stream a front server (or whoever
//! reaches the FastCGI port) might send. Checks:
//! - never a panic, and never more than one incomplete record (8 + 65535 + 255 bytes) left;
//! - the records (and the error that ends them) are the same whether the stream arrives in
//!   one piece or in small ones (byte by byte for short streams);
//! - each record encodes and decodes back to itself; BEGIN_REQUEST and END_REQUEST bodies
//!   parse exactly when they are 8 bytes, and write back out the same;
//! - each record's content, as name-value pairs, parses or is an error; pairs that parse
//!   encode and parse back to themselves, never longer than the input.
#![no_main]

use bytes::BytesMut;
use gateway::front::fastcgi::record::{
    BeginRequestBody, EndRequestBody, Record, RecordCodec, HEADER_LEN, MAX_CONTENT_LEN,
};
use gateway::front::fastcgi::{decode_params, encode_params};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// The most a record occupies on the wire: header, content and padding.
const MAX_RECORD_BYTES: usize = HEADER_LEN + MAX_CONTENT_LEN + 255;

fuzz_target!(|stream: &[u8]| {
    let whole = decode_stream(&[stream]);
    assert_eq!(
        decode_stream(&pieces(stream)),
        whole,
        "input in pieces changes the records"
    );
    let (records, _ending) = whole;
    for record in records {
        check_record(record);
    }
    // The whole input as one PARAMS stream, too (several records' contents joined).
    check_params(stream);
});

/// `stream` byte by byte when short (every header split at every place); when long, in
/// pieces of 1 to 13 bytes, since byte by byte would cost more runs than it finds.
fn pieces(stream: &[u8]) -> Vec<&[u8]> {
    if stream.len() <= 512 {
        return stream.chunks(1).collect();
    }
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(rest.len().min(pieces.len() % 13 + 1));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Feeds `pieces` to the codec as a socket would; returns the records, then the error that
/// ended the stream (as text) or how many bytes of an incomplete record were left.
fn decode_stream(pieces: &[&[u8]]) -> (Vec<Record>, Result<usize, String>) {
    let mut buffer = BytesMut::new();
    let mut records = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match RecordCodec.decode(&mut buffer) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(error) => return (records, Err(error.to_string())),
            }
        }
        // What is left is part of one record, never more.
        assert!(buffer.len() < MAX_RECORD_BYTES);
    }
    (records, Ok(buffer.len()))
}

fn check_record(record: Record) {
    assert!(record.content.len() <= MAX_CONTENT_LEN);
    let mut wire = BytesMut::new();
    RecordCodec
        .encode(record.clone(), &mut wire)
        .expect("a decoded record encodes");
    assert_eq!(wire.len() % 8, 0, "padded to 8");
    let again = RecordCodec
        .decode(&mut wire)
        .expect("an encoded record decodes");
    assert_eq!(again.as_ref(), Some(&record));
    assert!(wire.is_empty());

    match BeginRequestBody::parse(&record.content) {
        Ok(body) => {
            assert_eq!(record.content.len(), 8);
            assert_eq!(BeginRequestBody::parse(&body.to_bytes()).ok(), Some(body));
        }
        Err(_) => assert_ne!(record.content.len(), 8),
    }
    match EndRequestBody::parse(&record.content) {
        Ok(body) => {
            assert_eq!(record.content.len(), 8);
            assert_eq!(EndRequestBody::parse(&body.to_bytes()).ok(), Some(body));
        }
        Err(_) => assert_ne!(record.content.len(), 8),
    }
    check_params(&record.content);
}

fn check_params(content: &[u8]) {
    let Ok(pairs) = decode_params(content) else {
        return;
    };
    let encoded = encode_params(pairs.iter().map(|(name, value)| (name, value)))
        .expect("decoded pairs encode");
    // The encoder uses the short length form wherever it can; a peer may not have.
    assert!(encoded.len() <= content.len());
    assert_eq!(
        decode_params(&encoded).expect("encoded pairs decode"),
        pairs
    );
}
