//! fsync audit, from outside the process: the real `shoprelay` binary runs
//! under `strace -f`, takes webhooks on a fresh `data_dir` (one that does not
//! exist yet, so first-start directory creation is audited too), and the trace
//! is replayed against a model of what is durable. The test proves that no
//! `HTTP/1.1 200` is written to a socket while the `data_dir` holds bytes that
//! were written but not yet synced, or a directory entry (a created, renamed
//! or removed name) whose directory was not yet synced.
//!
//! The model, line by line in trace order:
//! - a `write`/`writev`/`pwrite64`/`pwritev`/`pwritev2`/`ftruncate`/`fallocate`
//!   on a file under the `data_dir` makes that file dirty from the line where
//!   the call *starts* (the bytes may reach the page cache at any point after);
//! - an `fsync`/`fdatasync` of that file makes it clean again, but only at the
//!   line where the sync *completes* successfully, and only for writes that had
//!   completed before the sync started (a sync does not cover a write that
//!   overlaps it);
//! - a new name (`openat` with `O_CREAT` of a name not known to exist, or
//!   with `O_EXCL`; `mkdir*`, `link*`), a rename (both directories) or a
//!   removal (`unlink*`, `rmdir`) makes the directory holding the name dirty,
//!   until an `fsync`/`fdatasync` of that directory: syncing a file does not
//!   make its name durable. The `data_dir` itself is such a name, so its
//!   parent must be synced after it is created;
//! - an `HTTP/1.1 200` written to a socket while anything is dirty is a
//!   violation.
//!
//! `sync_file_range` does not count as a sync: it starts (or waits for)
//! writeback of a range of the page cache, but it does not flush the disk's
//! write cache and does not write the file's metadata (its size, the blocks
//! an append allocated), so after a power cut the range can still be missing.
//! Its man page says so: "None of these operations writes out the file's
//! metadata. Therefore, unless the application is strictly performing
//! overwrites of already-instantiated disk blocks, there are no guarantees
//! that the data will be available after a crash." sled 0.34 flushes its log
//! with it (appends, not overwrites); only `fsync` and `fdatasync` are
//! barriers here.
//!
//! What the audit cannot see: writes through a shared `mmap` or `io_uring`
//! (the relay is assumed to use neither for its data), and `chdir` (relative
//! paths are resolved against the directory the relay is started in).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::relay::{Dest, Opts, SECRET, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, until, within};

/// What under the `data_dir` the audit does not rely on, as paths relative to
/// it; a listed path and everything under it are left out (data writes, names
/// created or removed in it, and the path's own name).
///
/// - `index`: sled, the index. It is rebuilt from the write-ahead log
///   (`log/*.log`, audited) and made durable by checkpoints, not before each
///   200. The checkpoint itself, `data_dir/checkpoint`, is written via a tmp
///   file, fsync, rename and a directory fsync, and IS audited like everything
///   else.
const EXCLUDED: &[&str] = &["index"];

/// The calls strace records: everything that writes, syncs or changes a name.
/// (`rmdir`, `link` and `linkat` beyond the list the audit started with: they
/// change names too.)
const TRACED: &str = "write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync,\
                      sync_file_range,openat,mkdir,mkdirat,rename,renameat,renameat2,unlink,\
                      unlinkat,rmdir,link,linkat,ftruncate,fallocate,close";

/// How many webhooks are sent one at a time, then how many at once.
const SEQUENTIAL: u64 = 40;
const BURST: u64 = 40;

// ---------------------------------------------------------------------------
// The strace line parser.

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
enum Ret {
    Ok(String),
    Err,
    /// `= ?`: the process went away mid-call; nothing is assumed to have happened.
    Unknown,
}

/// One line of `strace -f -o` output.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    /// `PID name(args) = ret`
    Whole {
        pid: u32,
        name: &'a str,
        args: &'a str,
        ret: Ret,
    },
    /// `PID name(args <unfinished ...>`
    Start {
        pid: u32,
        name: &'a str,
        args: &'a str,
    },
    /// `PID <... name resumed>...) = ret`
    Resumed { pid: u32, ret: Ret },
    /// Signals, exits, anything else.
    Other,
}

fn parse_ret(s: &str) -> Ret {
    let s = s.trim();
    if s.starts_with('?') {
        Ret::Unknown
    } else if s.starts_with("-1 ") || s == "-1" {
        Ret::Err
    } else {
        Ret::Ok(s.to_string())
    }
}

/// Splits `text) = ret` at the last `)`-then-spaces-then-`= ` (strace pads
/// short calls with spaces before the `=`).
fn split_ret(s: &str) -> Option<(&str, Ret)> {
    let mut end = s.len();
    while let Some(eq) = s[..end].rfind(" = ") {
        let before = s[..eq].trim_end();
        if let Some(args) = before.strip_suffix(')') {
            return Some((args, parse_ret(&s[eq + 3..])));
        }
        end = eq;
    }
    None
}

fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim_end();
    let Some((pid, rest)) = line.split_once(' ') else {
        return Line::Other;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return Line::Other;
    };
    let rest = rest.trim_start();
    if let Some(resumed) = rest.strip_prefix("<... ") {
        return match split_ret(resumed) {
            Some((_, ret)) => Line::Resumed { pid, ret },
            None => Line::Other,
        };
    }
    let Some(open) = rest.find('(') else {
        return Line::Other;
    };
    let name = &rest[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Line::Other;
    }
    let after = &rest[open + 1..];
    if let Some(args) = after.strip_suffix("<unfinished ...>") {
        return Line::Start {
            pid,
            name,
            args: args.trim_end().trim_end_matches(',').trim_end(),
        };
    }
    match split_ret(after) {
        Some((args, ret)) => Line::Whole {
            pid,
            name,
            args,
            ret,
        },
        None => Line::Other,
    }
}

/// Splits an argument list at its top-level commas, keeping strings, `[]`,
/// `{}`, `()` and `-yy` annotations (`3</path>`, `9<TCP:[a->b]>`,
/// `0</dev/null<char 1:3>>`) whole.
fn split_args(args: &str) -> Vec<&str> {
    let b = args.as_bytes();
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i32);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i),
            b'[' | b'{' | b'(' => depth += 1,
            b']' | b'}' | b')' => depth -= 1,
            // An annotation opens right after an fd number or AT_FDCWD.
            b'<' if i > 0 && b[i - 1].is_ascii_alphanumeric() => i = annotation_end(b, i),
            b',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = args[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// The index of the quote closing the string opened at `open`.
fn string_end(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < b.len() && b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i
}

/// The index of the `>` closing the annotation opened at `open`; brackets
/// inside it (`[a->b]`) are skipped, nested annotations counted.
fn annotation_end(b: &[u8], open: usize) -> usize {
    let (mut level, mut bracket) = (1, 0);
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'[' => bracket += 1,
            b']' => bracket -= 1,
            b'<' if bracket == 0 => level += 1,
            b'>' if bracket == 0 => {
                level -= 1;
                if level == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The path in an fd argument's annotation: `3</a/b>` gives `/a/b`.
fn annotation(arg: &str) -> Option<&str> {
    let open = arg.find('<')?;
    arg[open + 1..].strip_suffix('>')
}

/// A quoted C string as strace prints it (file names are never truncated).
fn unquote(arg: &str) -> Option<String> {
    let b = arg.strip_prefix('"')?.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
            b'\\' => {
                i += 1;
                match *b.get(i)? {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'x' => {
                        let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        // One to three octal digits.
                        let n = b[i..]
                            .iter()
                            .take(3)
                            .take_while(|c| (b'0'..=b'7').contains(c))
                            .count();
                        let oct = std::str::from_utf8(&b[i..i + n]).ok()?;
                        out.push(u8::from_str_radix(oct, 8).ok()?);
                        i += n - 1;
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    None
}

/// `.` and `..` resolved without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The durability model.

/// One call that left something dirty.
#[derive(Debug, Clone)]
struct Dirt {
    line: usize,
    call: String,
    /// The call has completed: a sync that starts from now on covers it.
    done: bool,
}

/// What a started call does when it completes.
#[derive(Debug)]
enum Effect {
    None,
    Create(PathBuf),
    CreateDir(PathBuf),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

#[derive(Debug)]
enum Pending {
    /// A call that made paths dirty (by generation), with its effect on names.
    Marks {
        marks: Vec<(PathBuf, u64)>,
        effect: Effect,
    },
    /// A sync of `path` covering the generations done when it started.
    Sync {
        path: PathBuf,
        covers: Vec<u64>,
    },
    Ignore,
}

/// A 200 written while something was dirty.
#[derive(Debug)]
struct Violation {
    line: usize,
    text: String,
    /// Path, line of the oldest dirty-making call, that call.
    dirty: Vec<(PathBuf, usize, String)>,
}

/// The outcome of an audit.
#[derive(Debug, Default)]
struct Report {
    lines: usize,
    /// `HTTP/1.1 200` writes to sockets.
    oks: usize,
    /// Successful fsync/fdatasync calls on audited files (not directories).
    file_syncs: usize,
    /// All violations, the first few kept in `violations`.
    violation_count: usize,
    violations: Vec<Violation>,
}

const KEEP_VIOLATIONS: usize = 5;

impl Report {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} of {} `HTTP/1.1 200` writes happened while the data_dir held unsynced state \
             ({} trace lines, {} file syncs); the first {}:\n",
            self.violation_count,
            self.oks,
            self.lines,
            self.file_syncs,
            self.violations.len()
        );
        for v in &self.violations {
            s.push_str(&format!("- line {}: {}\n  dirty:\n", v.line, v.text));
            for (path, line, call) in &v.dirty {
                s.push_str(&format!(
                    "    {} (since line {line}: {call})\n",
                    path.display()
                ));
            }
        }
        s
    }
}

struct Audit {
    data_dir: PathBuf,
    cwd: PathBuf,
    /// Per path, the dirty-making calls not yet covered by a sync.
    dirty: HashMap<PathBuf, BTreeMap<u64, Dirt>>,
    next_gen: u64,
    /// Per pid, the call it started and has not completed.
    pending: HashMap<u32, Pending>,
    /// Names known to exist (the data_dir starts empty, so every name under
    /// it is created in the trace).
    exists: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    report: Report,
}

fn short(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

fn is_socket(fd_path: &str) -> bool {
    ["TCP:", "TCPv6:", "UDP:", "UDPv6:", "UNIX:", "socket:"]
        .iter()
        .any(|p| fd_path.starts_with(p))
}

impl Audit {
    fn new(data_dir: &Path, cwd: &Path) -> Audit {
        Audit {
            data_dir: normalize(data_dir),
            cwd: normalize(cwd),
            dirty: HashMap::new(),
            next_gen: 0,
            pending: HashMap::new(),
            exists: HashSet::new(),
            dirs: HashSet::new(),
            report: Report::default(),
        }
    }

    fn excluded(&self, p: &Path) -> bool {
        EXCLUDED
            .iter()
            .any(|e| p.starts_with(self.data_dir.join(e)))
    }

    /// Data written to `p` is relied on.
    fn audited_file(&self, p: &Path) -> bool {
        p != self.data_dir && p.starts_with(&self.data_dir) && !self.excluded(p)
    }

    /// A change to the name `p` is relied on (the data_dir's own name too).
    fn audited_name(&self, p: &Path) -> bool {
        p.starts_with(&self.data_dir) && !self.excluded(p)
    }

    /// The path of an fd argument, if it is a file (or directory) path.
    fn fd_path(arg: &str) -> Option<PathBuf> {
        let a = annotation(arg)?;
        let a = a.strip_suffix(" (deleted)").unwrap_or(a);
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

    fn mark(&mut self, path: PathBuf, line: usize, call: &str) -> (PathBuf, u64) {
        let g = self.next_gen;
        self.next_gen += 1;
        self.dirty.entry(path.clone()).or_default().insert(
            g,
            Dirt {
                line,
                call: short(call),
                done: false,
            },
        );
        (path, g)
    }

    /// Marks the directory holding the name `p`, if the name is audited.
    fn mark_name(&mut self, marks: &mut Vec<(PathBuf, u64)>, p: &Path, line: usize, call: &str) {
        if self.audited_name(p) {
            if let Some(parent) = p.parent() {
                marks.push(self.mark(parent.to_path_buf(), line, call));
            }
        }
    }

    fn check_200(&mut self, line: usize, text: &str) {
        self.report.oks += 1;
        let mut dirty: Vec<(PathBuf, usize, String)> = self
            .dirty
            .iter()
            .filter_map(|(p, m)| {
                m.values()
                    .next()
                    .map(|d| (p.clone(), d.line, d.call.clone()))
            })
            .collect();
        if dirty.is_empty() {
            return;
        }
        self.report.violation_count += 1;
        if self.report.violations.len() < KEEP_VIOLATIONS {
            dirty.sort_by_key(|d| d.1);
            self.report.violations.push(Violation {
                line,
                text: short(text),
                dirty,
            });
        }
    }

    /// A call starts at `line`.
    fn start(&mut self, line: usize, text: &str, name: &str, args: &str) -> Pending {
        let a = split_args(args);
        let arg = |i: usize| a.get(i).copied().unwrap_or("");
        let mut marks = Vec::new();
        let effect = match name {
            "write" | "writev" | "sendto" | "sendmsg" | "pwrite64" | "pwritev" | "pwritev2"
            | "ftruncate" | "fallocate" => {
                let fd = arg(0);
                if annotation(fd).is_some_and(is_socket) {
                    if args.contains("\"HTTP/1.1 200") {
                        self.check_200(line, text);
                    }
                } else if let Some(p) = Self::fd_path(fd).filter(|p| self.audited_file(p)) {
                    marks.push(self.mark(p, line, text));
                }
                Effect::None
            }
            "fsync" | "fdatasync" => {
                let Some(path) = Self::fd_path(arg(0)) else {
                    return Pending::Ignore;
                };
                let covers = self
                    .dirty
                    .get(&path)
                    .map(|m| m.iter().filter(|(_, d)| d.done).map(|(g, _)| *g).collect())
                    .unwrap_or_default();
                return Pending::Sync { path, covers };
            }
            "openat" => {
                let (Some(p), flags) = (self.resolve(Some(arg(0)), arg(1)), arg(2)) else {
                    return Pending::Ignore;
                };
                if !flags.contains("O_CREAT") {
                    return Pending::Ignore;
                }
                // O_CREAT creates a name only if none is there: the data_dir
                // starts empty, so a name is new unless created earlier in
                // the trace (and not removed since). O_EXCL always is new.
                if flags.contains("O_EXCL") || !self.exists.contains(&p) {
                    self.mark_name(&mut marks, &p, line, text);
                } else if flags.contains("O_TRUNC") && self.audited_file(&p) {
                    marks.push(self.mark(p.clone(), line, text));
                }
                Effect::Create(p)
            }
            "mkdir" | "mkdirat" => {
                let p = if name == "mkdir" {
                    self.resolve(None, arg(0))
                } else {
                    self.resolve(Some(arg(0)), arg(1))
                };
                let Some(p) = p else {
                    return Pending::Ignore;
                };
                self.mark_name(&mut marks, &p, line, text);
                Effect::CreateDir(p)
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
                let (Some(from), Some(to)) = (from, to) else {
                    return Pending::Ignore;
                };
                self.mark_name(&mut marks, &from, line, text);
                self.mark_name(&mut marks, &to, line, text);
                Effect::Rename(from, to)
            }
            "link" | "linkat" => {
                let p = if name == "link" {
                    self.resolve(None, arg(1))
                } else {
                    self.resolve(Some(arg(2)), arg(3))
                };
                let Some(p) = p else {
                    return Pending::Ignore;
                };
                self.mark_name(&mut marks, &p, line, text);
                Effect::Create(p)
            }
            "unlink" | "unlinkat" | "rmdir" => {
                let p = if name == "unlinkat" {
                    self.resolve(Some(arg(0)), arg(1))
                } else {
                    self.resolve(None, arg(0))
                };
                let Some(p) = p else {
                    return Pending::Ignore;
                };
                self.mark_name(&mut marks, &p, line, text);
                Effect::Remove(p)
            }
            // sync_file_range is no barrier (see the top of the file); close
            // and anything else change nothing the model tracks.
            _ => return Pending::Ignore,
        };
        Pending::Marks { marks, effect }
    }

    fn unmark(&mut self, path: &Path, g: u64) {
        if let Some(m) = self.dirty.get_mut(path) {
            m.remove(&g);
            if m.is_empty() {
                self.dirty.remove(path);
            }
        }
    }

    /// Moves everything known about `from` (and under it) to `to`.
    fn rename(&mut self, from: &Path, to: &Path) {
        let moved = |p: &Path| p.strip_prefix(from).ok().map(|rest| to.join(rest));
        let keys: Vec<PathBuf> = self.dirty.keys().cloned().collect();
        for k in keys {
            if let Some(n) = moved(&k) {
                let m = self.dirty.remove(&k).unwrap_or_default();
                self.dirty.entry(n).or_default().extend(m);
            }
        }
        for set in [&mut self.exists, &mut self.dirs] {
            let old: Vec<PathBuf> = set
                .iter()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
            for p in old {
                set.remove(&p);
                if let Some(n) = moved(&p) {
                    set.insert(n);
                }
            }
        }
        self.exists.insert(to.to_path_buf());
    }

    /// A call completes.
    fn finish(&mut self, pending: Pending, ret: &Ret) {
        match pending {
            Pending::Ignore => {}
            Pending::Marks { marks, effect } => {
                match ret {
                    // A failed call changed nothing.
                    Ret::Err => {
                        for (p, g) in &marks {
                            self.unmark(p, *g);
                        }
                        return;
                    }
                    // Unknown: the marks stay, never covered (not done).
                    Ret::Unknown => return,
                    Ret::Ok(_) => {
                        for (p, g) in &marks {
                            if let Some(d) = self.dirty.get_mut(p).and_then(|m| m.get_mut(g)) {
                                d.done = true;
                            }
                        }
                    }
                }
                match effect {
                    Effect::None => {}
                    Effect::Create(p) => {
                        self.exists.insert(p);
                    }
                    Effect::CreateDir(p) => {
                        self.exists.insert(p.clone());
                        self.dirs.insert(p);
                    }
                    Effect::Rename(from, to) => self.rename(&from, &to),
                    Effect::Remove(p) => {
                        // The removed file's data is relied on by nobody; the
                        // removal itself keeps its directory dirty until synced.
                        self.exists.retain(|e| !e.starts_with(&p));
                        self.dirs.retain(|e| !e.starts_with(&p));
                        self.dirty.retain(|k, _| !k.starts_with(&p));
                    }
                }
            }
            Pending::Sync { path, covers } => {
                if !matches!(ret, Ret::Ok(_)) {
                    return;
                }
                if self.audited_file(&path) && !self.dirs.contains(&path) {
                    self.report.file_syncs += 1;
                }
                for g in covers {
                    self.unmark(&path, g);
                }
            }
        }
    }

    fn line(&mut self, n: usize, text: &str) {
        self.report.lines += 1;
        match parse_line(text) {
            Line::Whole {
                name, args, ret, ..
            } => {
                let p = self.start(n, text, name, args);
                self.finish(p, &ret);
            }
            Line::Start { pid, name, args } => {
                let p = self.start(n, text, name, args);
                // A call still pending for this pid never completed: its
                // marks stay, never covered.
                self.pending.insert(pid, p);
            }
            Line::Resumed { pid, ret } => {
                if let Some(p) = self.pending.remove(&pid) {
                    self.finish(p, &ret);
                }
            }
            Line::Other => {}
        }
    }
}

/// Replays a trace; line numbers are 1-based.
fn audit(trace: &str, data_dir: &Path, cwd: &Path) -> Report {
    let mut a = Audit::new(data_dir, cwd);
    for (i, l) in trace.lines().enumerate() {
        a.line(i + 1, l);
    }
    a.report
}

// ---------------------------------------------------------------------------
// The parser on hand-written lines.

const D: &str = "/t/data";

fn run(trace: &str) -> Report {
    audit(trace, Path::new(D), Path::new("/t"))
}

/// A 200 on a socket, as writev prints it with `-s 16`.
const OK_200: &str = r#"7 writev(9<TCP:[127.0.0.1:8080->127.0.0.1:40000]>, [{iov_base="HTTP/1.1 200 OK\r"..., iov_len=120}, {iov_base="{\"status\":\"queu"..., iov_len=20}], 2) = 140"#;

#[test]
fn parser_reads_strace_lines() {
    assert_eq!(
        parse_line("12 close(3</t/a b>)            = 0"),
        Line::Whole {
            pid: 12,
            name: "close",
            args: "3</t/a b>",
            ret: Ret::Ok("0".into())
        }
    );
    assert_eq!(
        parse_line("12 fsync(3</t/data/x> <unfinished ...>"),
        Line::Start {
            pid: 12,
            name: "fsync",
            args: "3</t/data/x>"
        }
    );
    assert_eq!(
        parse_line("12 <... fsync resumed>)            = 0"),
        Line::Resumed {
            pid: 12,
            ret: Ret::Ok("0".into())
        }
    );
    assert_eq!(
        parse_line("12 mkdir(\"/t\", 0777) = -1 EEXIST (File exists)"),
        Line::Whole {
            pid: 12,
            name: "mkdir",
            args: "\"/t\", 0777",
            ret: Ret::Err
        }
    );
    assert_eq!(parse_line("12 +++ exited with 0 +++"), Line::Other);
    let args =
        split_args(r#"9<TCP:[127.0.0.1:1->127.0.0.1:2]>, [{iov_base="a, \"b", iov_len=3}], 1"#);
    assert_eq!(args.len(), 3, "{args:?}");
    assert_eq!(annotation(args[0]), Some("TCP:[127.0.0.1:1->127.0.0.1:2]"));
    assert_eq!(
        split_args(r#"0</dev/null<char 1:3>>, "x""#),
        vec!["0</dev/null<char 1:3>>", "\"x\""]
    );
    assert_eq!(
        unquote(r#""/t/a\"b\x41\101""#).as_deref(),
        Some("/t/a\"bAA")
    );
    let r = run(OK_200);
    assert_eq!((r.oks, r.violation_count), (1, 0));
}

#[test]
fn dirty_write_then_200_is_a_violation() {
    let r = run(&format!(
        "7 write(5</t/data/log/1.log>, \"abc\", 3) = 3\n{OK_200}\n"
    ));
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
    let v = &r.violations[0];
    assert_eq!(v.line, 2);
    assert_eq!(v.dirty[0].0, Path::new("/t/data/log/1.log"));
    assert_eq!(v.dirty[0].1, 1);
}

#[test]
fn write_fdatasync_then_200_is_fine() {
    let r = run(&format!(
        "7 write(5</t/data/log/1.log>, \"abc\", 3) = 3\n\
         7 fdatasync(5</t/data/log/1.log>) = 0\n{OK_200}\n"
    ));
    assert_eq!(
        (r.oks, r.violation_count, r.file_syncs),
        (1, 0, 1),
        "{}",
        r.describe()
    );
}

#[test]
fn sync_file_range_then_200_is_a_violation() {
    let r = run(&format!(
        "7 pwrite64(5</t/data/log/1.log>, \"abc\", 3, 0) = 3\n\
         7 sync_file_range(5</t/data/log/1.log>, 0, 3, SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER) = 0\n\
         {OK_200}\n"
    ));
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
}

#[test]
fn new_file_without_directory_fsync_then_200_is_a_violation() {
    let create = "7 openat(AT_FDCWD</t>, \"/t/data/log/2.log\", O_RDWR|O_CREAT|O_CLOEXEC, 0666) = 5</t/data/log/2.log>\n\
                  7 write(5</t/data/log/2.log>, \"abc\", 3) = 3\n\
                  7 fsync(5</t/data/log/2.log>) = 0\n";
    let r = run(&format!("{create}{OK_200}\n"));
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
    assert_eq!(r.violations[0].dirty[0].0, Path::new("/t/data/log"));
    // With the directory synced it is fine; opening the same name again with
    // O_CREAT (here relative to a dirfd) creates nothing, so needs no sync.
    let r = run(&format!(
        "{create}7 openat(AT_FDCWD</t>, \"/t/data/log\", O_RDONLY|O_CLOEXEC) = 6</t/data/log>\n\
         7 fsync(6</t/data/log>) = 0\n\
         7 openat(6</t/data/log>, \"2.log\", O_RDWR|O_CREAT|O_CLOEXEC, 0666) = 5</t/data/log/2.log>\n\
         {OK_200}\n"
    ));
    assert_eq!((r.oks, r.violation_count), (1, 0), "{}", r.describe());
    // The same name with O_EXCL (after a removal) is a new name again.
    let r = run(&format!(
        "{create}7 unlink(\"/t/data/log/2.log\") = 0\n\
         7 openat(AT_FDCWD</t>, \"/t/data/log/2.log\", O_RDWR|O_CREAT|O_EXCL, 0666) = 5</t/data/log/2.log>\n\
         7 fsync(5</t/data/log/2.log>) = 0\n{OK_200}\n"
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    assert_eq!(r.violations[0].dirty[0].0, Path::new("/t/data/log"));
}

#[test]
fn creating_the_data_dir_needs_its_parent_synced() {
    let mk = "7 mkdir(\"/t/data\", 0777) = 0\n";
    let r = run(&format!("{mk}{OK_200}\n"));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    assert_eq!(r.violations[0].dirty[0].0, Path::new("/t"));
    let r = run(&format!(
        "{mk}7 openat(AT_FDCWD</t>, \"/t\", O_RDONLY) = 4</t>\n7 fsync(4</t>) = 0\n{OK_200}\n"
    ));
    assert_eq!(r.violation_count, 0, "{}", r.describe());
}

#[test]
fn a_sync_counts_only_when_it_completes_and_only_for_finished_writes() {
    // The 200 goes out while the fdatasync is still running: a violation.
    let r = run(&format!(
        "7 write(5</t/data/log/1.log>, \"abc\", 3) = 3\n\
         7 fdatasync(5</t/data/log/1.log> <unfinished ...>\n\
         {OK_200}\n\
         7 <... fdatasync resumed>) = 0\n"
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    // A write still running when the sync starts is not covered by it.
    let r = run(&format!(
        "8 write(5</t/data/log/1.log>, \"abc\", 3 <unfinished ...>\n\
         7 fdatasync(5</t/data/log/1.log>) = 0\n\
         8 <... write resumed>) = 3\n{OK_200}\n"
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
}

#[test]
fn excluded_paths_and_failed_calls_are_not_dirty() {
    let r = run(&format!(
        "7 mkdir(\"/t/data/index\", 0777) = 0\n\
         7 openat(AT_FDCWD</t>, \"/t/data/index/db\", O_RDWR|O_CREAT, 0666) = 5</t/data/index/db>\n\
         7 pwrite64(5</t/data/index/db>, \"abc\", 3, 0) = 3\n\
         7 mkdir(\"/t/data/log\", 0777) = -1 EEXIST (File exists)\n\
         7 write(2</dev/pts/0>, \"x\", 1) = 1\n{OK_200}\n"
    ));
    assert_eq!((r.oks, r.violation_count), (1, 0), "{}", r.describe());
}

#[test]
fn checkpoint_via_tmp_fsync_rename_dir_fsync_is_fine() {
    let r = run(&format!(
        "7 openat(AT_FDCWD</t>, \"/t/data/checkpoint.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 5</t/data/checkpoint.tmp>\n\
         7 write(5</t/data/checkpoint.tmp>, \"abc\", 3) = 3\n\
         7 fsync(5</t/data/checkpoint.tmp>) = 0\n\
         7 rename(\"/t/data/checkpoint.tmp\", \"/t/data/checkpoint\") = 0\n\
         7 openat(AT_FDCWD</t>, \"/t/data\", O_RDONLY|O_CLOEXEC) = 6</t/data>\n\
         7 fsync(6</t/data>) = 0\n{OK_200}\n"
    ));
    assert_eq!((r.oks, r.violation_count), (1, 0), "{}", r.describe());
    // Without the directory fsync, the rename is not durable.
    let r = run(&format!(
        "7 write(5</t/data/checkpoint.tmp>, \"abc\", 3) = 3\n\
         7 fsync(5</t/data/checkpoint.tmp>) = 0\n\
         7 rename(\"/t/data/checkpoint.tmp\", \"/t/data/checkpoint\") = 0\n{OK_200}\n"
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
}

// ---------------------------------------------------------------------------
// The real binary under strace.

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A local port nobody listens on: the destination is down.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The pids whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn webhook(n: u64) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("fa-{n}")),
        body: format!(r#"{{"id":{n},"email":"f{n}@example.com"}}"#).into_bytes(),
        secret: SECRET,
    }
}

/// strace running the relay. Dropped while still running (a failed test),
/// it kills both, the relay first: killing only strace would leave the relay
/// running, detached.
struct Traced(Child);

impl Traced {
    /// Sends `signal` (e.g. `-TERM`) to the relay, strace's only child.
    fn signal_relay(&self, signal: &str) {
        let relay = children(self.0.id());
        assert_eq!(relay.len(), 1, "strace's children: {relay:?}");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(relay[0].to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {}", relay[0]);
    }

    fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        for pid in children(self.0.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the relay under strace; returns it and the ingest URL once the
/// relay logs that it listens.
async fn spawn_traced(config: &Path, trace: &Path, cwd: &Path) -> (Traced, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("strace")
        .args(["-f", "-q", "-yy", "-s", "16", "-e"])
        .arg(format!("trace={}", TRACED.replace(' ', "")))
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_shoprelay"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strace");
    let stderr = child.stderr.take().unwrap();
    let traced = Traced(child);
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(v["ingest"].as_str().unwrap_or_default().to_string()));
                }
            } else if tx.is_some() {
                seen.push(line);
            }
            // Keep draining so the relay never blocks on a full pipe.
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    let ingest = match within("the traced relay to listen", rx).await {
        Ok(Ok(addr)) => addr,
        Ok(Err(out)) => panic!("the traced relay exited before listening:\n{out}"),
        Err(_) => panic!("the stderr reader stopped"),
    };
    (traced, format!("http://{ingest}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_200_while_the_data_dir_holds_unsynced_state() {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing and CI is set: .ci/run installs it"
        );
        eprintln!("fsync_audit: skipped, strace is not installed (CI unset)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // strace -yy prints resolved paths: audit the canonical ones.
    let base = tmp.path().canonicalize().unwrap();
    let data = base.join("data");
    let config = base.join("relay.toml");
    let trace = base.join("strace.out");
    let opts = Opts {
        dests: vec![Dest {
            name: "down".into(),
            url: format!("http://127.0.0.1:{}/events", closed_port()),
            extra: String::new(),
        }],
        ..Opts::default()
    };
    std::fs::write(&config, toml(&opts, &data)).unwrap();
    assert!(!data.exists());

    let (mut relay, ingest) = spawn_traced(&config, &trace, &base).await;
    let url = format!("{ingest}/webhooks/shopify/acme");
    let c = client();
    for n in 0..SEQUENTIAL {
        let r = within("a webhook's answer", webhook(n).request(&c, &url).send())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "webhook {n}");
    }
    let burst: Vec<_> = (SEQUENTIAL..SEQUENTIAL + BURST)
        .map(|n| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { webhook(n).request(&c, &url).send().await })
        })
        .collect();
    for (i, t) in burst.into_iter().enumerate() {
        let r = within("a burst webhook's answer", t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200, "burst webhook {i}");
    }

    // SIGTERM to the relay; strace exits (and has written the whole trace)
    // once the relay has.
    relay.signal_relay("-TERM");
    until("the relay (and strace) to exit", || relay.exited()).await;

    let text = String::from_utf8_lossy(&std::fs::read(&trace).unwrap()).into_owned();
    let report = audit(&text, &data, &base);
    eprintln!(
        "fsync_audit: {} trace lines, {} `HTTP/1.1 200` writes, {} file syncs, {} violations",
        report.lines, report.oks, report.file_syncs, report.violation_count
    );
    // Sanity: a parser that sees nothing must not pass.
    let sane = report.oks >= (SEQUENTIAL + BURST) as usize && report.file_syncs >= 1;
    if !sane || report.violation_count > 0 {
        // The report names trace lines: keep the trace to read them in.
        let kept = tmp.keep();
        eprintln!(
            "fsync_audit: trace kept in {}",
            kept.join("strace.out").display()
        );
    }
    assert!(
        report.oks >= (SEQUENTIAL + BURST) as usize,
        "only {} `HTTP/1.1 200` writes in the trace",
        report.oks
    );
    assert!(
        report.file_syncs >= 1,
        "no fsync/fdatasync of a file under {} in the trace",
        data.display()
    );
    assert!(report.violation_count == 0, "{}", report.describe());
}
