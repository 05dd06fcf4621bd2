//! A progress bar on stderr for registry work (resolve, check, copy), drawn only on a
//! terminal.

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::printer::Printer;
use crate::model::ImageRef;
use crate::resolve::{NoProgress, Progress};

/// Draws one bar for `resolve_all` or `copy_all`.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar labelled `verb` (`resolving`, `checking`, `copying`).
    pub fn new(verb: &str) -> Self {
        let bar = ProgressBar::hidden();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {verb} {{pos}}/{{len}} images [{{bar:30}}] {{elapsed}}"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Bar(bar)
    }
}

/// A bar when `printer` draws on a terminal, else nothing.
pub fn reporter(printer: Printer, verb: &str) -> Box<dyn Progress> {
    if printer.interactive() {
        Box::new(Bar::new(verb))
    } else {
        Box::new(NoProgress)
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
