//! Structure-aware mutations of media files: what turns a good clip into a
//! malformed one. Shared by the malformed-media corpus (`tests/it/corpus.rs`
//! includes this file) and the probe fuzz target's custom mutator, so both
//! break files the same ways.
//!
//! Byte-level mutations (bit flips, truncations, swapped, duplicated and
//! deleted ranges) work on any file. Container-aware ones parse the file's
//! own structure — MP4/MOV boxes, Matroska/WebM EBML elements, AVI RIFF
//! chunks, MPEG-TS packets — and swap, duplicate or delete whole units,
//! corrupt their size fields, or set header fields (dimensions, time
//! scales, durations, sample counts, codec IDs) to absurd values. Parsing
//! is forgiving: it stops at the first unit that does not fit, so a file
//! mutated once can be mutated again.
//!
//! Everything is drawn from the [`fastrand::Rng`] given, so a seed replays
//! the same mutations on the same input.

use fastrand::Rng;

/// The container family of a file, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Container {
    /// ISO base media (MP4, MOV): boxes of a big-endian size and a type.
    Mp4,
    /// Matroska and WebM: EBML elements.
    Matroska,
    /// AVI: RIFF chunks, little-endian sizes.
    Avi,
    /// MPEG transport stream: 188-byte packets.
    MpegTs,
    /// Anything else: only byte-level mutations apply.
    Other,
}

impl Container {
    /// Detects the container from the file's first bytes.
    pub fn detect(bytes: &[u8]) -> Self {
        let at =
            |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
        if [b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"]
            .iter()
            .any(|m| at(4, *m))
        {
            Self::Mp4
        } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
            Self::Matroska
        } else if at(0, b"RIFF") && at(8, b"AVI ") {
            Self::Avi
        } else if at(0, &[0x47]) && at(188, &[0x47]) {
            Self::MpegTs
        } else {
            Self::Other
        }
    }

    /// Returns a short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Matroska => "matroska",
            Self::Avi => "avi",
            Self::MpegTs => "mpegts",
            Self::Other => "other",
        }
    }
}

/// Applies one to three mutations drawn from `rng` to `bytes`, keeping it at
/// most `max_len` bytes long; returns what was done, for replay messages.
pub fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng, max_len: usize) -> String {
    let rounds = match rng.u8(0..10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    let mut done = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        done.push(mutate_once(bytes, rng, max_len));
    }
    done.join("; ")
}

/// Applies a single mutation: container-aware two times in three when the
/// container is known and parses, byte-level otherwise.
pub fn mutate_once(bytes: &mut Vec<u8>, rng: &mut Rng, max_len: usize) -> String {
    let container = Container::detect(bytes);
    let structural = if container != Container::Other && rng.u8(0..3) > 0 {
        match container {
            Container::Mp4 => mp4::mutate(bytes, rng),
            Container::Matroska => ebml::mutate(bytes, rng),
            Container::Avi => riff::mutate(bytes, rng),
            Container::MpegTs => ts::mutate(bytes, rng),
            Container::Other => None,
        }
    } else {
        None
    };
    let done = match structural {
        Some(done) => format!("{} {done}", container.name()),
        None => bytewise(bytes, rng),
    };
    bytes.truncate(max_len);
    done
}

/// Byte-level mutations: they know nothing of the format.
fn bytewise(bytes: &mut Vec<u8>, rng: &mut Rng) -> String {
    if bytes.len() < 16 {
        let extra = rng.usize(1..64);
        bytes.extend((0..extra).map(|_| rng.u8(..)));
        return format!("append {extra} random bytes");
    }
    let len = bytes.len();
    match rng.u8(0..8) {
        0 | 1 => {
            // Headers sit at the start (or, for MP4 without faststart, the
            // end): most flips land in the first or last 8 KiB.
            let flips = *rng.choice(&[1usize, 1, 2, 4, 8, 32, 128]).unwrap_or(&1);
            for _ in 0..flips {
                let at = biased_offset(rng, len);
                bytes[at] ^= 1 << rng.u8(0..8);
            }
            format!("flip {flips} bits")
        }
        2 => {
            let count = rng.usize(1..=8);
            for _ in 0..count {
                let at = biased_offset(rng, len);
                bytes[at] = *rng.choice(&[0x00, 0x01, 0x7F, 0x80, 0xFF]).unwrap_or(&0);
            }
            format!("set {count} bytes to extremes")
        }
        3 => {
            let keep = match rng.u8(0..3) {
                0 => rng.usize(1..len.min(512)),
                _ => rng.usize(1..len),
            };
            bytes.truncate(keep);
            format!("truncate to {keep} of {len} bytes")
        }
        4 => {
            let span = rng.usize(1..=len / 4);
            let a = rng.usize(0..=len - 2 * span);
            let b = rng.usize(a + span..=len - span);
            let first = bytes[a..a + span].to_vec();
            bytes.copy_within(b..b + span, a);
            bytes[b..b + span].copy_from_slice(&first);
            format!("swap {span} bytes at {a:#x} and {b:#x}")
        }
        5 => {
            let span = rng.usize(1..=(len / 4).max(1));
            let from = rng.usize(0..=len - span);
            let to = rng.usize(0..=len);
            let copy = bytes[from..from + span].to_vec();
            bytes.splice(to..to, copy);
            format!("duplicate {span} bytes from {from:#x} at {to:#x}")
        }
        6 => {
            let span = rng.usize(1..=(len / 4).max(1));
            let from = rng.usize(0..=len - span);
            bytes.drain(from..from + span);
            format!("delete {span} bytes at {from:#x}")
        }
        _ => {
            let span = rng.usize(1..=256);
            let at = rng.usize(0..=len);
            let noise: Vec<u8> = (0..span).map(|_| rng.u8(..)).collect();
            bytes.splice(at..at, noise);
            format!("insert {span} random bytes at {at:#x}")
        }
    }
}

/// Returns an offset in `0..len`, in the first or last 8 KiB three times in four.
fn biased_offset(rng: &mut Rng, len: usize) -> usize {
    let window = len.min(8192);
    match rng.u8(0..4) {
        0 => rng.usize(0..len),
        1 => len - 1 - rng.usize(0..window),
        _ => rng.usize(0..window),
    }
}

/// Returns an absurd value for a field `bytes` wide that now holds `current`.
fn absurd(rng: &mut Rng, bytes: usize, current: u64) -> u64 {
    let max = if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    };
    let value = match rng.u8(0..11) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max - 1,
        4 => max >> 1,
        5 => (max >> 1) + 1,
        6 => current.wrapping_mul(2).wrapping_add(1),
        7 => current.wrapping_sub(1),
        8 => current.wrapping_add(1),
        9 => current.wrapping_mul(1000),
        _ => rng.u64(..),
    };
    let value = value & max;
    // A mutation that changes nothing wastes a file.
    if value == current {
        current ^ max
    } else {
        value
    }
}

/// A unit of a parsed file (a box, an element, a chunk) and where its size is.
#[derive(Clone, Debug)]
struct Node {
    /// The unit's type: a FourCC or an EBML ID.
    kind: u32,
    /// First byte of the unit's header.
    start: usize,
    /// First byte of its payload.
    body: usize,
    /// One past its last byte.
    end: usize,
    /// Index of the enclosing unit in the node list.
    parent: Option<usize>,
    /// Where its size field is and how it is written.
    size: SizeField,
}

/// How a unit's size is written, so that it can be rewritten.
#[derive(Clone, Copy, Debug)]
enum SizeField {
    /// MP4: big-endian, this many bytes at this offset, counting the header.
    Be { at: usize, width: usize },
    /// RIFF: little-endian 32-bit at this offset, payload only.
    Le32 { at: usize },
    /// EBML: a variable-length integer this wide at this offset, payload only.
    Vint { at: usize, width: usize },
}

impl SizeField {
    fn width(self) -> usize {
        match self {
            Self::Be { width, .. } | Self::Vint { width, .. } => width,
            Self::Le32 { .. } => 4,
        }
    }
}

impl Node {
    /// The value its size field should hold for a unit of `len` bytes in all.
    fn size_value(&self, len: usize) -> u64 {
        match self.size {
            SizeField::Be { .. } => len as u64,
            SizeField::Le32 { .. } | SizeField::Vint { .. } => {
                (len - (self.body - self.start)) as u64
            }
        }
    }
}

/// Writes `value` into a size field; returns false if it does not fit.
fn write_size(bytes: &mut [u8], field: SizeField, value: u64) -> bool {
    match field {
        SizeField::Be { at, width } => {
            if width < 8 && value >> (width * 8) != 0 {
                return false;
            }
            put_be(bytes, at, width, value);
        }
        SizeField::Le32 { at } => {
            let Ok(value) = u32::try_from(value) else {
                return false;
            };
            put_le(bytes, at, 4, u64::from(value));
        }
        SizeField::Vint { at, width } => {
            // All value bits set means "unknown size": keep below it.
            if value >= (1u64 << (7 * width)) - 1 {
                return false;
            }
            put_be(bytes, at, width, value | 1u64 << (7 * width));
        }
    }
    true
}

fn get_be(bytes: &[u8], at: usize, width: usize) -> Option<u64> {
    let slice = bytes.get(at..at + width)?;
    Some(slice.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

fn get_le(bytes: &[u8], at: usize, width: usize) -> Option<u64> {
    let slice = bytes.get(at..at + width)?;
    Some(
        slice
            .iter()
            .rev()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
    )
}

fn put_be(bytes: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(slice) = bytes.get_mut(at..at + width) {
        for (i, byte) in slice.iter_mut().enumerate() {
            *byte = (value >> (8 * (width - 1 - i))) as u8;
        }
    }
}

fn put_le(bytes: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(slice) = bytes.get_mut(at..at + width) {
        for (i, byte) in slice.iter_mut().enumerate() {
            *byte = (value >> (8 * i)) as u8;
        }
    }
}

/// Adds `delta` bytes to the sizes of `node`'s ancestors, where they fit.
fn fix_ancestors(bytes: &mut [u8], nodes: &[Node], node: usize, delta: i64) {
    let mut next = nodes[node].parent;
    while let Some(index) = next {
        let parent = &nodes[index];
        let len = (parent.end - parent.start) as i64 + delta;
        if len > 0 {
            write_size(bytes, parent.size, parent.size_value(len as usize));
        }
        next = parent.parent;
    }
}

/// Generic mutations over a parsed tree: swap two siblings, duplicate or
/// delete a unit (with or without mending the enclosing sizes), or give a
/// unit an absurd size.
fn tree_mutation(
    bytes: &mut Vec<u8>,
    nodes: &[Node],
    rng: &mut Rng,
    name: impl Fn(u32) -> String,
) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let pick = rng.usize(0..nodes.len());
    let node = &nodes[pick];
    let label = name(node.kind);
    match rng.u8(0..4) {
        0 => {
            let siblings: Vec<usize> = (0..nodes.len())
                .filter(|&i| i != pick && nodes[i].parent == node.parent)
                .collect();
            let &other = rng.choice(&siblings)?;
            let (a, b) = if nodes[other].start < node.start {
                (&nodes[other], node)
            } else {
                (node, &nodes[other])
            };
            let mut swapped = Vec::with_capacity(bytes.len());
            swapped.extend_from_slice(&bytes[..a.start]);
            swapped.extend_from_slice(&bytes[b.start..b.end]);
            swapped.extend_from_slice(&bytes[a.end..b.start]);
            swapped.extend_from_slice(&bytes[a.start..a.end]);
            swapped.extend_from_slice(&bytes[b.end..]);
            *bytes = swapped;
            Some(format!("swap {} and {}", name(a.kind), name(b.kind)))
        }
        1 => {
            let copy = bytes[node.start..node.end].to_vec();
            let mend = rng.bool();
            if mend {
                fix_ancestors(bytes, nodes, pick, copy.len() as i64);
            }
            bytes.splice(node.end..node.end, copy);
            Some(format!(
                "duplicate {label}{}",
                if mend { " (sizes mended)" } else { "" }
            ))
        }
        2 => {
            let mend = rng.bool();
            if mend {
                fix_ancestors(bytes, nodes, pick, -((node.end - node.start) as i64));
            }
            bytes.drain(node.start..node.end);
            Some(format!(
                "delete {label}{}",
                if mend { " (sizes mended)" } else { "" }
            ))
        }
        _ => {
            let width = node.size.width();
            let current = node.size_value(node.end - node.start);
            let value = match node.size {
                SizeField::Vint { width, .. } => match rng.u8(0..3) {
                    // All ones: the "unknown size" of live streams.
                    0 => (1u64 << (7 * width)) - 1,
                    _ => absurd(rng, width, current).min((1u64 << (7 * width)) - 2),
                },
                _ => absurd(rng, width, current),
            };
            match node.size {
                SizeField::Vint { at, width } => {
                    put_be(bytes, at, width, value | 1u64 << (7 * width))
                }
                SizeField::Be { at, width } => put_be(bytes, at, width, value),
                SizeField::Le32 { at } => put_le(bytes, at, 4, value),
            }
            Some(format!("{label} size {current} -> {value}"))
        }
    }
}

fn fourcc(kind: u32) -> String {
    kind.to_be_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

fn fourcc_le(kind: u32) -> String {
    fourcc(kind.swap_bytes())
}

/// MP4 and MOV: a tree of boxes.
mod mp4 {
    use super::*;

    /// Boxes that hold boxes, with the bytes before their first child.
    fn children_offset(kind: &[u8; 4]) -> Option<usize> {
        Some(match kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"udta"
            | b"mvex" | b"moof" | b"traf" | b"mfra" | b"sinf" | b"schi" => 0,
            b"stsd" | b"dref" => 8,
            b"meta" => 4,
            b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"mp4v" | b"vp08" | b"vp09" | b"av01" => 78,
            b"mp4a" | b"Opus" | b"ac-3" => 28,
            _ => return None,
        })
    }

    pub(super) fn parse(bytes: &[u8]) -> Vec<Node> {
        let mut nodes = Vec::new();
        walk(bytes, 0, bytes.len(), None, 0, &mut nodes);
        nodes
    }

    fn walk(
        bytes: &[u8],
        start: usize,
        end: usize,
        parent: Option<usize>,
        depth: u32,
        nodes: &mut Vec<Node>,
    ) {
        let mut pos = start;
        while pos + 8 <= end && nodes.len() < 4096 {
            let Some(size32) = get_be(bytes, pos, 4) else {
                break;
            };
            let kind: [u8; 4] = bytes[pos + 4..pos + 8].try_into().unwrap_or_default();
            let (header, size, field) = match size32 {
                1 => match get_be(bytes, pos + 8, 8) {
                    Some(size) => (
                        16,
                        size,
                        SizeField::Be {
                            at: pos + 8,
                            width: 8,
                        },
                    ),
                    None => break,
                },
                0 => (8, (end - pos) as u64, SizeField::Be { at: pos, width: 4 }),
                size => (8, size, SizeField::Be { at: pos, width: 4 }),
            };
            let Ok(size) = usize::try_from(size) else {
                break;
            };
            if size < header || size > end - pos {
                break;
            }
            let index = nodes.len();
            nodes.push(Node {
                kind: u32::from_be_bytes(kind),
                start: pos,
                body: pos + header,
                end: pos + size,
                parent,
                size: field,
            });
            if let Some(skip) = children_offset(&kind) {
                if depth < 12 && pos + header + skip <= pos + size {
                    walk(
                        bytes,
                        pos + header + skip,
                        pos + size,
                        Some(index),
                        depth + 1,
                        nodes,
                    );
                }
            }
            pos += size;
        }
    }

    /// A header field: its box, its name, and its offset in the payload
    /// and width in bytes for box versions 0 and 1.
    type Field = (
        &'static [u8; 4],
        &'static str,
        (usize, usize),
        (usize, usize),
    );

    const FIELDS: &[Field] = &[
        (b"mvhd", "timescale", (12, 4), (20, 4)),
        (b"mvhd", "duration", (16, 4), (24, 8)),
        (b"mvhd", "next_track_id", (96, 4), (108, 4)),
        (b"tkhd", "track_id", (12, 4), (20, 4)),
        (b"tkhd", "duration", (20, 4), (28, 8)),
        (b"tkhd", "width", (76, 4), (88, 4)),
        (b"tkhd", "height", (80, 4), (92, 4)),
        (b"tkhd", "matrix", (40, 4), (52, 4)),
        (b"mdhd", "timescale", (12, 4), (20, 4)),
        (b"mdhd", "duration", (16, 4), (24, 8)),
        (b"hdlr", "handler", (8, 4), (8, 4)),
        (b"stsd", "entry_count", (4, 4), (4, 4)),
        (b"stsd", "entry.size", (8, 4), (8, 4)),
        (b"stsd", "entry.data_ref", (22, 2), (22, 2)),
        (b"stsd", "entry.width", (40, 2), (40, 2)),
        (b"stsd", "entry.height", (42, 2), (42, 2)),
        (b"stsd", "entry.depth", (82, 2), (82, 2)),
        (b"stsd", "entry.channels", (32, 2), (32, 2)),
        (b"stsd", "entry.sample_size", (34, 2), (34, 2)),
        (b"stsd", "entry.sample_rate", (40, 4), (40, 4)),
        (b"avcC", "length_size", (4, 1), (4, 1)),
        (b"avcC", "sps_count", (5, 1), (5, 1)),
        (b"avcC", "sps_length", (6, 2), (6, 2)),
        (b"stsz", "sample_size", (4, 4), (4, 4)),
        (b"stsz", "sample_count", (8, 4), (8, 4)),
        (b"stsz", "first_size", (12, 4), (12, 4)),
        (b"stts", "entry_count", (4, 4), (4, 4)),
        (b"stts", "sample_count", (8, 4), (8, 4)),
        (b"stts", "sample_delta", (12, 4), (12, 4)),
        (b"ctts", "entry_count", (4, 4), (4, 4)),
        (b"ctts", "offset", (12, 4), (12, 4)),
        (b"stsc", "entry_count", (4, 4), (4, 4)),
        (b"stsc", "first_chunk", (8, 4), (8, 4)),
        (b"stsc", "samples_per_chunk", (12, 4), (12, 4)),
        (b"stsc", "description_index", (16, 4), (16, 4)),
        (b"stco", "entry_count", (4, 4), (4, 4)),
        (b"stco", "chunk_offset", (8, 4), (8, 4)),
        (b"co64", "entry_count", (4, 4), (4, 4)),
        (b"stss", "entry_count", (4, 4), (4, 4)),
        (b"stss", "sample", (8, 4), (8, 4)),
        (b"elst", "entry_count", (4, 4), (4, 4)),
        (b"elst", "segment_duration", (8, 4), (8, 8)),
        (b"elst", "media_time", (12, 4), (16, 8)),
        (b"elst", "media_rate", (16, 4), (24, 4)),
    ];

    pub(super) fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
        let nodes = parse(bytes);
        if rng.u8(0..5) < 3 {
            if let Some(done) = set_field(bytes, &nodes, rng) {
                return Some(done);
            }
        }
        tree_mutation(bytes, &nodes, rng, fourcc)
    }

    fn set_field(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<(&Node, &Field)> = nodes
            .iter()
            .flat_map(|node| {
                FIELDS
                    .iter()
                    .filter(move |(kind, ..)| u32::from_be_bytes(**kind) == node.kind)
                    .map(move |field| (node, field))
            })
            .collect();
        let &(node, &(_, name, v0, v1)) = rng.choice(&candidates)?;
        let version = bytes.get(node.body).copied().unwrap_or(0);
        let (offset, width) = if version == 1 { v1 } else { v0 };
        let at = node.body + offset;
        if at + width > node.end {
            return None;
        }
        let current = get_be(bytes, at, width)?;
        let value = if name == "handler" {
            let handlers = [b"vide", b"soun", b"hint", b"meta", b"text", b"\0\0\0\0"];
            u64::from(u32::from_be_bytes(**rng.choice(&handlers)?))
        } else {
            absurd(rng, width, current)
        };
        put_be(bytes, at, width, value);
        Some(format!("{}.{name} {current} -> {value}", fourcc(node.kind)))
    }
}

/// Matroska and WebM: EBML elements.
mod ebml {
    use super::*;

    const MASTERS: &[u32] = &[
        0x1A45_DFA3, // EBML
        0x1853_8067, // Segment
        0x114D_9B74, // SeekHead
        0x4DBB,      // Seek
        0x1549_A966, // Info
        0x1654_AE6B, // Tracks
        0xAE,        // TrackEntry
        0xE0,        // Video
        0xE1,        // Audio
        0x6D80,      // ContentEncodings
        0x6240,      // ContentEncoding
        0x1F43_B675, // Cluster
        0xA0,        // BlockGroup
        0x1C53_BB6B, // Cues
        0xBB,        // CuePoint
        0xB7,        // CueTrackPositions
        0x1254_C367, // Tags
        0x7373,      // Tag
        0x63C0,      // Targets
        0x67C8,      // SimpleTag
        0x1043_A770, // Chapters
    ];

    /// Unsigned-integer elements worth an absurd value.
    const UINTS: &[(u32, &str)] = &[
        (0xB0, "PixelWidth"),
        (0xBA, "PixelHeight"),
        (0x54B0, "DisplayWidth"),
        (0x54BA, "DisplayHeight"),
        (0x54AA, "PixelCropBottom"),
        (0x2A_D7B1, "TimestampScale"),
        (0x23_E383, "DefaultDuration"),
        (0xD7, "TrackNumber"),
        (0x83, "TrackType"),
        (0x9F, "Channels"),
        (0x6264, "BitDepth"),
        (0xE7, "Timestamp"),
        (0xB3, "CueTime"),
        (0xF7, "CueTrack"),
        (0xF1, "CueClusterPosition"),
        (0x53AC, "SeekPosition"),
        (0x42F7, "EBMLReadVersion"),
        (0x42F2, "EBMLMaxIDLength"),
        (0x42F3, "EBMLMaxSizeLength"),
        (0x4287, "DocTypeVersion"),
        (0x56AA, "CodecDelay"),
        (0x56BB, "SeekPreRoll"),
        (0x9C, "FlagLacing"),
        (0x5031, "ContentEncodingOrder"),
        (0x4254, "ContentCompAlgo"),
    ];

    /// Float elements.
    const FLOATS: &[(u32, &str)] = &[(0x4489, "Duration"), (0xB5, "SamplingFrequency")];

    const CODECS: &[&str] = &[
        "V_MPEG4/ISO/AVC",
        "V_MPEGH/ISO/HEVC",
        "V_VP8",
        "V_VP9",
        "V_AV1",
        "V_MPEG4/ISO/ASP",
        "V_UNCOMPRESSED",
        "V_MS/VFW/FOURCC",
        "V_REAL/RV40",
        "A_OPUS",
        "A_VORBIS",
        "A_AAC",
        "A_PCM/INT/LIT",
        "S_TEXT/UTF8",
        "",
    ];

    fn name(id: u32) -> String {
        UINTS
            .iter()
            .chain(FLOATS)
            .find(|(known, _)| *known == id)
            .map(|(_, name)| (*name).to_owned())
            .unwrap_or_else(|| match id {
                0x1A45_DFA3 => "EBML".into(),
                0x1853_8067 => "Segment".into(),
                0x1549_A966 => "Info".into(),
                0x1654_AE6B => "Tracks".into(),
                0xAE => "TrackEntry".into(),
                0x1F43_B675 => "Cluster".into(),
                0xA3 => "SimpleBlock".into(),
                0xA1 => "Block".into(),
                0x86 => "CodecID".into(),
                0x63A2 => "CodecPrivate".into(),
                0x1C53_BB6B => "Cues".into(),
                0x114D_9B74 => "SeekHead".into(),
                _ => format!("{id:#x}"),
            })
    }

    /// Reads an EBML variable-length integer at `at`: (width, value without
    /// the marker bit, whether all value bits are set).
    fn vint(bytes: &[u8], at: usize, max_width: usize) -> Option<(usize, u64, bool)> {
        let first = *bytes.get(at)?;
        let width = first.leading_zeros() as usize + 1;
        if width > max_width {
            return None;
        }
        let raw = get_be(bytes, at, width)?;
        let value = raw & ((1u64 << (7 * width)) - 1);
        Some((width, value, value == (1u64 << (7 * width)) - 1))
    }

    pub(super) fn parse(bytes: &[u8]) -> Vec<Node> {
        let mut nodes = Vec::new();
        walk(bytes, 0, bytes.len(), None, 0, &mut nodes);
        nodes
    }

    fn walk(
        bytes: &[u8],
        start: usize,
        end: usize,
        parent: Option<usize>,
        depth: u32,
        nodes: &mut Vec<Node>,
    ) {
        let mut pos = start;
        while pos < end && nodes.len() < 4096 {
            let Some((id_width, _, _)) = vint(bytes, pos, 4) else {
                break;
            };
            let Some(id) = get_be(bytes, pos, id_width) else {
                break;
            };
            let Some((size_width, size, unknown)) = vint(bytes, pos + id_width, 8) else {
                break;
            };
            let body = pos + id_width + size_width;
            if body > end {
                break;
            }
            let stop = if unknown {
                end
            } else {
                match usize::try_from(size).ok().and_then(|s| body.checked_add(s)) {
                    Some(stop) if stop <= end => stop,
                    _ => break,
                }
            };
            let index = nodes.len();
            nodes.push(Node {
                kind: id as u32,
                start: pos,
                body,
                end: stop,
                parent,
                size: SizeField::Vint {
                    at: pos + id_width,
                    width: size_width,
                },
            });
            if depth < 10 && MASTERS.contains(&(id as u32)) {
                walk(bytes, body, stop, Some(index), depth + 1, nodes);
            }
            pos = stop;
        }
    }

    pub(super) fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
        let nodes = parse(bytes);
        let done = match rng.u8(0..8) {
            0..=2 => set_uint(bytes, &nodes, rng),
            3 => set_float(bytes, &nodes, rng),
            4 => replace_codec(bytes, &nodes, rng),
            5 => block_header(bytes, &nodes, rng),
            _ => None,
        };
        done.or_else(|| tree_mutation(bytes, &nodes, rng, name))
    }

    fn set_uint(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                UINTS.iter().any(|(id, _)| *id == n.kind) && (1..=8).contains(&(n.end - n.body))
            })
            .collect();
        let node = *rng.choice(&candidates)?;
        let width = node.end - node.body;
        let current = get_be(bytes, node.body, width)?;
        let value = absurd(rng, width, current);
        put_be(bytes, node.body, width, value);
        Some(format!("{} {current} -> {value}", name(node.kind)))
    }

    fn set_float(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                FLOATS.iter().any(|(id, _)| *id == n.kind) && matches!(n.end - n.body, 4 | 8)
            })
            .collect();
        let node = *rng.choice(&candidates)?;
        let value = *rng.choice(&[
            0.0,
            -1.0,
            f64::INFINITY,
            f64::NAN,
            1e300,
            1e-300,
            -1e18,
            4.0e9,
        ])?;
        if node.end - node.body == 4 {
            put_be(bytes, node.body, 4, u64::from((value as f32).to_bits()));
        } else {
            put_be(bytes, node.body, 8, value.to_bits());
        }
        Some(format!("{} -> {value:e}", name(node.kind)))
    }

    /// Rewrites a CodecID to another codec's, mending the enclosing sizes.
    fn replace_codec(bytes: &mut Vec<u8>, nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].kind == 0x86)
            .collect();
        let &index = rng.choice(&candidates)?;
        let node = &nodes[index];
        let codec = *rng.choice(CODECS)?;
        let old = String::from_utf8_lossy(&bytes[node.body..node.end]).into_owned();
        let delta = codec.len() as i64 - (node.end - node.body) as i64;
        if !write_size(bytes, node.size, codec.len() as u64) {
            return None;
        }
        fix_ancestors(bytes, nodes, index, delta);
        bytes.splice(node.body..node.end, codec.bytes());
        Some(format!("CodecID {old} -> {codec}"))
    }

    /// Corrupts a (Simple)Block's track number, timestamp or lacing flags.
    fn block_header(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<&Node> = nodes
            .iter()
            .filter(|n| matches!(n.kind, 0xA3 | 0xA1) && n.end - n.body >= 4)
            .collect();
        let node = *rng.choice(&candidates)?;
        let (track_width, _, _) = vint(bytes, node.body, 8)?;
        let timestamp = node.body + track_width;
        if timestamp + 3 > node.end {
            return None;
        }
        Some(match rng.u8(0..3) {
            0 => {
                let track = rng.u8(0x81..=0xFF);
                bytes[node.body] = track;
                format!("{} track -> {}", name(node.kind), track & 0x7F)
            }
            1 => {
                let value = *rng.choice(&[0x7FFFu64, 0x8000, 0xFFFF, 0])?;
                put_be(bytes, timestamp, 2, value);
                format!("{} timestamp -> {value:#x}", name(node.kind))
            }
            _ => {
                // Lacing bits 1-2: none, Xiph, fixed-size, EBML.
                let lacing = rng.u8(1..4) << 1;
                bytes[timestamp + 2] = (bytes[timestamp + 2] & !0x06) | lacing;
                format!("{} lacing -> {}", name(node.kind), lacing >> 1)
            }
        })
    }
}

/// AVI: RIFF chunks.
mod riff {
    use super::*;

    const LISTS: &[&[u8; 4]] = &[b"RIFF", b"LIST"];

    pub(super) fn parse(bytes: &[u8]) -> Vec<Node> {
        let mut nodes = Vec::new();
        walk(bytes, 0, bytes.len(), None, 0, &mut nodes);
        nodes
    }

    fn walk(
        bytes: &[u8],
        start: usize,
        end: usize,
        parent: Option<usize>,
        depth: u32,
        nodes: &mut Vec<Node>,
    ) {
        let mut pos = start;
        while pos + 8 <= end && nodes.len() < 8192 {
            let kind: [u8; 4] = bytes[pos..pos + 4].try_into().unwrap_or_default();
            let Some(size) = get_le(bytes, pos + 4, 4) else {
                break;
            };
            let size = size as usize;
            if size > end - pos - 8 {
                break;
            }
            let stop = pos + 8 + size;
            let index = nodes.len();
            nodes.push(Node {
                kind: u32::from_le_bytes(kind),
                start: pos,
                body: pos + 8,
                end: stop,
                parent,
                size: SizeField::Le32 { at: pos + 4 },
            });
            if depth < 6 && LISTS.contains(&&kind) && size >= 4 {
                walk(bytes, pos + 12, stop, Some(index), depth + 1, nodes);
            }
            // Chunks are padded to an even length.
            pos = (stop + (size & 1)).min(end);
        }
    }

    /// (chunk, name, offset in the payload, width).
    type RiffField = (&'static [u8; 4], &'static str, usize, usize);

    const FIELDS: &[RiffField] = &[
        (b"avih", "micro_sec_per_frame", 0, 4),
        (b"avih", "max_bytes_per_sec", 4, 4),
        (b"avih", "flags", 12, 4),
        (b"avih", "total_frames", 16, 4),
        (b"avih", "streams", 24, 4),
        (b"avih", "suggested_buffer", 28, 4),
        (b"avih", "width", 32, 4),
        (b"avih", "height", 36, 4),
        (b"strh", "type", 0, 4),
        (b"strh", "handler", 4, 4),
        (b"strh", "scale", 20, 4),
        (b"strh", "rate", 24, 4),
        (b"strh", "start", 28, 4),
        (b"strh", "length", 32, 4),
        (b"strh", "suggested_buffer", 36, 4),
        (b"strh", "sample_size", 44, 4),
        (b"strf", "size_or_format", 0, 4),
        (b"strf", "width_or_rate", 4, 4),
        (b"strf", "height_or_byte_rate", 8, 4),
        (b"strf", "planes_bits_or_align", 12, 4),
        (b"strf", "compression", 16, 4),
        (b"strf", "image_size", 20, 4),
        (b"indx", "longs_per_entry", 0, 2),
        (b"indx", "entries_in_use", 4, 4),
        (b"indx", "first_offset", 24, 8),
        (b"indx", "first_size", 32, 4),
        (b"indx", "first_duration", 36, 4),
        (b"ix00", "entries_in_use", 4, 4),
        (b"ix00", "base_offset", 12, 8),
        (b"ix00", "first_offset", 24, 4),
        (b"ix00", "first_size", 28, 4),
        (b"idx1", "first_flags", 4, 4),
        (b"idx1", "first_offset", 8, 4),
        (b"idx1", "first_size", 12, 4),
        (b"dmlh", "total_frames", 0, 4),
    ];

    pub(super) fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
        let nodes = parse(bytes);
        let done = match rng.u8(0..6) {
            0..=2 => set_field(bytes, &nodes, rng),
            3 => index_entry(bytes, &nodes, rng),
            4 => stream_id(bytes, &nodes, rng),
            _ => None,
        };
        done.or_else(|| tree_mutation(bytes, &nodes, rng, fourcc_le))
    }

    fn set_field(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<(&Node, &RiffField)> = nodes
            .iter()
            .flat_map(|node| {
                FIELDS
                    .iter()
                    .filter(move |(kind, _, offset, width)| {
                        u32::from_le_bytes(**kind) == node.kind
                            && node.body + offset + width <= node.end
                    })
                    .map(move |field| (node, field))
            })
            .collect();
        let &(node, &(_, field, offset, width)) = rng.choice(&candidates)?;
        let at = node.body + offset;
        let current = get_le(bytes, at, width)?;
        let value = if field == "type" {
            u64::from(u32::from_le_bytes(**rng.choice(&[
                b"vids",
                b"auds",
                b"txts",
                b"mids",
                b"\0\0\0\0",
            ])?))
        } else {
            absurd(rng, width, current)
        };
        put_le(bytes, at, width, value);
        Some(format!(
            "{}.{field} {current} -> {value}",
            fourcc_le(node.kind)
        ))
    }

    /// Corrupts one entry of the legacy index (idx1: 16 bytes an entry).
    fn index_entry(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let idx1 = nodes
            .iter()
            .find(|n| n.kind == u32::from_le_bytes(*b"idx1"))?;
        let entries = (idx1.end - idx1.body) / 16;
        if entries == 0 {
            return None;
        }
        let entry = rng.usize(0..entries);
        let (offset, what) = *rng.choice(&[(4, "flags"), (8, "offset"), (12, "size")])?;
        let at = idx1.body + entry * 16 + offset;
        let current = get_le(bytes, at, 4)?;
        let value = absurd(rng, 4, current);
        put_le(bytes, at, 4, value);
        Some(format!("idx1[{entry}].{what} {current} -> {value}"))
    }

    /// Gives a data chunk (`00dc`, `01wb`) another stream's number or type.
    fn stream_id(bytes: &mut [u8], nodes: &[Node], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<&Node> = nodes
            .iter()
            .filter(|n| {
                let id = n.kind.to_le_bytes();
                id[0].is_ascii_digit() && id[1].is_ascii_digit()
            })
            .collect();
        let node = *rng.choice(&candidates)?;
        let old = fourcc_le(node.kind);
        let new = **rng.choice(&[
            b"00dc", b"01dc", b"00wb", b"01wb", b"09dc", b"00pc", b"00db",
        ])?;
        bytes[node.start..node.start + 4].copy_from_slice(&new);
        Some(format!("chunk {old} -> {}", String::from_utf8_lossy(&new)))
    }
}

/// MPEG transport streams: 188-byte packets.
mod ts {
    use super::*;

    const PACKET: usize = 188;

    pub(super) fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
        let packets = bytes.len() / PACKET;
        if packets < 2 {
            return None;
        }
        let p = rng.usize(0..packets);
        let at = p * PACKET;
        Some(match rng.u8(0..9) {
            0 => {
                let q = rng.usize(0..packets);
                let (a, b) = (p.min(q) * PACKET, p.max(q) * PACKET);
                if a != b {
                    let first = bytes[a..a + PACKET].to_vec();
                    bytes.copy_within(b..b + PACKET, a);
                    bytes[b..b + PACKET].copy_from_slice(&first);
                }
                format!("swap packets {p} and {q}")
            }
            1 => {
                let copy = bytes[at..at + PACKET].to_vec();
                let times = rng.usize(1..=4);
                for _ in 0..times {
                    bytes.splice(at..at, copy.iter().copied());
                }
                format!("duplicate packet {p} x{times}")
            }
            2 => {
                let count = rng.usize(1..=(packets - p).min(16));
                bytes.drain(at..at + count * PACKET);
                format!("delete {count} packets at {p}")
            }
            3 => {
                let random = rng.u16(0..0x2000);
                let pid =
                    *rng.choice(&[0u16, 1, 0x10, 0x11, 0x100, 0x101, 0x1000, 0x1FFF, random])?;
                bytes[at + 1] = (bytes[at + 1] & 0xE0) | (pid >> 8) as u8;
                bytes[at + 2] = pid as u8;
                format!("packet {p} pid -> {pid:#x}")
            }
            4 => {
                // Adaptation field present, with an absurd length.
                bytes[at + 3] |= 0x20;
                let length = *rng.choice(&[0u8, 1, 183, 184, 255])?;
                bytes[at + 4] = length;
                format!("packet {p} adaptation length -> {length}")
            }
            5 => {
                bytes[at + 3] = (bytes[at + 3] & 0xF0) | rng.u8(0..16);
                bytes[at + 1] ^= 0x40;
                format!("packet {p} continuity and start flag changed")
            }
            6 => return pes_header(bytes, rng),
            7 => return psi_field(bytes, rng),
            _ => {
                // Lose sync: a packet cut short shifts every later one.
                let cut = rng.usize(1..PACKET);
                bytes.drain(at..at + cut);
                format!("cut {cut} bytes of packet {p}")
            }
        })
    }

    /// Offset of the payload of the packet at `at`, if it has one.
    fn payload(bytes: &[u8], at: usize) -> Option<usize> {
        let control = (bytes.get(at + 3)? >> 4) & 0x3;
        let start = match control {
            1 => at + 4,
            3 => at + 5 + usize::from(*bytes.get(at + 4)?),
            _ => return None,
        };
        (start < at + PACKET).then_some(start)
    }

    fn starts(bytes: &[u8], pid_filter: impl Fn(u16) -> bool) -> Vec<usize> {
        (0..bytes.len() / PACKET)
            .map(|p| p * PACKET)
            .filter(|&at| {
                bytes[at] == 0x47
                    && bytes[at + 1] & 0x40 != 0
                    && pid_filter(u16::from(bytes[at + 1] & 0x1F) << 8 | u16::from(bytes[at + 2]))
            })
            .collect()
    }

    /// Corrupts the PES header at the start of a payload: its packet length,
    /// header length or timestamps.
    fn pes_header(bytes: &mut [u8], rng: &mut Rng) -> Option<String> {
        let candidates: Vec<usize> = starts(bytes, |pid| pid >= 0x20 && pid != 0x1FFF)
            .into_iter()
            .filter_map(|at| {
                payload(bytes, at)
                    .filter(|&p| p + 14 <= at + PACKET && bytes[p..p + 3] == [0, 0, 1])
            })
            .collect();
        let &p = rng.choice(&candidates)?;
        Some(match rng.u8(0..3) {
            0 => {
                let current = get_be(bytes, p + 4, 2)?;
                let value = absurd(rng, 2, current);
                put_be(bytes, p + 4, 2, value);
                format!("PES length {current} -> {value}")
            }
            1 => {
                let value = *rng.choice(&[0u8, 0xFF, 0xB4, 5])?;
                bytes[p + 8] = value;
                format!("PES header length -> {value}")
            }
            _ => {
                for i in 9..14 {
                    bytes[p + i] = rng.u8(..);
                }
                "PES timestamp randomized".to_owned()
            }
        })
    }

    /// Corrupts a PAT or PMT: section length, program map PID, or a stream type.
    fn psi_field(bytes: &mut [u8], rng: &mut Rng) -> Option<String> {
        // PAT on PID 0; PMTs on the PIDs ffmpeg gives them (0x1000 on).
        let candidates: Vec<usize> =
            starts(bytes, |pid| pid == 0 || (0x1000..0x1010).contains(&pid))
                .into_iter()
                .filter_map(|at| payload(bytes, at))
                .map(|p| p + 1 + usize::from(bytes[p]))
                .filter(|&s| s + 20 < bytes.len())
                .collect();
        let &s = rng.choice(&candidates)?;
        let table = bytes[s];
        Some(match rng.u8(0..3) {
            0 => {
                let value = *rng.choice(&[0u16, 1, 5, 0x3FF, 0xFFF])?;
                bytes[s + 1] = (bytes[s + 1] & 0xF0) | (value >> 8) as u8;
                bytes[s + 2] = value as u8;
                format!("table {table:#x} section length -> {value}")
            }
            1 if table == 0x02 => {
                // PMT: the first elementary stream's type, after the program info.
                let info = usize::from(bytes[s + 10] & 0x0F) << 8 | usize::from(bytes[s + 11]);
                let at = s + 12 + info;
                let stream_type =
                    *rng.choice(&[0x01u8, 0x02, 0x03, 0x0F, 0x10, 0x1B, 0x24, 0x06, 0x00, 0xFF])?;
                *bytes.get_mut(at)? = stream_type;
                format!("PMT stream type -> {stream_type:#x}")
            }
            _ => {
                let at = s + rng.usize(3..20);
                bytes[at] = rng.u8(..);
                format!("table {table:#x} byte {} randomized", at - s)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn parses_nested_mp4_boxes_and_mends_sizes_on_duplicate() {
        let tkhd = mp4_box(b"tkhd", &[0; 84]);
        let trak = mp4_box(b"trak", &tkhd);
        let moov = mp4_box(b"moov", &trak);
        let mut file = mp4_box(b"ftyp", b"isom\0\0\0\0");
        file.extend_from_slice(&moov);
        let nodes = mp4::parse(&file);
        let kinds: Vec<String> = nodes.iter().map(|n| fourcc(n.kind)).collect();
        assert_eq!(kinds, ["ftyp", "moov", "trak", "tkhd"]);
        let tkhd_index = 3;
        fix_ancestors(&mut file, &nodes, tkhd_index, 92);
        assert_eq!(get_be(&file, 16, 4), Some((moov.len() + 92) as u64));
    }

    #[test]
    fn the_same_seed_gives_the_same_mutation() {
        let mut file = b"\x1A\x45\xDF\xA3\x84\x42\x82\x81\x01".to_vec();
        file.extend((0..4000u32).map(|i| (i * 7) as u8));
        let run = |seed| {
            let mut copy = file.clone();
            let done = mutate(&mut copy, &mut Rng::with_seed(seed), 1 << 20);
            (copy, done)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
    }
}
