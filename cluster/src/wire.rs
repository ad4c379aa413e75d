//! The wire form of actor messages that cross nodes: bincode 2 over serde,
//! carried in ractor's [`SerializedMessage::Cast`].
//!
//! An actor whose messages may come from another node implements
//! [`ractor::Message`] by hand (the workspace enables ractor's `cluster`
//! feature, so every message type needs an explicit impl): `serializable()`
//! is `true`, `serialize` maps the remote-capable variants to a private wire
//! enum and calls [`encode_cast`], `deserialize` calls [`decode`] and maps
//! back. Local-only variants (reply ports, handles, timers) have no wire form
//! and `serialize` refuses them.
//!
//! ```
//! use ractor::message::{BoxedDowncastErr, SerializedMessage};
//! use serde::{Deserialize, Serialize};
//! use vidpress_cluster::wire;
//!
//! /// Messages of a (hypothetical) counter actor.
//! pub enum CounterMsg {
//!     /// Adds to the count; other nodes may send it.
//!     Add(u64),
//!     /// Replies with the count; local only.
//!     Get(ractor::RpcReplyPort<u64>),
//! }
//!
//! /// The variants other nodes may send. Append only: never reorder, remove
//! /// or change a variant once released; add a new one instead.
//! #[derive(Serialize, Deserialize)]
//! enum CounterWire {
//!     Add(u64),
//! }
//!
//! impl ractor::Message for CounterMsg {
//!     fn serializable() -> bool {
//!         true
//!     }
//!
//!     fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
//!         match self {
//!             Self::Add(n) => wire::encode_cast("counter.v1", &CounterWire::Add(n)),
//!             Self::Get(_) => Err(BoxedDowncastErr),
//!         }
//!     }
//!
//!     fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
//!         Ok(match wire::decode::<CounterWire>(message)? {
//!             CounterWire::Add(n) => Self::Add(n),
//!         })
//!     }
//! }
//!
//! use ractor::Message;
//! let bytes = CounterMsg::Add(7).serialize().unwrap();
//! assert!(matches!(CounterMsg::deserialize(bytes), Ok(CounterMsg::Add(7))));
//! ```
//!
//! # Rolling upgrades
//!
//! bincode is not self-describing: an enum travels as its variant index
//! followed by the fields in order. Wire enums are therefore **append-only**.
//! A node running older code that receives a variant it does not know fails
//! to decode that one message; ractor drops it (logged at debug level) and
//! the session, the actor and every other message carry on. Changing the
//! fields of a released variant is a breaking change: add a variant instead.
//!
//! Two more rules follow from ractor's message path:
//! - `deserialize(serialize(m))` must succeed for every variant `serialize`
//!   accepts. ractor decodes a message back when its send fails after
//!   serialization and unwraps the result (ractor 0.16.5,
//!   `actor/actor_properties.rs:213`).
//! - bincode cannot decode serde's self-describing forms
//!   (`#[serde(untagged)]`, `#[serde(flatten)]`, `deserialize_any`); keep
//!   them out of wire types.

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The most bytes [`decode`] lets a message claim (lengths of strings and
/// vectors included), so that a hostile or corrupt length prefix cannot
/// make a node allocate gigabytes. ractor_cluster's own frame limit is
/// 16 MiB; video bytes never travel as one message.
pub const MAX_DECODE_BYTES: usize = 8 * 1024 * 1024;

/// Encodes `value` as a cast (one-way) cluster message.
///
/// `variant` travels beside the payload as a free-form tag (for instance
/// `"worker.v1"`); [`decode`] does not interpret it.
pub fn encode_cast<T: Serialize>(
    variant: &str,
    value: &T,
) -> Result<SerializedMessage, BoxedDowncastErr> {
    let args = bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        tracing::warn!(variant, error = %e, "cannot encode a cluster message");
        BoxedDowncastErr
    })?;
    Ok(SerializedMessage::Cast {
        variant: variant.to_owned(),
        args,
        metadata: None,
    })
}

/// Decodes a cast made by [`encode_cast`].
///
/// Returns an error, never panics, for bytes that are not a whole `T` (a
/// peer controls them): garbage, a truncated or over-long payload, an enum
/// variant this build does not know, a length over [`MAX_DECODE_BYTES`].
/// Only casts are supported; a `Call` or `CallReply` is an error (its reply
/// port is dropped, so a remote caller sees the call fail).
pub fn decode<T: DeserializeOwned>(message: SerializedMessage) -> Result<T, BoxedDowncastErr> {
    let SerializedMessage::Cast { args, .. } = message else {
        return Err(BoxedDowncastErr);
    };
    let config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();
    match bincode::serde::decode_from_slice::<T, _>(&args, config) {
        // Trailing bytes mean the sender's type is not ours: refuse rather
        // than act on a prefix that happened to decode.
        Ok((value, read)) if read == args.len() => Ok(value),
        Ok(_) | Err(_) => Err(BoxedDowncastErr),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::node_name::NodeName;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum OldWire {
        Ping { from: NodeName, n: u64 },
        Text(String),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum NewWire {
        Ping { from: NodeName, n: u64 },
        Text(String),
        Added(Vec<u32>),
    }

    fn cast(args: Vec<u8>) -> SerializedMessage {
        SerializedMessage::Cast {
            variant: "test.v1".into(),
            args,
            metadata: None,
        }
    }

    #[test]
    fn round_trips() {
        let value = OldWire::Ping {
            from: "node-a".parse().unwrap(),
            n: 42,
        };
        let message = encode_cast("test.v1", &value).unwrap();
        let SerializedMessage::Cast { variant, .. } = &message else {
            panic!("encode_cast must make a cast");
        };
        assert_eq!(variant, "test.v1");
        assert_eq!(decode::<OldWire>(message).unwrap(), value);

        let text = OldWire::Text("é".repeat(1000));
        let message = encode_cast("test.v1", &text).unwrap();
        assert_eq!(decode::<OldWire>(message).unwrap(), text);
    }

    #[test]
    fn an_unknown_newer_variant_is_an_error() {
        let message = encode_cast("test.v2", &NewWire::Added(vec![1, 2, 3])).unwrap();
        assert_eq!(decode::<OldWire>(message), Err(BoxedDowncastErr));

        // The variants both builds know still decode across versions.
        let message = encode_cast("test.v2", &NewWire::Text("hi".into())).unwrap();
        assert_eq!(decode::<OldWire>(message), Ok(OldWire::Text("hi".into())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff],
            vec![0xff; 64],
            vec![0, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            // A string whose claimed length is far over the limit.
            vec![1, 0xfc, 0xff, 0xff, 0xff, 0x7f],
            // A node name that breaks NodeName's rules ("a b").
            vec![0, 3, b'a', b' ', b'b', 1],
            b"definitely not bincode".to_vec(),
        ];
        for args in samples {
            assert_eq!(decode::<OldWire>(cast(args.clone())), Err(BoxedDowncastErr));
        }
        // Deterministic pseudo-random bytes of every length up to 256.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..256 {
            let args: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<OldWire>(cast(args));
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let SerializedMessage::Cast { mut args, .. } =
            encode_cast("test.v1", &OldWire::Text("x".into())).unwrap()
        else {
            unreachable!()
        };
        args.push(0);
        assert_eq!(decode::<OldWire>(cast(args)), Err(BoxedDowncastErr));
    }

    #[test]
    fn calls_are_refused() {
        let (tx, _rx) = ractor::concurrency::oneshot();
        let call = SerializedMessage::Call {
            variant: "test.v1".into(),
            args: vec![1, 0],
            reply: tx.into(),
            metadata: None,
        };
        assert_eq!(decode::<OldWire>(call), Err(BoxedDowncastErr));
        let reply = SerializedMessage::CallReply(1, vec![1, 0]);
        assert_eq!(decode::<OldWire>(reply), Err(BoxedDowncastErr));
    }
}
