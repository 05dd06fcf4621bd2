//! A progress bar on stderr for registry resolution, drawn only on a terminal.

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::ImageRef;
use crate::resolve::Progress;

/// Draws one bar for `resolve_all`.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} resolving {pos}/{len} images [{bar:30}] {elapsed}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Bar(bar)
    }
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bar {
    fn start(&self, total: usize) {
        self.0.set_length(total as u64);
    }

    fn done(&self, _image: &ImageRef) {
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
