//! What the trace shows, collected in one pass, then judged per 200.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::strace::*;
use super::*;

/// How a write that carried a record ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WriteEnd {
    /// Completed at this line with every byte of the record.
    Done(usize),
    /// Completed at this line, having written fewer bytes than the record ends at.
    Short(usize),
    Failed,
    /// Still running when the trace ends, or the process went away mid-call.
    Never,
}

/// A write to a log segment that carried a record's head.
#[derive(Debug, Clone)]
pub(super) struct RecordWrite {
    pub(super) path: PathBuf,
    pub(super) start: usize,
    pub(super) end: WriteEnd,
}

/// A change to a name under the `data_dir` (itself included), at the line
/// the call completed.
#[derive(Debug, Clone, Copy)]
pub(super) enum NameEvent {
    Created(usize),
    Removed(usize),
}

/// An `HTTP/1.1 200` written to a socket.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) line: usize,
    pub(super) text: String,
    /// The webhook id its body names (the body may come in a later write).
    pub(super) id: Option<u64>,
}

/// What a started call does when it completes.
#[derive(Debug)]
pub(super) enum Pending {
    /// A write carrying records: per record its id, its index in
    /// `records[id]` and the byte offset in the write it ends at.
    Records(Vec<(u64, usize, u64)>),
    /// An fsync/fdatasync of `path`.
    Sync {
        path: PathBuf,
        start: usize,
    },
    Create(PathBuf),
    CreateDir(PathBuf),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
    Ignore,
}

/// A 200 that promised more than was durable.
#[derive(Debug)]
pub(super) struct Violation {
    pub(super) line: usize,
    pub(super) text: String,
    pub(super) id: Option<u64>,
    /// Why, per write that carried the record (or why there is none).
    pub(super) why: Vec<String>,
}

/// The outcome of an audit.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) lines: usize,
    /// `HTTP/1.1 200` writes to sockets.
    pub(super) oks: usize,
    /// 200s whose body names a webhook id.
    pub(super) with_id: usize,
    /// 200s whose id some write to a log segment carried.
    pub(super) matched: usize,
    /// Records seen in writes to log segments.
    pub(super) record_writes: usize,
    /// Successful fsync/fdatasync calls on files under the data_dir (not
    /// directories, not sled's).
    pub(super) file_syncs: usize,
    /// All violations, the first few kept in `violations`.
    pub(super) violation_count: usize,
    pub(super) violations: Vec<Violation>,
    /// Writes to log segments the audit could not read, the first few.
    pub(super) unreadable_count: usize,
    pub(super) unreadable: Vec<String>,
}

pub(super) const KEEP: usize = 5;

impl Report {
    pub(super) fn describe(&self) -> String {
        let mut s = format!(
            "{} of {} `HTTP/1.1 200` writes promised a record that was not durable \
             ({} trace lines, {} naming an id, {} matched to a log record, {} records written, \
             {} file syncs); the first {}:\n",
            self.violation_count,
            self.oks,
            self.lines,
            self.with_id,
            self.matched,
            self.record_writes,
            self.file_syncs,
            self.violations.len()
        );
        for v in &self.violations {
            let id = v.id.map_or("no id".into(), |id| format!("id {id:016x}"));
            s.push_str(&format!("- line {} ({id}): {}\n", v.line, v.text));
            for why in &v.why {
                s.push_str(&format!("    {why}\n"));
            }
        }
        if self.unreadable_count > 0 {
            s.push_str(&format!(
                "{} writes to log segments could not be read:\n",
                self.unreadable_count
            ));
            for u in &self.unreadable {
                s.push_str(&format!("- {u}\n"));
            }
        }
        s
    }
}

pub(super) fn short(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

pub(super) fn is_socket(fd_path: &str) -> bool {
    ["TCP", "UDP", "UNIX", "socket:"]
        .iter()
        .any(|p| fd_path.starts_with(p))
}

/// The byte count a successful write returned.
pub(super) fn written(ret: &str) -> u64 {
    ret.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub(super) struct Audit {
    pub(super) data_dir: PathBuf,
    pub(super) cwd: PathBuf,
    /// Per pid, the call it started and has not completed.
    pub(super) pending: HashMap<u32, Pending>,
    /// Names under the data_dir known to exist now (it starts empty, so each
    /// is created in the trace), and which of them are directories.
    pub(super) exists: HashSet<PathBuf>,
    pub(super) dirs: HashSet<PathBuf>,
    /// Per webhook id, the writes that carried its record.
    pub(super) records: HashMap<u64, Vec<RecordWrite>>,
    /// Per path, its successful fsync/fdatasync calls: (start line, end line).
    pub(super) syncs: HashMap<PathBuf, Vec<(usize, usize)>>,
    /// Per path, the lines of its `sync_file_range` calls (named in reports).
    pub(super) range_syncs: HashMap<PathBuf, Vec<usize>>,
    pub(super) names: HashMap<PathBuf, Vec<NameEvent>>,
    pub(super) answers: Vec<Answer>,
    /// Per socket, the 200 whose body has not been seen yet.
    pub(super) awaiting_body: HashMap<String, usize>,
    pub(super) report: Report,
}

impl Audit {
    fn new(data_dir: &Path, cwd: &Path) -> Audit {
        Audit {
            data_dir: normalize(data_dir),
            cwd: normalize(cwd),
            pending: HashMap::new(),
            exists: HashSet::new(),
            dirs: HashSet::new(),
            records: HashMap::new(),
            syncs: HashMap::new(),
            range_syncs: HashMap::new(),
            names: HashMap::new(),
            answers: Vec::new(),
            awaiting_body: HashMap::new(),
            report: Report::default(),
        }
    }

    /// A name whose changes are tracked: the data_dir's own and those under it.
    fn audited_name(&self, p: &Path) -> bool {
        p.starts_with(&self.data_dir)
    }

    /// A write-ahead log segment: `data_dir/log/*.log`.
    fn is_segment(&self, p: &Path) -> bool {
        p.parent() == Some(&self.data_dir.join("log")) && p.extension().is_some_and(|e| e == "log")
    }

    /// The path of an fd argument, if it is a file (or directory) path.
    pub(super) fn fd_path(arg: &str) -> Option<PathBuf> {
        let (a, _) = unescape(annotation(arg)?.as_bytes(), false)?;
        let a = String::from_utf8_lossy(&a).into_owned();
        let a = a.strip_suffix(" (deleted)").unwrap_or(&a);
        a.starts_with('/').then(|| normalize(Path::new(a)))
    }

    /// A path argument resolved against a dirfd argument (or the cwd).
    fn resolve(&self, dirfd: Option<&str>, arg: &str) -> Option<PathBuf> {
        let p = PathBuf::from(unquote(arg)?);
        if p.is_absolute() {
            return Some(normalize(&p));
        }
        let base = match dirfd.and_then(Self::fd_path) {
            Some(b) => b,
            None => self.cwd.clone(),
        };
        Some(normalize(&base.join(p)))
    }

    fn unreadable(&mut self, line: usize, text: &str, why: &str) {
        self.report.unreadable_count += 1;
        if self.report.unreadable.len() < KEEP {
            self.report
                .unreadable
                .push(format!("line {line}: {why}: {}", short(text)));
        }
    }

    /// Data written to a socket: a 200's status line, or the body of one.
    fn socket_write(&mut self, line: usize, text: &str, socket: &str, data: &str) {
        let data = strings(data);
        if data.starts_with(b"HTTP/") {
            self.awaiting_body.remove(socket);
            if data.starts_with(b"HTTP/1.1 200") {
                let id = webhook_id(&data);
                self.answers.push(Answer {
                    line,
                    text: short(text),
                    id,
                });
                if id.is_none() {
                    self.awaiting_body
                        .insert(socket.to_string(), self.answers.len() - 1);
                }
            }
        } else if let Some(&i) = self.awaiting_body.get(socket) {
            if let Some(id) = webhook_id(&data) {
                self.answers[i].id = Some(id);
                self.awaiting_body.remove(socket);
            }
        }
    }

    /// A write to a log segment: the records whose heads it carries.
    fn segment_write(
        &mut self,
        line: usize,
        text: &str,
        path: PathBuf,
        name: &str,
        a: &[&str],
    ) -> Pending {
        let arg = |i: usize| a.get(i).copied().unwrap_or("");
        let bufs = match name {
            "write" | "pwrite64" => unquote_bytes(arg(1))
                .zip(arg(2).parse().ok())
                .map(|b| vec![b]),
            "writev" | "pwritev" | "pwritev2" => {
                iovs(arg(1)).filter(|v| arg(2).parse() == Ok(v.len()))
            }
            _ => return Pending::Ignore,
        };
        let Some(bufs) = bufs else {
            self.unreadable(line, text, "its buffers are not printed whole");
            return Pending::Ignore;
        };
        let found = match records_in(&bufs) {
            Ok(found) => found,
            Err(why) => {
                self.unreadable(line, text, &why);
                return Pending::Ignore;
            }
        };
        let mut out = Vec::new();
        for (id, end) in found {
            let writes = self.records.entry(id).or_default();
            writes.push(RecordWrite {
                path: path.clone(),
                start: line,
                end: WriteEnd::Never,
            });
            out.push((id, writes.len() - 1, end));
            self.report.record_writes += 1;
        }
        Pending::Records(out)
    }

    /// A call starts at `line`.
    fn start(&mut self, line: usize, text: &str, name: &str, args: &str) -> Pending {
        let a = split_args(args);
        let arg = |i: usize| a.get(i).copied().unwrap_or("");
        let name_change = |p: Option<PathBuf>, audit: &Audit| p.filter(|p| audit.audited_name(p));
        match name {
            "write" | "writev" | "sendto" | "sendmsg" | "pwrite64" | "pwritev" | "pwritev2" => {
                let fd = arg(0);
                if let Some(socket) = annotation(fd).filter(|a| is_socket(a)) {
                    self.socket_write(line, text, socket, arg(1));
                    Pending::Ignore
                } else if let Some(p) = Self::fd_path(fd).filter(|p| self.is_segment(p)) {
                    self.segment_write(line, text, p, name, &a)
                } else {
                    Pending::Ignore
                }
            }
            "fsync" | "fdatasync" => match Self::fd_path(arg(0)) {
                Some(path) => Pending::Sync { path, start: line },
                None => Pending::Ignore,
            },
            // No barrier (see the top of the file); noted for reports only.
            "sync_file_range" => {
                if let Some(p) = Self::fd_path(arg(0)) {
                    self.range_syncs.entry(p).or_default().push(line);
                }
                Pending::Ignore
            }
            "openat" => {
                let flags = arg(2);
                match name_change(self.resolve(Some(arg(0)), arg(1)), self) {
                    // O_CREAT creates a name only if none is there; O_EXCL
                    // always does (or fails).
                    Some(p)
                        if flags.contains("O_CREAT")
                            && (flags.contains("O_EXCL") || !self.exists.contains(&p)) =>
                    {
                        Pending::Create(p)
                    }
                    _ => Pending::Ignore,
                }
            }
            "mkdir" | "mkdirat" => {
                let p = if name == "mkdir" {
                    self.resolve(None, arg(0))
                } else {
                    self.resolve(Some(arg(0)), arg(1))
                };
                name_change(p, self).map_or(Pending::Ignore, Pending::CreateDir)
            }
            "rename" | "renameat" | "renameat2" => {
                let (from, to) = if name == "rename" {
                    (self.resolve(None, arg(0)), self.resolve(None, arg(1)))
                } else {
                    (
                        self.resolve(Some(arg(0)), arg(1)),
                        self.resolve(Some(arg(2)), arg(3)),
                    )
                };
                match (from, to) {
                    (Some(f), Some(t)) if self.audited_name(&f) || self.audited_name(&t) => {
                        Pending::Rename(f, t)
                    }
                    _ => Pending::Ignore,
                }
            }
            "link" | "linkat" => {
                let p = if name == "link" {
                    self.resolve(None, arg(1))
                } else {
                    self.resolve(Some(arg(2)), arg(3))
                };
                name_change(p, self).map_or(Pending::Ignore, Pending::Create)
            }
            "unlink" | "unlinkat" | "rmdir" => {
                let p = if name == "unlinkat" {
                    self.resolve(Some(arg(0)), arg(1))
                } else {
                    self.resolve(None, arg(0))
                };
                name_change(p, self).map_or(Pending::Ignore, Pending::Remove)
            }
            // close and anything else change nothing the audit tracks.
            _ => Pending::Ignore,
        }
    }

    fn created(&mut self, p: PathBuf, line: usize, dir: bool) {
        if self.audited_name(&p) {
            self.names
                .entry(p.clone())
                .or_default()
                .push(NameEvent::Created(line));
            if dir {
                self.dirs.insert(p.clone());
            }
            self.exists.insert(p);
        }
    }

    /// `p` and every name under it are gone.
    fn removed(&mut self, p: &Path, line: usize) {
        for (name, events) in self.names.iter_mut() {
            if name.starts_with(p) {
                events.push(NameEvent::Removed(line));
            }
        }
        self.exists.retain(|e| !e.starts_with(p));
        self.dirs.retain(|e| !e.starts_with(p));
    }

    /// A call completes at `line`.
    fn finish(&mut self, line: usize, pending: Pending, ret: &Ret) {
        let ok = matches!(ret, Ret::Ok(_));
        match pending {
            Pending::Ignore => {}
            Pending::Records(found) => {
                for (id, i, end) in found {
                    let w = &mut self.records.get_mut(&id).unwrap()[i];
                    w.end = match ret {
                        Ret::Ok(n) if written(n) >= end => WriteEnd::Done(line),
                        Ret::Ok(_) => WriteEnd::Short(line),
                        Ret::Err => WriteEnd::Failed,
                        Ret::Unknown => WriteEnd::Never,
                    };
                }
            }
            Pending::Sync { path, start } if ok => {
                if path.starts_with(&self.data_dir)
                    && path != self.data_dir
                    && !path.starts_with(self.data_dir.join(SLED))
                    && !self.dirs.contains(&path)
                {
                    self.report.file_syncs += 1;
                }
                self.syncs.entry(path).or_default().push((start, line));
            }
            Pending::Create(p) if ok => self.created(p, line, false),
            Pending::CreateDir(p) if ok => self.created(p, line, true),
            Pending::Rename(from, to) if ok => {
                let dir = self.dirs.contains(&from);
                // What is known of the names under a renamed directory is
                // dropped: they are not seen created under the new name.
                self.removed(&from, line);
                self.removed(&to, line);
                self.created(to, line, dir);
            }
            Pending::Remove(p) if ok => self.removed(&p, line),
            // A failed or unfinished call changed nothing the audit credits.
            Pending::Sync { .. }
            | Pending::Create(_)
            | Pending::CreateDir(_)
            | Pending::Rename(..)
            | Pending::Remove(_) => {}
        }
    }

    fn line(&mut self, n: usize, text: &str) {
        self.report.lines += 1;
        match parse_line(text) {
            Line::Whole {
                name, args, ret, ..
            } => {
                let p = self.start(n, text, name, args);
                self.finish(n, p, &ret);
            }
            Line::Start { pid, name, args } => {
                let p = self.start(n, text, name, args);
                // A call still pending for this pid never completed.
                self.pending.insert(pid, p);
            }
            Line::Resumed { pid, ret } => {
                if let Some(p) = self.pending.remove(&pid) {
                    self.finish(n, p, &ret);
                }
            }
            Line::Other => {}
        }
    }

    /// `path` had an fsync/fdatasync start after line `after` and complete
    /// before line `before`.
    fn synced(&self, path: &Path, after: usize, before: usize) -> bool {
        self.syncs
            .get(path)
            .is_some_and(|s| s.iter().any(|&(start, end)| start > after && end < before))
    }

    /// The name `name`, which a write at line `written` reached, is durable
    /// at line `at`.
    fn name_durable(&self, name: &Path, written: usize, at: usize) -> Result<(), String> {
        let events = self.names.get(name).map(Vec::as_slice).unwrap_or_default();
        let created = events
            .iter()
            .filter_map(|e| match *e {
                NameEvent::Created(l) if l < written => Some(l),
                _ => None,
            })
            .next_back()
            .ok_or_else(|| {
                format!(
                    "{} is not seen created before the write (the data_dir starts empty)",
                    name.display()
                )
            })?;
        if let Some(r) = events.iter().find_map(|e| match *e {
            NameEvent::Removed(l) if l > created && l < at => Some(l),
            _ => None,
        }) {
            return Err(format!(
                "{} (created at line {created}) is removed or renamed at line {r}, before the 200",
                name.display()
            ));
        }
        let parent = name.parent().unwrap_or(name);
        if !self.synced(parent, created, at) {
            return Err(format!(
                "the name {} (created at line {created}) is not durable: no fsync/fdatasync of {} \
                 started after that and completed before the 200",
                name.display(),
                parent.display()
            ));
        }
        Ok(())
    }

    /// The record a write `w` carried is durable at line `at`.
    fn durable(&self, w: &RecordWrite, at: usize) -> Result<(), String> {
        let (start, path) = (w.start, w.path.display());
        let done = match w.end {
            _ if start > at => {
                return Err(format!(
                    "written to {path} only at line {start}, after the 200"
                ));
            }
            WriteEnd::Done(d) if d < at => d,
            WriteEnd::Done(d) => {
                return Err(format!(
                    "the write to {path} (line {start}) completes only at line {d}, after the 200"
                ));
            }
            WriteEnd::Short(d) => {
                return Err(format!(
                    "the write to {path} (line {start}) is short (completed at line {d} without \
                     all of the record)"
                ));
            }
            WriteEnd::Failed => return Err(format!("the write to {path} (line {start}) failed")),
            WriteEnd::Never => {
                return Err(format!(
                    "the write to {path} (line {start}) never completes"
                ));
            }
        };
        if !self.synced(&w.path, done, at) {
            let mut why = format!(
                "no fsync/fdatasync of {path} started after the write carrying the record \
                 completed (line {done}) and completed before the 200"
            );
            let ranges = self.range_syncs.get(&w.path).map(Vec::as_slice);
            if let Some(l) = ranges
                .unwrap_or_default()
                .iter()
                .find(|&&l| l > done && l < at)
            {
                why.push_str(&format!(" (the sync_file_range at line {l} is no barrier)"));
            }
            return Err(why);
        }
        // The segment's name in log/, log's in the data_dir, the data_dir's
        // in its parent.
        for name in w
            .path
            .ancestors()
            .take_while(|p| p.starts_with(&self.data_dir))
        {
            self.name_durable(name, start, at)?;
        }
        Ok(())
    }

    /// Judges each 200 against everything the trace showed.
    fn judge(&mut self) {
        let answers = std::mem::take(&mut self.answers);
        for a in &answers {
            self.report.oks += 1;
            let why = match a.id {
                None => vec!["its body names no webhook id".to_string()],
                Some(id) => {
                    self.report.with_id += 1;
                    match self.records.get(&id) {
                        None => vec![format!(
                            "acknowledged but never written to the log: no write to \
                             {}/log/*.log carried record {id:016x}",
                            self.data_dir.display()
                        )],
                        Some(writes) => {
                            self.report.matched += 1;
                            let verdicts: Vec<_> =
                                writes.iter().map(|w| self.durable(w, a.line)).collect();
                            if verdicts.iter().any(Result::is_ok) {
                                continue;
                            }
                            verdicts.into_iter().filter_map(Result::err).collect()
                        }
                    }
                }
            };
            self.report.violation_count += 1;
            if self.report.violations.len() < KEEP {
                self.report.violations.push(Violation {
                    line: a.line,
                    text: a.text.clone(),
                    id: a.id,
                    why,
                });
            }
        }
    }
}

/// Replays a trace; line numbers are 1-based.
pub(super) fn audit(trace: &str, data_dir: &Path, cwd: &Path) -> Report {
    let mut a = Audit::new(data_dir, cwd);
    for (i, l) in trace.lines().enumerate() {
        a.line(i + 1, l);
    }
    a.judge();
    a.report
}
