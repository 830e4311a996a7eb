// SPDX-License-Identifier: LGPL-2.1-or-later
//! The model run of `tests/model.rs` with misuse mixed in, under
//! `QED_L2_CACHE_ON_MISUSE=warn` (this test binary sets it before the
//! library's first call; the library reads its environment once per
//! process, so this binary holds this one test only).
//!
//! Every misuse call must be refused without changing anything the model
//! tracks (checked after each step as usual), and must print exactly one
//! line naming the function and the fault: stderr is captured in a file
//! for the run and compared line by line with the misuse calls made.

#[path = "model/mod.rs"]
mod model;

use model::{Driver, Policy, Rng, RunConfig};
use std::io::Read;
use std::os::fd::AsRawFd;

/// Redirects fd 2 to a temporary file until `finish`.
struct StderrCapture {
    saved: i32,
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl StderrCapture {
    fn start() -> StderrCapture {
        let path = std::env::temp_dir().join(format!("qed-l2-cache-model-warn-{}.log", std::process::id()));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temporary file");
        // SAFETY: plain descriptor calls on fds this process owns.
        let saved = unsafe { libc::dup(2) };
        assert!(saved >= 0, "dup(2)");
        // SAFETY: as above.
        assert!(unsafe { libc::dup2(file.as_raw_fd(), 2) } == 2, "dup2");
        StderrCapture { saved, file, path }
    }

    fn finish(mut self) -> String {
        // SAFETY: restores the saved descriptor onto fd 2.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
        let mut text = String::new();
        std::io::Seek::rewind(&mut self.file).expect("rewind");
        self.file.read_to_string(&mut text).expect("read the capture");
        let _ = std::fs::remove_file(&self.path);
        text
    }
}

fn ops() -> u64 {
    if cfg!(miri) {
        100
    } else {
        25_000
    }
}

#[test]
fn model_with_misuse_in_warn_mode() {
    // Before the library's first call: it reads the environment once.
    std::env::set_var("QED_L2_CACHE_ON_MISUSE", "warn");
    std::env::remove_var("QED_L2_CACHE_TRACE");
    let capture = StderrCapture::start();
    let mut expected = vec![];
    let mut total_ops = 0;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for capacity in [1u32, 2, 50, 1000] {
            for policy in Policy::ALL {
                let seed = 0xBAD_CA11 ^ (u64::from(capacity) << 8) ^ policy as u64;
                let cfg = RunConfig {
                    capacity,
                    policy,
                    ops: ops(),
                    misuse: true,
                    label: format!("warn, seed {seed:#x}"),
                };
                let mut driver = Driver::new(cfg, Rng::new(seed));
                let r = driver.run().clone();
                assert_eq!(r.ops, ops());
                total_ops += r.ops;
                expected.extend(r.misuse.iter().copied());
            }
        }
    }));
    let text = capture.finish();
    if let Err(panic) = outcome {
        eprintln!("captured stderr (last 40 lines):");
        for line in text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
            eprintln!("  {line}");
        }
        std::panic::resume_unwind(panic);
    }
    // Reports of invalid environment values ("ignoring ...") may precede.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("qed-l2-cache: qed_"))
        .collect();
    let stray: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("qed-l2-cache: "))
        .take(5)
        .collect();
    assert!(stray.is_empty(), "unexpected stderr lines: {stray:?}");
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per misuse call ({} calls in {total_ops} operations)",
        expected.len()
    );
    for (i, (line, (function, fault))) in lines.iter().zip(&expected).enumerate() {
        let prefix = format!("qed-l2-cache: {function}: ");
        assert!(
            line.starts_with(&prefix) && line.contains(fault),
            "misuse #{i}: expected {function} / {fault:?}, got {line:?}"
        );
    }
    if !cfg!(miri) {
        let kinds: std::collections::BTreeSet<_> = expected.iter().collect();
        assert!(kinds.len() >= 20, "few kinds of misuse covered: {kinds:?}");
        println!(
            "{} misuse calls of {} kinds in {total_ops} operations",
            expected.len(),
            kinds.len()
        );
    }
}
