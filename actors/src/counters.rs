//! The numbers that order a job's history, each its own type so that one
//! cannot be passed for another: [`Attempt`] fences a worker's reports,
//! [`Epoch`] fences the copies of a job across takeovers, [`Seq`] orders the
//! events a subscriber is sent.
//!
//! Each is serialized as its bare number (on disk, on the wire, in JSON).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name($int);

        impl $name {
            /// The counter at `n`.
            pub const fn new(n: $int) -> Self {
                Self(n)
            }

            /// The bare number, for logs, metrics and documents.
            pub const fn get(self) -> $int {
                self.0
            }

            /// The one after this (saturating: a counter never wraps to an
            /// earlier one).
            #[must_use]
            pub const fn next(self) -> Self {
                Self(self.0.saturating_add(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

counter!(
    /// The number of an attempt at a job, from 1: a report, an output or a
    /// cancel of an older attempt than the current one is stale.
    Attempt(u32)
);

counter!(
    /// How many times a job was taken over by its standby: of two copies of
    /// a job, the later epoch is the owner's.
    Epoch(u32)
);

counter!(
    /// The number of an event of a job, from 1 and never going backwards: a
    /// subscriber resumes after the last one it saw.
    Seq(u64)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_order_count_on_and_serialize_as_bare_numbers() {
        assert!(Attempt::new(2) > Attempt::new(1));
        assert_eq!(Attempt::new(1).next(), Attempt::new(2));
        assert_eq!(Epoch::new(u32::MAX).next(), Epoch::new(u32::MAX));
        assert_eq!(serde_json::to_string(&Seq::new(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Epoch>("3").unwrap(), Epoch::new(3));
        assert_eq!(Attempt::new(4).to_string(), "4");
    }
}
