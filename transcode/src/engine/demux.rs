//! Reading an input packet by packet as the ffmpeg CLI reads it: an
//! unreadable packet is skipped (up to [`MAX_CONSECUTIVE_DEMUX_ERRORS`] in
//! a row), and a read error is the end of the input, not a failure, so a
//! truncated upload still yields what it holds.

use ffmpeg_next::{format, Error, Packet};

/// How many unreadable packets in a row may be skipped before the rest of
/// the input is given up on.
const MAX_CONSECUTIVE_DEMUX_ERRORS: u32 = 1000;

/// The packets of an input, and how many could not be read.
#[derive(Default)]
pub(super) struct Packets {
    /// Packets skipped, and a read error that ended the input.
    pub errors: u64,
    consecutive: u32,
}

impl Packets {
    /// Returns the next packet of `ctx`, or `None` at its end.
    pub fn next(&mut self, ctx: &mut format::context::Input) -> Option<Packet> {
        loop {
            let mut packet = Packet::empty();
            match packet.read(ctx) {
                Ok(()) => {
                    self.consecutive = 0;
                    return Some(packet);
                }
                Err(Error::Eof) => return None,
                Err(Error::InvalidData) if self.consecutive < MAX_CONSECUTIVE_DEMUX_ERRORS => {
                    self.errors += 1;
                    self.consecutive += 1;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the input stopped early");
                    self.errors += 1;
                    return None;
                }
            }
        }
    }
}
