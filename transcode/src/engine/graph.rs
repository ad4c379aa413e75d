//! A linear libavfilter graph: one source, a chain described as text, one
//! sink. Used by both the video and the audio path.

use ffmpeg_next::{filter, Error, Frame, Rational};

use super::is_again_or_eof;

pub(super) struct Graph {
    source: filter::Context,
    sink: filter::Context,
    // Owns the filter contexts above; they are freed with it.
    _graph: filter::Graph,
}

impl Graph {
    /// Builds `source_filter(source_args) → chain → sink_filter` and
    /// configures it. `chain` is libavfilter syntax, e.g. `"format=yuv420p"`.
    pub fn build(
        source_filter: &str,
        source_args: &str,
        chain: &str,
        sink_filter: &str,
    ) -> Result<Self, Error> {
        let mut graph = filter::Graph::new();
        let source = filter::find(source_filter).ok_or(Error::FilterNotFound)?;
        let sink = filter::find(sink_filter).ok_or(Error::FilterNotFound)?;
        graph.add(&source, "in", source_args)?;
        graph.add(&sink, "out", "")?;
        graph.output("in", 0)?.input("out", 0)?.parse(chain)?;
        graph.validate()?;
        let source = graph.get("in").ok_or(Error::FilterNotFound)?;
        let sink = graph.get("out").ok_or(Error::FilterNotFound)?;
        Ok(Graph {
            source,
            sink,
            _graph: graph,
        })
    }

    /// Feeds one frame in.
    pub fn push(&mut self, frame: &Frame) -> Result<(), Error> {
        self.source.source().add(frame)
    }

    /// Signals end of input, so the chain releases what it holds.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.source.source().flush()
    }

    /// Takes the next output frame; `Ok(false)` when none is ready.
    pub fn pull(&mut self, frame: &mut Frame) -> Result<bool, Error> {
        match self.sink.sink().frame(frame) {
            Ok(()) => Ok(true),
            Err(err) if is_again_or_eof(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Makes the sink hand out frames of exactly `samples` samples (the
    /// last one may be shorter), for encoders with a fixed frame size.
    pub fn set_frame_size(&mut self, samples: u32) {
        self.sink.sink().set_frame_size(samples);
    }

    /// Returns the time base of the frames coming out.
    pub fn time_base(&mut self) -> Rational {
        self.sink.sink().time_base()
    }

    /// Returns the configured sink, to read its negotiated properties.
    pub fn sink(&self) -> &filter::Context {
        &self.sink
    }
}
