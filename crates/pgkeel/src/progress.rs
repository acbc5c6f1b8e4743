//! Terminal progress for `up`: one line per step with elapsed time, and a
//! bar per replica while it is cloned (bars only on a terminal).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use pgkeel_cluster::Progress;

/// Draws progress on stderr.
pub struct TerminalProgress {
    start: Instant,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    tty: bool,
}

impl TerminalProgress {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        TerminalProgress {
            start: Instant::now(),
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            tty,
        }
    }

    fn say(&self, line: String) {
        let line = format!("[{:>5.1}s] {line}", self.start.elapsed().as_secs_f64());
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

impl Progress for TerminalProgress {
    fn step(&self, node: &str, message: &str) {
        self.say(format!("{node}: {message}"));
    }

    fn clone_progress(&self, node: &str, done_kb: u64, total_kb: u64) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let bar = bars.entry(node.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total_kb));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(node.to_string());
            bar
        });
        bar.set_length(total_kb * 1024);
        bar.set_position(done_kb * 1024);
    }

    fn clone_done(&self, node: &str) {
        if let Ok(mut bars) = self.bars.lock()
            && let Some(bar) = bars.remove(node)
        {
            bar.finish_and_clear();
        }
        self.say(format!("{node}: cloned"));
    }
}
