//! The library's progress hooks drawn as an indicatif bar on a terminal (hidden otherwise).

use indicatif::ProgressBar;

use crate::common;

/// A progress bar that follows the phases of a long job.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar (hidden when stderr is not a terminal or `quiet`).
    pub fn new(quiet: bool) -> Bar {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            common::progress_bar(0, "")
        };
        Bar { bar }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl hashstore::unify::Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        self.bar.set_message(name.to_string());
        self.bar.set_position(0);
        self.bar.set_length(total);
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
}
