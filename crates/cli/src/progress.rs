//! Download progress for people and for logs, in one place: a progress bar
//! when stderr is a terminal; otherwise plain lines, one per tenth of a
//! download of known size or one per [`LINE_INTERVAL`] when the size is
//! unknown, so a log gets a dozen lines for a model, not thousands of
//! carriage returns.

use capsule_models::fetch::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A line for a log at each tenth of a download of known size.
pub const LINE_STEPS: u64 = 10;
/// A line for a log this often while a download of unknown size runs.
pub const LINE_INTERVAL: Duration = Duration::from_secs(5);

/// When a log gets a line. It reads no clock (the caller passes `now`), so
/// it is tested without waiting.
#[derive(Debug, Default)]
pub struct LineThrottle {
    /// Tenths of the known size already reported.
    steps_reported: u64,
    /// When the last line (or the first update) was, for unknown sizes.
    last: Option<Instant>,
}

impl LineThrottle {
    /// Whether `done` bytes (of `total`, when known) at `now` deserve a line.
    pub fn update(&mut self, done: u64, total: Option<u64>, now: Instant) -> bool {
        match total {
            Some(total) => {
                let step = if total == 0 {
                    LINE_STEPS
                } else {
                    // u128: bytes × 10 cannot overflow.
                    ((done.min(total) as u128 * LINE_STEPS as u128) / total as u128) as u64
                };
                if step > self.steps_reported {
                    self.steps_reported = step;
                    return true;
                }
                false
            }
            None => {
                let last = *self.last.get_or_insert(now);
                if now.duration_since(last) >= LINE_INTERVAL {
                    self.last = Some(now);
                    return true;
                }
                false
            }
        }
    }
}

/// Progress as plain lines on `out` (a log, a pipe).
pub struct LineLog<W: Write> {
    out: W,
    throttle: LineThrottle,
}

impl<W: Write> LineLog<W> {
    pub fn new(out: W) -> Self {
        LineLog {
            out,
            throttle: LineThrottle::default(),
        }
    }

    /// Bytes downloaded so far, at `now`; writes a line when one is due.
    pub fn download(&mut self, model: &str, done: u64, total: Option<u64>, now: Instant) {
        if self.throttle.update(done, total, now) {
            let _ = writeln!(self.out, "{}", download_line(model, done, total));
            let _ = self.out.flush();
        }
    }

    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// "minilm: 9.1 / 90.9 MB (10 %)", or "minilm: 9.1 MB" when the size is unknown.
pub fn download_line(model: &str, done: u64, total: Option<u64>) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    match total {
        Some(t) => format!(
            "{model}: {:.1} / {:.1} MB ({:.0} %)",
            mb(done),
            mb(t),
            100.0 * done as f64 / t.max(1) as f64
        ),
        None => format!("{model}: {:.1} MB", mb(done)),
    }
}

/// The progress of one model's fetch, drawn for a person or logged.
pub enum FetchProgress {
    Bar(Option<ProgressBar>),
    Lines(LineLog<std::io::Stderr>),
}

impl FetchProgress {
    /// A bar when stderr is a terminal, else lines on stderr.
    pub fn on_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            FetchProgress::Bar(None)
        } else {
            FetchProgress::Lines(LineLog::new(std::io::stderr()))
        }
    }

    pub fn report(&mut self, p: Progress) {
        match (self, p) {
            (FetchProgress::Lines(log), Progress::Download { model, done, total }) => {
                log.download(model, done, total, Instant::now())
            }
            (FetchProgress::Lines(log), Progress::Note(n)) => log.note(&n),
            (FetchProgress::Bar(bar), Progress::Download { model, done, total }) => {
                let bar = bar.get_or_insert_with(|| new_bar(model, total));
                bar.set_position(done);
            }
            (FetchProgress::Bar(bar), Progress::Note(n)) => match bar {
                Some(b) => b.println(n),
                None => eprintln!("{n}"),
            },
        }
    }

    /// Ends the bar, leaving its last state on the terminal.
    pub fn finish(self) {
        if let FetchProgress::Bar(Some(bar)) = self {
            bar.finish();
        }
    }
}

fn new_bar(model: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::new(t),
            "{msg}: [{bar:40}] {bytes} / {total_bytes}  {bytes_per_sec}  eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg}: {spinner} {bytes}  {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(model.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// MiniLM's wheel in 64 KiB reads, as fast as a disk gives them: ten
    /// lines, one at each tenth, the last at 100 %.
    #[test]
    fn a_log_gets_one_line_per_tenth_of_a_known_size() {
        let total = 90_868_376u64;
        let mut log = LineLog::new(Vec::new());
        let t0 = Instant::now();
        let mut done = 0;
        while done < total {
            done = (done + (1 << 16)).min(total);
            log.download("minilm", done, Some(total), t0);
        }
        let out = lines(&log.into_inner());
        assert_eq!(out.len(), 10, "{out:#?}");
        for (i, line) in out.iter().enumerate() {
            let pct = format!("({} %)", (i + 1) * 10);
            assert!(
                line.starts_with("minilm: ") && line.ends_with(&pct),
                "{line}"
            );
        }
    }

    /// A slow download of known size gets no more lines for taking long.
    #[test]
    fn a_slow_download_of_known_size_still_gets_ten_lines() {
        let total = 1_000_000u64;
        let mut log = LineLog::new(Vec::new());
        let t0 = Instant::now();
        for i in 1..=1000u64 {
            log.download("m", i * 1000, Some(total), t0 + Duration::from_secs(i));
        }
        assert_eq!(lines(&log.into_inner()).len(), 10);
    }

    /// Unknown size, a read every 100 ms for 60 s: a line every 5 s.
    #[test]
    fn a_log_gets_one_line_per_interval_when_the_size_is_unknown() {
        let mut log = LineLog::new(Vec::new());
        let t0 = Instant::now();
        for i in 0..=600u64 {
            log.download("m", i * 4096, None, t0 + Duration::from_millis(i * 100));
        }
        let out = lines(&log.into_inner());
        assert_eq!(out.len(), 12, "{out:#?}");
        assert_eq!(out[0], "m: 0.2 MB");
    }

    #[test]
    fn an_empty_download_of_known_size_gets_one_line() {
        let mut t = LineThrottle::default();
        let now = Instant::now();
        assert!(t.update(0, Some(0), now));
        assert!(!t.update(0, Some(0), now));
    }
}
