//! The video's filter graph: rotation applied, scaled to the output size
//! (even, never upscaled), `yuv420p`; and the frame shape it was built for.

use ffmpeg_next::{ffi, format, Rational};

use super::graph::Graph;

/// A configured graph and the frame properties it was built for; a frame
/// with other properties (a mid-stream resolution change) rebuilds it.
pub(super) struct VideoFilter {
    pub(super) graph: Graph,
    pub(super) input: FrameShape,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameShape {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) format: format::Pixel,
}

/// Returns the output size for a displayed `width`×`height` input: at most
/// `max_height` high (never upscaled), aspect kept, both even and at least 2.
pub(super) fn output_size(width: u32, height: u32, max_height: Option<u32>) -> (u32, u32) {
    let even_floor = |value: u32| (value & !1).max(2);
    match max_height {
        Some(max) if max < height && height > 0 => {
            let out_height = even_floor(max);
            // Nearest even width: round(width * h / height / 2) * 2.
            let halves = (2 * u64::from(width) * u64::from(out_height) + 2 * u64::from(height))
                / (4 * u64::from(height));
            let out_width = u32::try_from(halves * 2).unwrap_or(u32::MAX).max(2);
            (out_width, out_height)
        }
        _ => (even_floor(width), even_floor(height)),
    }
}

pub(super) fn build_graph(
    shape: FrameShape,
    sar: Rational,
    time_base: Rational,
    frame_rate: Option<Rational>,
    rotation: u32,
    (out_width, out_height): (u32, u32),
) -> Result<Graph, ffmpeg_next::Error> {
    let pix_fmt: ffi::AVPixelFormat = shape.format.into();
    let mut args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        shape.width,
        shape.height,
        pix_fmt as i32,
        time_base.numerator(),
        time_base.denominator(),
        sar.numerator(),
        sar.denominator().max(1),
    );
    if let Some(rate) = frame_rate {
        args.push_str(&format!(
            ":frame_rate={}/{}",
            rate.numerator(),
            rate.denominator()
        ));
    }

    let mut chain: Vec<String> = Vec::new();
    let (mut width, mut height) = (shape.width, shape.height);
    match rotation {
        90 => chain.push("transpose=clock".into()),
        180 => chain.extend(["hflip".into(), "vflip".into()]),
        270 => chain.push("transpose=cclock".into()),
        _ => {}
    }
    if rotation % 180 == 90 {
        std::mem::swap(&mut width, &mut height);
    }
    if (width, height) != (out_width, out_height) {
        // bicubic is what the CLI asks swscale for.
        chain.push(format!("scale={out_width}:{out_height}:flags=bicubic"));
    }
    chain.push("format=yuv420p".into());

    Graph::build("buffer", &args, &chain.join(","), "buffersink")
}

#[cfg(test)]
mod tests {
    use super::output_size;

    #[test]
    fn keeps_even_sizes_and_evens_odd_ones() {
        assert_eq!(output_size(320, 240, None), (320, 240));
        assert_eq!(output_size(321, 241, None), (320, 240));
        assert_eq!(output_size(1, 1, None), (2, 2));
    }

    #[test]
    fn never_upscales() {
        assert_eq!(output_size(320, 240, Some(480)), (320, 240));
        assert_eq!(output_size(320, 240, Some(240)), (320, 240));
        assert_eq!(output_size(321, 241, Some(241)), (320, 240));
    }

    #[test]
    fn downscales_to_even_dimensions_keeping_aspect() {
        assert_eq!(output_size(1920, 1080, Some(720)), (1280, 720));
        assert_eq!(output_size(1280, 720, Some(481)), (854, 480));
        // 320 * 100 / 240 = 133.3 → 134 (nearest even).
        assert_eq!(output_size(320, 240, Some(100)), (134, 100));
        assert_eq!(output_size(10, 8192, Some(2)), (2, 2));
    }
}
