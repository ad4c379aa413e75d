//! The report: one entry per benchmark, written as `report.json` and
//! `report.md`.

use std::path::Path;

use serde::Serialize;

use crate::wrk::Load;

/// Which way a ratio is good.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// ours / baseline must be at least the target (throughput).
    AtLeast(f64),
    /// ours / baseline must be at most the target (latency, time).
    AtMost(f64),
    /// ours / baseline must be within 1 ± the target (size).
    Within(f64),
    /// ours − baseline must be within ± the target (a quality score
    /// against the same score measured another way).
    Diff(f64),
    /// Reported, no target.
    Report,
}

/// One benchmark's figures.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub unit: String,
    pub ours: f64,
    pub baseline: f64,
    pub ratio: f64,
    pub target: String,
    /// `None` when there is no target.
    pub pass: Option<bool>,
    pub note: String,
}

impl Entry {
    pub fn new(name: &str, unit: &str, ours: f64, baseline: f64, goal: Goal, note: String) -> Self {
        let ratio = if baseline == 0.0 {
            f64::NAN
        } else {
            ours / baseline
        };
        let (target, pass) = match goal {
            Goal::AtLeast(t) => (format!(">= {t}x"), Some(ratio >= t)),
            Goal::AtMost(t) => (format!("<= {t}x"), Some(ratio <= t)),
            Goal::Within(t) => (
                format!("1 ± {:.0}%", t * 100.0),
                Some((ratio - 1.0).abs() <= t),
            ),
            Goal::Diff(t) => (format!("± {t} abs"), Some((ours - baseline).abs() <= t)),
            Goal::Report => ("-".to_owned(), None),
        };
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            ours,
            baseline,
            ratio,
            target,
            pass,
            note,
        }
    }
}

impl Entry {
    /// Compares two load runs by requests per second.
    pub fn throughput(name: &str, ours: &Load, base: &Load, goal: Goal, note: String) -> Self {
        Self::new(
            name,
            "req/s",
            ours.throughput(),
            base.throughput(),
            goal,
            note,
        )
    }

    /// Compares two load runs by their 99th-percentile latency.
    pub fn p99(name: &str, ours: &Load, base: &Load, goal: Goal, note: String) -> Self {
        Self::new(name, "ms", ours.p99_ms(), base.p99_ms(), goal, note)
    }
}

/// Writes `report.json` and `report.md` into `dir`.
pub fn write(dir: &Path, entries: &[Entry], context: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(entries)?)?;
    std::fs::write(dir.join("report.md"), markdown(entries, context))?;
    Ok(())
}

/// The report as a Markdown table.
pub fn markdown(entries: &[Entry], context: &str) -> String {
    let mut md = format!("# vidpress benchmarks\n\n{context}\n\n");
    md.push_str("| benchmark | ours | baseline | ratio | target | pass |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    for e in entries {
        let pass = match e.pass {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        md.push_str(&format!(
            "| {} | {} {} | {} {} | {:.3} | {} | {} |\n",
            e.name,
            figure(e.ours, &e.unit),
            e.unit,
            figure(e.baseline, &e.unit),
            e.unit,
            e.ratio,
            e.target,
            pass
        ));
    }
    md.push_str("\nNotes:\n\n");
    for e in entries.iter().filter(|e| !e.note.is_empty()) {
        md.push_str(&format!("- {}: {}\n", e.name, e.note));
    }
    md
}

fn figure(x: f64, unit: &str) -> String {
    if unit == "SSIM" {
        // Scores a few thousandths apart are what is compared.
        format!("{x:.5}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}
