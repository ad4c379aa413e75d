//! Which decoded pictures a pass encodes when it encodes part of the video:
//! a span of seconds (a sample of a CRF search), or one segment of a plan,
//! chosen by exact timestamps; and what a segment's window saw, which tells
//! whether the decode really started where the plan said.

/// The part of the video a pass encodes.
pub(super) enum Window {
    /// The pictures from `start` to `end` seconds after the input's start.
    Seconds { start: f64, end: f64 },
    /// One segment's pictures.
    Frames(FrameWindow),
}

/// A segment's pictures, `start <= pts < end`, timestamps as the demuxer
/// gave them (before the start-time shift).
pub(super) struct FrameWindow {
    pub start: i64,
    pub end: Option<i64>,
    /// The first picture decoded, in the window or before it.
    pub first_decoded: Option<i64>,
    /// Pictures that fell in the window.
    pub admitted: u64,
}

impl FrameWindow {
    pub fn new(start: i64, end: Option<i64>) -> Self {
        FrameWindow {
            start,
            end,
            first_decoded: None,
            admitted: 0,
        }
    }
}

/// Where a picture falls against a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Before,
    Inside,
    /// Past the end: nothing later is wanted either.
    After,
}

impl Window {
    /// Places a picture stamped `raw_pts` as demuxed, `seconds` after the
    /// input's start.
    pub fn place(&mut self, raw_pts: i64, seconds: f64) -> Place {
        match self {
            Window::Seconds { start, end } => {
                if seconds >= *end {
                    Place::After
                } else if seconds < *start {
                    Place::Before
                } else {
                    Place::Inside
                }
            }
            Window::Frames(frames) => {
                frames.first_decoded.get_or_insert(raw_pts);
                if frames.end.is_some_and(|end| raw_pts >= end) {
                    Place::After
                } else if raw_pts < frames.start {
                    Place::Before
                } else {
                    frames.admitted += 1;
                    Place::Inside
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_takes_its_start_and_not_its_end() {
        let mut window = Window::Frames(FrameWindow::new(100, Some(200)));
        let places: Vec<Place> = [90, 100, 199, 200]
            .into_iter()
            .map(|pts| window.place(pts, 0.0))
            .collect();
        assert_eq!(
            places,
            [Place::Before, Place::Inside, Place::Inside, Place::After]
        );
        let Window::Frames(frames) = window else {
            unreachable!()
        };
        assert_eq!((frames.first_decoded, frames.admitted), (Some(90), 2));
        let mut last = Window::Frames(FrameWindow::new(100, None));
        assert_eq!(last.place(i64::MAX, 0.0), Place::Inside);
    }

    #[test]
    fn a_sample_is_a_span_of_seconds() {
        let mut window = Window::Seconds {
            start: 1.0,
            end: 3.0,
        };
        assert_eq!(window.place(0, 0.5), Place::Before);
        assert_eq!(window.place(0, 1.0), Place::Inside);
        assert_eq!(window.place(0, 3.0), Place::After);
    }
}
