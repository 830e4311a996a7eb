// SPDX-License-Identifier: LGPL-2.1-or-later
//! `qed-l2-cache-stat`: what the QED L2 table caches of running processes
//! are doing, read from the live statistics files the library publishes
//! with `QED_L2_CACHE_STATS=1` (docs/stat-tool.md, qed-l2-cache-stat(1)).
//!
//! The program is not part of the library: it shares only the file layout
//! (`src/stats_layout.rs`, included below, stated once for both sides).
//! Every file is untrusted input: `files` opens it, `read` checks it,
//! `output` prints it.

// The layout serves the writer too: what only the writer uses is not dead.
#[allow(dead_code)]
#[path = "../src/stats_layout.rs"]
mod stats_layout;

mod cli;
mod files;
mod output;
mod read;

#[cfg(test)]
mod testfile;
#[cfg(test)]
mod tests;

use cli::{Options, Parsed, PROG};
use files::Outcome;
use output::{FileMeta, Tracker};
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Messages already printed: a file that stays broken is reported once,
/// not at every report of `-w` (bounded: forgotten past this many).
const MAX_REMEMBERED_MESSAGES: usize = 10_000;

struct Run {
    opts: Options,
    dir: std::path::PathBuf,
    tracker: Tracker,
    said: HashSet<String>,
    printed_a_report: bool,
}

impl Run {
    fn say(&mut self, msg: String) {
        if self.said.len() >= MAX_REMEMBERED_MESSAGES {
            self.said.clear();
        }
        if self.said.insert(msg.clone()) {
            eprintln!("{PROG}: {msg}");
        }
    }

    fn about(&mut self, path: &Path, what: &str) {
        self.say(format!("{}: {what}", output::shown(path.as_os_str())));
    }

    /// One report: every file read, checked and printed. Returns the exit
    /// status it calls for.
    fn report(&mut self, number: u64, out: &mut impl Write) -> io::Result<u8> {
        self.tracker.begin_report();
        let dir = self.dir.clone();
        let shown_dir = output::shown(dir.as_os_str());
        let names = match files::check_dir(&dir, files::euid()) {
            Ok(true) => match files::list(&dir, &self.opts.pids) {
                Ok((names, more)) => {
                    if more {
                        self.about(
                            &dir,
                            &format!("more than {} files: only those are read", files::MAX_FILES),
                        );
                    }
                    names
                }
                Err(e) => {
                    self.about(&dir, &format!("cannot list it: {e}"));
                    return Ok(1);
                }
            },
            Ok(false) => Vec::new(),
            Err(msg) => {
                self.about(&dir, &msg);
                return Ok(1);
            }
        };

        let mut text = String::new();
        let mut read_pids = HashSet::new();
        let mut unread = 0usize;
        for (name, file_name) in &names {
            let path = dir.join(file_name);
            match files::read_path(&path) {
                Outcome::Read(snapshot) => {
                    let at = Instant::now();
                    read_pids.insert(name.pid);
                    if snapshot.unread > 0 {
                        self.about(
                            &path,
                            &format!(
                                "{} records: only the first {} ({} bytes) are read",
                                snapshot.header.records,
                                read::MAX_RECORDS,
                                read::MAX_RECORD_BYTES
                            ),
                        );
                    }
                    let meta = FileMeta {
                        label: file_name.to_string_lossy().into_owned(),
                        pid: name.pid,
                        instance: name.instance,
                        path: path.to_string_lossy().into_owned(),
                    };
                    output::format_snapshot(
                        &mut text,
                        &meta,
                        &snapshot,
                        &mut self.tracker,
                        at,
                        number,
                        self.opts.json,
                    );
                }
                Outcome::Skipped(why) => {
                    unread += 1;
                    self.about(&path, &why);
                }
                Outcome::Stale(what) => self.about(&path, &what),
                Outcome::Gone => {}
            }
        }

        if !read_pids.is_empty() && !self.opts.json {
            if self.printed_a_report {
                out.write_all(b"\n")?;
            }
            out.write_all(output::text_header(number == 1).as_bytes())?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !read_pids.is_empty() {
            self.printed_a_report = true;
        }

        let mut status = 0;
        for &pid in &self.opts.pids.clone() {
            if read_pids.contains(&pid) {
                continue;
            }
            status = 1;
            if names.iter().any(|(n, _)| n.pid == pid) {
                self.say(format!("no valid statistics file for pid {pid} in {shown_dir}"));
            } else {
                self.say(format!(
                    "no statistics file for pid {pid} in {shown_dir} (is it running with QED_L2_CACHE_STATS=1?)"
                ));
            }
        }
        if self.opts.pids.is_empty() && read_pids.is_empty() {
            if unread == 0 {
                self.say(format!("no process publishes statistics in {shown_dir}"));
            } else {
                status = 1;
            }
        }
        Ok(status)
    }
}

fn main() -> ExitCode {
    // A closed pipe (`| head`) ends the program quietly, as it does for
    // other tools, instead of a failed write at every line.
    // SAFETY: setting a signal's disposition to the default, before any
    // thread starts; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let opts = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            print!("{}", cli::version());
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{PROG}: {msg}\nTry '{PROG} --help'.");
            return ExitCode::from(2);
        }
    };
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| files::default_dir(std::env::var_os("XDG_RUNTIME_DIR"), files::euid()));
    let reports = opts.reports();
    let period = opts.period();
    let mut run = Run {
        opts,
        dir,
        tracker: Tracker::default(),
        said: HashSet::new(),
        printed_a_report: false,
    };
    let stdout = io::stdout();
    let mut next = Instant::now();
    let mut status;
    let mut number = 0u64;
    loop {
        number += 1;
        status = match run.report(number, &mut stdout.lock()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{PROG}: cannot write the report: {e}");
                return ExitCode::from(1);
            }
        };
        if reports.is_some_and(|n| number >= n) {
            break;
        }
        // Reports on a fixed grid, like iostat: a slow read does not push
        // the later ones back (a report later than a whole period starts
        // a new grid rather than a burst).
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    ExitCode::from(status)
}
