//! The comparing side of the measurement: libavfilter's `ssim` and `psnr`
//! filters fed with pairs of pictures, and the weighted sums of their
//! per-picture figures.

use std::collections::VecDeque;

use ffmpeg_next::{ffi, filter, frame, Rational};

use super::super::is_again_or_eof;

/// PSNR of identical pictures, which the formula puts at infinity.
const PSNR_CAP_DB: f64 = 100.0;

/// The pairs compared so far: the filters, set up with the first pair,
/// and the sums of their figures.
pub(super) struct Pairs {
    time_base: Rational,
    graph: Option<PairGraph>,
    ssim: Sum,
    psnr: Sum,
    pulled: frame::Video,
}

impl Pairs {
    /// Starts with no pair, for pictures timed in `time_base`.
    pub(super) fn new(time_base: Rational) -> Self {
        Pairs {
            time_base,
            graph: None,
            ssim: Sum::default(),
            psnr: Sum::default(),
            pulled: frame::Video::empty(),
        }
    }

    /// Compares `main` with `reference`, the pair standing for `weight`
    /// pictures. Returns `false` if the filters failed.
    pub(super) fn push(
        &mut self,
        main: &frame::Video,
        reference: &frame::Video,
        weight: f64,
    ) -> bool {
        if self.graph.is_none() {
            self.graph = PairGraph::build(main, reference, self.time_base);
        }
        let Some(graph) = self.graph.as_mut() else {
            return false;
        };
        // The buffer sources take the pictures' references.
        let pushed = graph.main.source().add(main).is_ok()
            && graph.reference.source().add(reference).is_ok();
        if !pushed {
            return false;
        }
        self.ssim.pending.push_back(weight);
        self.psnr.pending.push_back(weight);
        self.drain()
    }

    /// Flushes the filters and takes their last figures. Returns `false` if
    /// they failed.
    pub(super) fn finish(&mut self) -> bool {
        let Some(graph) = self.graph.as_mut() else {
            return true;
        };
        graph.main.source().flush().is_ok()
            && graph.reference.source().flush().is_ok()
            && self.drain()
    }

    /// Returns the mean SSIM ("All") and PSNR in dB, or `None` if nothing
    /// was compared.
    pub(super) fn means(&self) -> Option<(f64, f64)> {
        let ssim = self.ssim.mean()?;
        let mse = self.psnr.mean()?;
        let psnr_db = if mse > 0.0 {
            (10.0 * (255.0f64 * 255.0 / mse).log10()).min(PSNR_CAP_DB)
        } else {
            PSNR_CAP_DB
        };
        Some((ssim, psnr_db))
    }

    /// Takes every figure the filters have ready.
    fn drain(&mut self) -> bool {
        let Some(graph) = self.graph.as_mut() else {
            return true;
        };
        self.ssim
            .drain(&mut graph.ssim, "lavfi.ssim.All", &mut self.pulled)
            && self
                .psnr
                .drain(&mut graph.psnr, "lavfi.psnr.mse_avg", &mut self.pulled)
    }
}

/// The `ssim` and `psnr` filters fed with pairs of pictures.
struct PairGraph {
    main: filter::Context,
    reference: filter::Context,
    ssim: filter::Context,
    psnr: filter::Context,
    // Owns the contexts above.
    _graph: filter::Graph,
}

impl PairGraph {
    /// Builds the graph for pictures of `main`'s and `reference`'s sizes and
    /// formats (both become `yuv420p`; the sizes are equal).
    fn build(main: &frame::Video, reference: &frame::Video, time_base: Rational) -> Option<Self> {
        let args = |frame: &frame::Video| {
            let pix_fmt: ffi::AVPixelFormat = frame.format().into();
            format!(
                "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect=1/1",
                frame.width(),
                frame.height(),
                pix_fmt as i32,
                time_base.numerator(),
                time_base.denominator().max(1),
            )
        };
        let mut graph = filter::Graph::new();
        // SAFETY: plain field write on a graph with no filter yet: its
        // filters run on the calling thread, as the decoder does.
        unsafe {
            (*graph.as_mut_ptr()).nb_threads = 1;
        }
        let buffer = filter::find("buffer")?;
        let sink = filter::find("buffersink")?;
        graph.add(&buffer, "main", &args(main)).ok()?;
        graph.add(&buffer, "reference", &args(reference)).ok()?;
        graph.add(&sink, "ssim", "").ok()?;
        graph.add(&sink, "psnr", "").ok()?;
        graph
            .output("main", 0)
            .and_then(|p| p.output("reference", 0))
            .and_then(|p| p.input("ssim", 0))
            .and_then(|p| p.input("psnr", 0))
            .and_then(|p| {
                p.parse(
                    "[main]format=yuv420p,split[m1][m2];\
                     [reference]format=yuv420p,split[r1][r2];\
                     [m1][r1]ssim[ssim];[m2][r2]psnr[psnr]",
                )
            })
            .ok()?;
        graph.validate().ok()?;
        Some(PairGraph {
            main: graph.get("main")?,
            reference: graph.get("reference")?,
            ssim: graph.get("ssim")?,
            psnr: graph.get("psnr")?,
            _graph: graph,
        })
    }
}

/// Running weighted sums of one filter's per-picture figure.
#[derive(Default)]
struct Sum {
    /// Weights of pairs pushed whose figure has not come out yet, in order.
    pending: VecDeque<f64>,
    total: f64,
    weight: f64,
}

impl Sum {
    /// Pulls every figure `sink` has ready, read from metadata `key`.
    pub(super) fn drain(
        &mut self,
        sink: &mut filter::Context,
        key: &str,
        out: &mut frame::Video,
    ) -> bool {
        loop {
            match sink.sink().frame(out) {
                Ok(()) => {}
                Err(err) if is_again_or_eof(&err) => return true,
                Err(_) => return false,
            }
            let Some(weight) = self.pending.pop_front() else {
                return false;
            };
            let Some(value) = out
                .metadata()
                .get(key)
                .and_then(|text| text.parse::<f64>().ok())
            else {
                return false;
            };
            self.total += value * weight;
            self.weight += weight;
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.total / self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_weigh_each_figure_by_the_pictures_it_stands_for() {
        let sum = Sum {
            total: 0.9 * 1.0 + 0.5 * 3.0,
            weight: 4.0,
            ..Sum::default()
        };
        assert!((sum.mean().unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(Sum::default().mean(), None);
    }
}
