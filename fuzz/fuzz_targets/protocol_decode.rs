//! The gateway's decoder of worker messages. A worker shares its jail with the CGIs it starts,
//! so every packet it sends is hostile input: any packet must give a message or an error, never
//! a panic or a huge allocation, and a message that decodes must encode back to one that
//! decodes to itself. The worker's decoder of gateway messages is checked the same way, and so
//! is the root supervisor's decoder of the front's requests (a front taken over by an attacker
//! sends anything).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{
    decode, encode, CodecError, FromWorker, ToSupervisor, ToWorker, MAX_MESSAGE_BYTES,
};
use serde::{de::DeserializeOwned, Serialize};

fuzz_target!(|packet: &[u8]| {
    check::<FromWorker>(packet);
    check::<ToWorker>(packet);
    check::<ToSupervisor>(packet);
});

fn check<T>(packet: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    match decode::<T>(packet) {
        Ok(message) => {
            let encoded = encode(&message).expect("a decoded message encodes");
            // Varints have one shortest form, which is what encode writes.
            assert!(encoded.len() <= packet.len(), "{message:?}");
            let again = decode::<T>(&encoded).expect("an encoded message decodes");
            assert_eq!(again, message);
        }
        Err(CodecError::TooLarge(len)) => assert!(len > MAX_MESSAGE_BYTES),
        Err(CodecError::TrailingBytes(extra)) => assert!(extra > 0 && extra < packet.len()),
        Err(CodecError::Decode(_)) => {}
        Err(CodecError::Encode(error)) => panic!("decode reported an encode error: {error}"),
    }
}
