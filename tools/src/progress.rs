//! Progress bars on stderr, hidden when a command prints JSON or nobody watches.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr (hidden when `show` is false).
pub fn progress_bar(show: bool, len: usize, prefix: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
