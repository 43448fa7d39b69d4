//! FastCGI name-value pairs (FastCGI Specification 1.0, section 3.4), the content of the
//! PARAMS stream and of GET_VALUES / GET_VALUES_RESULT: each length is one byte (0–127), or
//! four bytes big-endian with the high bit set (a 31-bit length); then the name, then the value.

use super::error::FcgiError;
use super::limits::MAX_PARAMS_BYTES;

/// Name-value pairs in the order sent, as raw bytes (CGI variables need not be UTF-8).
pub type NameValuePairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The largest length a four-byte length field can carry.
const MAX_ENCODABLE_LEN: usize = 0x7FFF_FFFF;

/// Parses a whole name-value stream (all PARAMS records up to the empty one, joined).
/// A truncated length, name or value, or a length beyond [`MAX_PARAMS_BYTES`], is an error.
pub fn decode_params(bytes: &[u8]) -> Result<NameValuePairs, FcgiError> {
    let mut pairs = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let name_len = take_len(&mut rest)?;
        let value_len = take_len(&mut rest)?;
        let name = take_bytes(&mut rest, name_len)?;
        let value = take_bytes(&mut rest, value_len)?;
        pairs.push((name.to_vec(), value.to_vec()));
    }
    Ok(pairs)
}

/// Encodes name-value pairs (for GET_VALUES_RESULT, tests and test clients).
/// A name or value longer than 2^31 - 1 bytes cannot be encoded.
pub fn encode_params<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Vec<u8>, FcgiError>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for (name, value) in pairs {
        let (name, value) = (name.as_ref(), value.as_ref());
        put_len(&mut out, name.len())?;
        put_len(&mut out, value.len())?;
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    Ok(out)
}

fn take_len(rest: &mut &[u8]) -> Result<usize, FcgiError> {
    match *rest {
        [] => Err(FcgiError::MalformedParams("truncated length")),
        [first, ..] if first & 0x80 == 0 => {
            *rest = &rest[1..];
            Ok(usize::from(*first))
        }
        [b0, b1, b2, b3, ..] => {
            let len = u32::from_be_bytes([b0 & 0x7F, *b1, *b2, *b3]);
            *rest = &rest[4..];
            // u32 → usize cannot fail on the 32/64-bit targets this runs on; refuse otherwise.
            let len = usize::try_from(len).map_err(|_| FcgiError::ParamTooLong(usize::MAX))?;
            if len > MAX_PARAMS_BYTES {
                return Err(FcgiError::ParamTooLong(len));
            }
            Ok(len)
        }
        _ => Err(FcgiError::MalformedParams("truncated four-byte length")),
    }
}

fn take_bytes<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], FcgiError> {
    if rest.len() < len {
        return Err(FcgiError::MalformedParams("truncated name or value"));
    }
    let (taken, remaining) = rest.split_at(len);
    *rest = remaining;
    Ok(taken)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), FcgiError> {
    if len < 0x80 {
        // < 0x80 fits in one byte.
        out.push(len as u8);
        return Ok(());
    }
    if len > MAX_ENCODABLE_LEN {
        return Err(FcgiError::ParamTooLong(len));
    }
    // ≤ 0x7FFF_FFFF fits in 31 bits.
    out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&[u8], &[u8])]) -> NameValuePairs {
        list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn round_trips_one_and_four_byte_lengths() {
        let long_name = vec![b'N'; 128];
        let long_value = vec![b'v'; 70_000 - 200];
        let original = pairs(&[
            (b"SCRIPT_NAME", b"/cgi-bin/env.sh"),
            (b"EMPTY", b""),
            (b"", b"empty name"),
            (&long_name, b"short"),
            (b"HTTP_X_LONG", &long_value[..127]),
            (b"HTTP_X_LONGER", &long_value[..128]),
            (b"QUERY_STRING", &long_value[..60_000]),
        ]);
        let encoded = encode_params(original.iter().map(|(n, v)| (n, v))).expect("encodable");
        // 1-byte lengths below 128, 4-byte lengths with the high bit from 128 on.
        assert_eq!(&encoded[..2], &[11, 15]);
        assert_eq!(decode_params(&encoded).expect("valid"), original);
        assert!(decode_params(&[]).expect("valid").is_empty());
    }

    #[test]
    fn four_byte_length_encoding_is_exact() {
        let encoded = encode_params([(vec![b'a'; 200], b"")]).expect("encodable");
        assert_eq!(&encoded[..5], &[0x80, 0, 0, 200, 0]);
        // A short length may also be sent in the long form.
        let mut long_form = vec![0x80, 0, 0, 1, 0x80, 0, 0, 2];
        long_form.extend_from_slice(b"abc");
        assert_eq!(
            decode_params(&long_form).expect("valid"),
            pairs(&[(b"a", b"bc")])
        );
    }

    #[test]
    fn truncated_pairs_are_errors() {
        let encoded =
            encode_params([(b"NAME".as_slice(), vec![b'v'; 300].as_slice())]).expect("encodable");
        for cut in 1..encoded.len() {
            let err = decode_params(&encoded[..cut]).expect_err("truncated");
            assert!(
                matches!(err, FcgiError::MalformedParams(_)),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn oversize_lengths_are_errors() {
        // 2^31 - 1: far beyond the cap, refused before looking for the bytes.
        let huge = [0xFF, 0xFF, 0xFF, 0xFF, 0x00];
        assert!(matches!(
            decode_params(&huge),
            Err(FcgiError::ParamTooLong(0x7FFF_FFFF))
        ));
        let over_cap = (MAX_PARAMS_BYTES as u32 + 1) | 0x8000_0000;
        let mut bytes = vec![0];
        bytes.extend_from_slice(&over_cap.to_be_bytes());
        assert!(matches!(
            decode_params(&bytes),
            Err(FcgiError::ParamTooLong(_))
        ));
    }
}
