//! fsync audit, from outside the process: the real `shoprelay` binary runs
//! under `strace -f`, takes webhooks on a fresh `data_dir` (one that does not
//! exist yet, so first-start directory creation is audited too), and the trace
//! is replayed to check what each `HTTP/1.1 200` promises: that the webhook it
//! names is on disk, in the write-ahead log, in a file a restart can find.
//!
//! The log (`data_dir/log/{first_seq:020}.log`) holds records, each written
//! as its own iov(s) of a group commit's `writev`: a head iov of `SRL1`, u32
//! LE length, u32 LE crc, then the payload, version byte `0x01` then the
//! webhook id as u64 LE (bytes 13..21 of the head iov); the body follows in
//! other iovs. The answer's body is `{"status":"queued"|"duplicate",
//! "id":"<16 hex digits>"}`, the same id. A 200 naming id X, written at line
//! L (the line its status line starts on; the body may follow in a later
//! write on the same socket), is a violation unless some write W carrying
//! record X to a segment S satisfies, all before L:
//! - W started before L and completed, with every byte of the record (a
//!   short write does not count);
//! - an `fsync`/`fdatasync` of S started after W completed and completed
//!   successfully (a sync does not cover a write that overlaps it);
//! - each name that makes S reachable is durable: S's name in `log/`, `log`
//!   in the `data_dir`, and the `data_dir`'s name in its parent. Each was
//!   created in the trace (the `data_dir` starts empty) before W started, was
//!   not removed since, and an `fsync`/`fdatasync` of its parent directory
//!   started after the create completed: syncing a file does not make its
//!   name durable.
//!
//! A 200 whose id no log write carried is a violation ("acknowledged but
//! never written to the log"), as is a 200 whose body names no id. Writes in
//! flight at L that no 200 before L relies on (group commit writing batch
//! N+1 while batch N's 200s go out) are fine. Nothing else under the
//! `data_dir` is relied on by a 200: not `index/` (sled, rebuilt from the
//! log), not `checkpoint` (written in the background, via a tmp file).
//!
//! `sync_file_range` does not count as a sync: it starts (or waits for)
//! writeback of a range of the page cache, but it does not flush the disk's
//! write cache and does not write the file's metadata (its size, the blocks
//! an append allocated), so after a power cut the range can still be missing.
//! Its man page says so: "None of these operations writes out the file's
//! metadata. Therefore, unless the application is strictly performing
//! overwrites of already-instantiated disk blocks, there are no guarantees
//! that the data will be available after a crash." Only `fsync` and
//! `fdatasync` are barriers here.
//!
//! What the audit cannot see: writes through a shared `mmap` or `io_uring`
//! (the relay is assumed to use neither for its log), `chdir` (relative paths
//! are resolved against the directory the relay is started in), records
//! whose head is not at the start of a buffer or iov, and an `ftruncate` that
//! cuts a record off. A directory on the chain that is renamed loses what the
//! audit knows of the names in it (its records then fail the check).
//!
//! Until the relay writes this log layout the real-binary test fails: the
//! old store has no `log/` and no `SRL1` records, so every 200 is
//! "acknowledged but never written to the log".

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::relay::{Dest, Opts, SECRET, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, until, within};

/// Where sled keeps the index, relative to the `data_dir`. Nothing there is
/// relied on by a 200; its syncs do not count for the sanity check that the
/// relay syncs files at all.
const SLED: &str = "index";

/// The calls strace records: everything that writes, syncs or changes a name.
const TRACED: &str = "write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync,\
                      sync_file_range,openat,mkdir,mkdirat,rename,renameat,renameat2,unlink,\
                      unlinkat,rmdir,link,linkat,ftruncate,fallocate,close";

/// strace's string limit (`-s`): a string prints at most this many bytes and
/// an iov array at most this many iovs; 1024 is `IOV_MAX`, so a `writev`'s
/// array is never cut, and an answer's headers and body fit whole.
const STRACE_STRLEN: usize = 1024;

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

/// Decodes strace's escapes in `b` up to an unescaped `"` (if `quoted`) or
/// the end; returns the bytes and where decoding stopped (the closing quote's
/// index). `-x` prints a string holding any non-printable byte all as `\xNN`;
/// without it, non-printable bytes are `\n`-style or octal escapes.
fn unescape(b: &[u8], quoted: bool) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' if quoted => return Some((out, i)),
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
                        // One to three octal digits (strace pads to three
                        // when a digit follows).
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
    (!quoted).then_some((out, i))
}

/// A quoted string's bytes as strace prints them (a truncated string, `"ab"...`,
/// gives the bytes printed).
fn unquote_bytes(arg: &str) -> Option<Vec<u8>> {
    let b = arg.strip_prefix('"')?.as_bytes();
    unescape(b, true).map(|(out, _)| out)
}

/// A quoted C string (file names are never truncated).
fn unquote(arg: &str) -> Option<String> {
    unquote_bytes(arg).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Every quoted string in `arg`, decoded and joined: the data of a `write`'s
/// buffer, a `writev`'s iovs or a `sendmsg`'s `msg_iov`.
fn strings(arg: &str) -> Vec<u8> {
    let b = arg.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            match unescape(&b[i + 1..], true) {
                Some((s, end)) => {
                    out.extend(s);
                    i += end + 1;
                }
                None => break,
            }
        }
        i += 1;
    }
    out
}

/// A printed iovec array as (the bytes printed of each iov's base, its
/// `iov_len`); `None` if strace abbreviated the array (`...`) or printed a
/// base it could not read.
fn iovs(arg: &str) -> Option<Vec<(Vec<u8>, u64)>> {
    let inner = arg.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    for el in split_args(inner) {
        let fields = el.strip_prefix('{')?.strip_suffix('}')?;
        let (mut base, mut len) = (None, None);
        for f in split_args(fields) {
            if let Some(v) = f.strip_prefix("iov_base=") {
                base = unquote_bytes(v);
            } else if let Some(v) = f.strip_prefix("iov_len=") {
                len = v.parse().ok();
            }
        }
        out.push((base?, len?));
    }
    Some(out)
}

/// The first bytes of a record's head iov: magic, length, crc, version.
const MAGIC: &[u8] = b"SRL1";
const VERSION: u8 = 0x01;
const ID_AT: usize = 13;

/// The records whose heads a write's buffers carry: (webhook id, the byte
/// offset in the write where the record ends: the next head, or the end).
fn records_in(bufs: &[(Vec<u8>, u64)]) -> Result<Vec<(u64, u64)>, String> {
    let total: u64 = bufs.iter().map(|b| b.1).sum();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = 0;
    for (bytes, len) in bufs {
        if bytes.starts_with(MAGIC) {
            if let Some(last) = out.last_mut() {
                last.1 = at;
            }
            let id = bytes
                .get(ID_AT..ID_AT + 8)
                .filter(|_| bytes[12] == VERSION)
                .ok_or_else(|| {
                    format!(
                        "a record head that does not read as version {VERSION} then a webhook id: {bytes:02x?}"
                    )
                })?;
            out.push((u64::from_le_bytes(id.try_into().unwrap()), total));
        }
        at += len;
    }
    Ok(out)
}

/// The webhook id an answer's body names: `"id":"<16 hex digits>"`.
fn webhook_id(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":\"";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let hex = data.get(at..at + 16)?;
    if data.get(at + 16) != Some(&b'"') || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
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
// What the trace shows, collected in one pass, then judged per 200.

/// How a write that carried a record ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WriteEnd {
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
struct RecordWrite {
    path: PathBuf,
    start: usize,
    end: WriteEnd,
}

/// A change to a name under the `data_dir` (itself included), at the line
/// the call completed.
#[derive(Debug, Clone, Copy)]
enum NameEvent {
    Created(usize),
    Removed(usize),
}

/// An `HTTP/1.1 200` written to a socket.
#[derive(Debug)]
struct Answer {
    line: usize,
    text: String,
    /// The webhook id its body names (the body may come in a later write).
    id: Option<u64>,
}

/// What a started call does when it completes.
#[derive(Debug)]
enum Pending {
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
struct Violation {
    line: usize,
    text: String,
    id: Option<u64>,
    /// Why, per write that carried the record (or why there is none).
    why: Vec<String>,
}

/// The outcome of an audit.
#[derive(Debug, Default)]
struct Report {
    lines: usize,
    /// `HTTP/1.1 200` writes to sockets.
    oks: usize,
    /// 200s whose body names a webhook id.
    with_id: usize,
    /// 200s whose id some write to a log segment carried.
    matched: usize,
    /// Records seen in writes to log segments.
    record_writes: usize,
    /// Successful fsync/fdatasync calls on files under the data_dir (not
    /// directories, not sled's).
    file_syncs: usize,
    /// All violations, the first few kept in `violations`.
    violation_count: usize,
    violations: Vec<Violation>,
    /// Writes to log segments the audit could not read, the first few.
    unreadable_count: usize,
    unreadable: Vec<String>,
}

const KEEP: usize = 5;

impl Report {
    fn describe(&self) -> String {
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

fn short(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

fn is_socket(fd_path: &str) -> bool {
    ["TCP", "UDP", "UNIX", "socket:"]
        .iter()
        .any(|p| fd_path.starts_with(p))
}

/// The byte count a successful write returned.
fn written(ret: &str) -> u64 {
    ret.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Audit {
    data_dir: PathBuf,
    cwd: PathBuf,
    /// Per pid, the call it started and has not completed.
    pending: HashMap<u32, Pending>,
    /// Names under the data_dir known to exist now (it starts empty, so each
    /// is created in the trace), and which of them are directories.
    exists: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    /// Per webhook id, the writes that carried its record.
    records: HashMap<u64, Vec<RecordWrite>>,
    /// Per path, its successful fsync/fdatasync calls: (start line, end line).
    syncs: HashMap<PathBuf, Vec<(usize, usize)>>,
    /// Per path, the lines of its `sync_file_range` calls (named in reports).
    range_syncs: HashMap<PathBuf, Vec<usize>>,
    names: HashMap<PathBuf, Vec<NameEvent>>,
    answers: Vec<Answer>,
    /// Per socket, the 200 whose body has not been seen yet.
    awaiting_body: HashMap<String, usize>,
    report: Report,
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
    fn fd_path(arg: &str) -> Option<PathBuf> {
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
fn audit(trace: &str, data_dir: &Path, cwd: &Path) -> Report {
    let mut a = Audit::new(data_dir, cwd);
    for (i, l) in trace.lines().enumerate() {
        a.line(i + 1, l);
    }
    a.judge();
    a.report
}

// ---------------------------------------------------------------------------
// The audit on hand-written traces.

const D: &str = "/t/data";
const SEG: &str = "/t/data/log/00000000000000000001.log";
const SOCKET: &str = "9<TCP:[127.0.0.1:8080->127.0.0.1:40000]>";

fn run(trace: &str) -> Report {
    audit(trace, Path::new(D), Path::new("/t"))
}

/// The data_dir, `log/` and a segment (O_CREAT|O_EXCL), each name followed
/// by a sync of its parent directory except `unsynced`'s.
fn setup_but(unsynced: &str) -> String {
    let sync = |dir: &str, fd: u32| {
        if dir == unsynced {
            String::new()
        } else {
            format!(
                "7 openat(AT_FDCWD</t>, \"{dir}\", O_RDONLY|O_CLOEXEC) = {fd}<{dir}>\n\
                 7 fsync({fd}<{dir}>) = 0\n"
            )
        }
    };
    format!(
        "7 mkdir(\"{D}\", 0777) = 0\n{}\
         7 mkdirat(AT_FDCWD</t>, \"data/log\", 0777) = 0\n{}\
         7 openat(AT_FDCWD</t>, \"{SEG}\", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0644) = 5<{SEG}>\n{}",
        sync("/t", 3),
        sync(D, 3),
        sync("/t/data/log", 4),
    )
}

fn setup() -> String {
    setup_but("")
}

/// `bytes` as `strace -x` prints a string holding a non-printable byte.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// A record's head iov for webhook `id`.
fn head(id: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend(64u32.to_le_bytes());
    h.extend(0xdead_beef_u32.to_le_bytes());
    h.push(VERSION);
    h.extend(id.to_le_bytes());
    h.extend(b"\x01\x00orders\x02{}");
    h
}

/// A group commit's `writev` of the records of `ids` to the segment: its
/// arguments as strace prints them, and the byte count.
fn commit(ids: &[u64]) -> (String, usize) {
    let mut iovs = Vec::new();
    let mut total = 0;
    for id in ids {
        let (h, body) = (head(*id), format!("{{\"id\":{id}}}"));
        iovs.push(format!("{{iov_base=\"{}\", iov_len={}}}", hex(&h), h.len()));
        iovs.push(format!(
            "{{iov_base=\"{}\", iov_len={}}}",
            body.replace('"', "\\\""),
            body.len()
        ));
        total += h.len() + body.len();
    }
    (
        format!("5<{SEG}>, [{}], {}", iovs.join(", "), iovs.len()),
        total,
    )
}

/// A group commit written whole in one line.
fn write(ids: &[u64]) -> String {
    let (args, n) = commit(ids);
    format!("7 writev({args}) = {n}\n")
}

fn fdatasync() -> String {
    format!("7 fdatasync(5<{SEG}>) = 0\n")
}

/// The answer naming `id` with `status`, headers and body in one writev.
fn answer(id: u64, status: &str) -> String {
    let headers =
        "HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 43\\r\\n\\r\\n";
    let body = format!(r#"{{\"status\":\"{status}\",\"id\":\"{id:016x}\"}}"#);
    format!(
        "9 writev({SOCKET}, [{{iov_base=\"{headers}\", iov_len=68}}, {{iov_base=\"{body}\", iov_len=43}}], 2) = 111\n"
    )
}

fn ok(id: u64) -> String {
    answer(id, "queued")
}

/// The 1-based line of the first line of `trace` that contains `needle`.
fn line_of(trace: &str, needle: &str) -> usize {
    trace.lines().position(|l| l.contains(needle)).unwrap() + 1
}

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
        parse_line("12  fsync(3</t/data/x> <unfinished ...>"),
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
    // -x prints a name with a non-ASCII byte all in hex, annotations too.
    assert_eq!(
        Audit::fd_path(r"3<\x2f\x74\x2f\xc3\xa9>"),
        Some(PathBuf::from("/t/é"))
    );
    assert_eq!(
        strings(
            r#"[{iov_base="HTTP/1.1 200 OK\r\n", iov_len=17}, {iov_base="\x7b\x7d"..., iov_len=9}]"#
        ),
        b"HTTP/1.1 200 OK\r\n{}"
    );
    // A record head decoded from the printed iovs; an abbreviated array is
    // unreadable.
    let (args, n) = commit(&[0x0102_0304_0506_0708, 9]);
    let bufs = iovs(split_args(&args)[1]).unwrap();
    assert_eq!(bufs.len(), 4);
    let first_end =
        (head(0).len() + format!("{{\"id\":{}}}", 0x0102_0304_0506_0708_u64).len()) as u64;
    assert_eq!(
        records_in(&bufs).unwrap(),
        vec![(0x0102_0304_0506_0708, first_end), (9, n as u64)]
    );
    assert_eq!(iovs(r#"[{iov_base="SR"..., iov_len=5}, ...]"#), None);
    assert!(
        records_in(&[(
            b"SRL1\0\0\0\0\0\0\0\0\x02\x01\x02\x03\x04\x05\x06\x07\x08".to_vec(),
            21
        )])
        .is_err()
    );
    assert_eq!(
        webhook_id(br#"{"status":"queued","id":"00000000000000ff"}"#),
        Some(255)
    );
    assert_eq!(webhook_id(br#"{"status":"ok"}"#), None);
}

#[test]
fn a_record_written_and_fdatasynced_before_its_200_is_fine() {
    let r = run(&format!(
        "{}{}{}{}{}",
        setup(),
        write(&[1]),
        fdatasync(),
        ok(1),
        answer(1, "duplicate")
    ));
    assert_eq!(
        (
            r.oks,
            r.matched,
            r.violation_count,
            r.file_syncs,
            r.record_writes
        ),
        (2, 2, 0, 1, 1),
        "{}",
        r.describe()
    );
}

#[test]
fn a_200_before_its_records_sync_completes_is_a_violation() {
    // The 200 goes out while the fdatasync is still running.
    let trace = format!(
        "{}{}7 fdatasync(5<{SEG}> <unfinished ...>\n{}7 <... fdatasync resumed>) = 0\n",
        setup(),
        write(&[1]),
        ok(1)
    );
    let r = run(&trace);
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
    assert_eq!(r.violations[0].line, line_of(&trace, "HTTP/1.1"));
    assert_eq!(r.violations[0].id, Some(1));
    assert!(r.violations[0].why[0].contains("no fsync/fdatasync"));
    // A write still running when the sync starts is not covered by it.
    let (args, n) = commit(&[1]);
    let r = run(&format!(
        "{}8 writev({args} <unfinished ...>\n{}8 <... writev resumed>) = {n}\n{}",
        setup(),
        fdatasync(),
        ok(1)
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    // A 200 before its record is even written.
    let r = run(&format!(
        "{}{}{}{}",
        setup(),
        ok(1),
        write(&[1]),
        fdatasync()
    ));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    assert!(r.violations[0].why[0].contains("after the 200"));
}

#[test]
fn sync_file_range_alone_is_a_violation() {
    let r = run(&format!(
        "{}{}7 sync_file_range(5<{SEG}>, 0, 4096, SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE|SYNC_FILE_RANGE_WAIT_AFTER) = 0\n{}",
        setup(),
        write(&[1]),
        ok(1)
    ));
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
    assert!(
        r.violations[0].why[0].contains("sync_file_range"),
        "{}",
        r.describe()
    );
}

#[test]
fn a_segment_whose_directory_chain_is_not_synced_is_a_violation() {
    // Each created name needs its parent synced: the segment's in log/,
    // log's in the data_dir, the data_dir's in /t.
    for (dir, name) in [
        ("/t/data/log", SEG),
        (D, "/t/data/log "),
        ("/t", "/t/data "),
    ] {
        let r = run(&format!(
            "{}{}{}{}",
            setup_but(dir),
            write(&[1]),
            fdatasync(),
            ok(1)
        ));
        assert_eq!(r.violation_count, 1, "{dir}: {}", r.describe());
        let why = &r.violations[0].why[0];
        assert!(
            why.contains(&format!("the name {name}")) && why.contains("is not durable"),
            "{dir}: {why}"
        );
    }
    // A sync of log/ from before the segment was created does not count.
    let trace = setup_but("/t/data/log").replace(
        "7 openat(AT_FDCWD</t>, \"/t/data/log/",
        "7 openat(AT_FDCWD</t>, \"/t/data/log\", O_RDONLY) = 4</t/data/log>\n\
         7 fsync(4</t/data/log>) = 0\n\
         7 openat(AT_FDCWD</t>, \"/t/data/log/",
    );
    let r = run(&format!("{trace}{}{}{}", write(&[1]), fdatasync(), ok(1)));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    // A segment never seen created (the data_dir starts empty) is not
    // reachable as far as the audit knows.
    let r = run(&format!("{}{}{}", write(&[1]), fdatasync(), ok(1)));
    assert_eq!(r.violation_count, 1, "{}", r.describe());
    assert!(r.violations[0].why[0].contains("not seen created"));
}

/// Group commit: batch N+1 is written, and its fdatasync runs, while batch
/// N's 200s go out. Those 200s rely on batch N only.
#[test]
fn batch_n_plus_1_in_flight_while_batch_n_is_answered_is_fine() {
    let (args, n) = commit(&[3]);
    let pipelined = |third: &str| {
        format!(
            "{}{}{}8 writev({args} <unfinished ...>\n{}{}8 <... writev resumed>) = {n}\n\
             8 fdatasync(5<{SEG}> <unfinished ...>\n{}{third}",
            setup(),
            write(&[1, 2]),
            fdatasync(),
            ok(1),
            ok(2),
            answer(2, "duplicate"),
        )
    };
    let r = run(&pipelined(&format!(
        "8 <... fdatasync resumed>) = 0\n{}",
        ok(3)
    )));
    assert_eq!(
        (r.oks, r.matched, r.violation_count),
        (4, 4, 0),
        "{}",
        r.describe()
    );
    // Batch N+1's own 200 before its sync completes is still a violation,
    // and the only one.
    let r = run(&pipelined(&format!(
        "{}8 <... fdatasync resumed>) = 0\n",
        ok(3)
    )));
    assert_eq!((r.oks, r.violation_count), (4, 1), "{}", r.describe());
    assert_eq!(r.violations[0].id, Some(3));
}

#[test]
fn a_200_for_a_record_never_written_to_the_log_is_a_violation() {
    let r = run(&format!(
        "{}{}{}{}",
        setup(),
        write(&[1]),
        fdatasync(),
        ok(2)
    ));
    assert_eq!(
        (r.oks, r.with_id, r.matched, r.violation_count),
        (1, 1, 0, 1),
        "{}",
        r.describe()
    );
    assert!(r.violations[0].why[0].contains("never written to the log"));
    // The old layout: bodies in a file of their own, no SRL1 records.
    let r = run(&format!(
        "7 mkdir(\"{D}\", 0777) = 0\n\
         7 openat(AT_FDCWD</t>, \"{D}/bodies\", O_RDWR|O_CREAT, 0644) = 5<{D}/bodies>\n\
         7 writev(5<{D}/bodies>, [{{iov_base=\"{{\\\"id\\\":1}}\", iov_len=8}}], 1) = 8\n\
         7 fdatasync(5<{D}/bodies>) = 0\n{}",
        ok(1)
    ));
    assert_eq!((r.matched, r.violation_count), (0, 1), "{}", r.describe());
    // A 200 that names no id promises nothing the audit can check.
    let r = run(&format!(
        "9 writev({SOCKET}, [{{iov_base=\"HTTP/1.1 200 OK\\r\\n\\r\\n{{\\\"status\\\":\\\"ok\\\"}}\", iov_len=34}}], 1) = 34\n"
    ));
    assert_eq!((r.oks, r.with_id, r.violation_count), (1, 0, 1));
}

#[test]
fn a_body_in_a_later_write_is_judged_at_the_status_line() {
    let headers = format!(
        "9 write({SOCKET}, \"HTTP/1.1 200 OK\\r\\ncontent-length: 43\\r\\n\\r\\n\", 40) = 40\n"
    );
    let body = format!(
        "9 write({SOCKET}, \"{{\\\"status\\\":\\\"queued\\\",\\\"id\\\":\\\"{:016x}\\\"}}\", 43) = 43\n",
        1
    );
    let r = run(&format!(
        "{}{}{}{headers}{body}",
        setup(),
        write(&[1]),
        fdatasync()
    ));
    assert_eq!(
        (r.oks, r.matched, r.violation_count),
        (1, 1, 0),
        "{}",
        r.describe()
    );
    let trace = format!("{}{}{headers}{}{body}", setup(), write(&[1]), fdatasync());
    let r = run(&trace);
    assert_eq!((r.oks, r.violation_count), (1, 1), "{}", r.describe());
    assert_eq!(r.violations[0].line, line_of(&trace, "HTTP/1.1"));
}

#[test]
fn short_failed_or_unfinished_writes_do_not_count() {
    let (args, n) = commit(&[1, 2]);
    // Short: all of record 1, part of record 2.
    let first = n / 2;
    let trace = format!(
        "{}7 writev({args}) = {first}\n{}{}{}",
        setup(),
        fdatasync(),
        ok(1),
        ok(2)
    );
    let r = run(&trace);
    assert_eq!((r.oks, r.violation_count), (2, 1), "{}", r.describe());
    assert_eq!(r.violations[0].id, Some(2));
    assert!(r.violations[0].why[0].contains("short"));
    let r = run(&format!(
        "{}7 writev({args}) = -1 ENOSPC (No space left on device)\n{}{}",
        setup(),
        fdatasync(),
        ok(1)
    ));
    assert!(
        r.violations[0].why[0].contains("failed"),
        "{}",
        r.describe()
    );
    let r = run(&format!(
        "{}8 writev({args} <unfinished ...>\n{}{}",
        setup(),
        fdatasync(),
        ok(1)
    ));
    assert!(
        r.violations[0].why[0].contains("never completes"),
        "{}",
        r.describe()
    );
    // A later write that carries the record again, synced, is enough.
    let r = run(&format!(
        "{}8 writev({args} <unfinished ...>\n{}{}{}",
        setup(),
        write(&[1]),
        fdatasync(),
        ok(1)
    ));
    assert_eq!(r.violation_count, 0, "{}", r.describe());
}

#[test]
fn the_checkpoint_and_the_index_are_not_relied_on() {
    let r = run(&format!(
        "{}{}{}\
         7 openat(AT_FDCWD</t>, \"{D}/checkpoint.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 6<{D}/checkpoint.tmp>\n\
         7 write(6<{D}/checkpoint.tmp>, \"abc\", 3) = 3\n\
         7 rename(\"{D}/checkpoint.tmp\", \"{D}/checkpoint\") = 0\n\
         7 mkdir(\"{D}/index\", 0777) = 0\n\
         7 openat(AT_FDCWD</t>, \"{D}/index/db\", O_RDWR|O_CREAT, 0666) = 8<{D}/index/db>\n\
         7 pwrite64(8<{D}/index/db>, \"abc\", 3, 0) = 3\n\
         7 fsync(8<{D}/index/db>) = 0\n\
         7 write(2</dev/pts/0>, \"x\", 1) = 1\n{}",
        setup(),
        write(&[1]),
        fdatasync(),
        ok(1)
    ));
    assert_eq!(
        (r.oks, r.violation_count, r.file_syncs),
        (1, 0, 1),
        "{}",
        r.describe()
    );
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
        // -x: a string with a non-printable byte (a record head) prints all
        // as \xNN, which `unescape` decodes.
        .args([
            "-f",
            "-q",
            "-yy",
            "-x",
            "-s",
            &STRACE_STRLEN.to_string(),
            "-e",
        ])
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
async fn no_200_before_its_record_is_durable() {
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
    // At once: group commit writes a batch while the last one's 200s go out.
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
        "fsync_audit: {} trace lines, {} `HTTP/1.1 200` writes ({} matched to a log record), \
         {} records written, {} file syncs, {} violations",
        report.lines,
        report.oks,
        report.matched,
        report.record_writes,
        report.file_syncs,
        report.violation_count
    );
    let expected = (SEQUENTIAL + BURST) as usize;
    // Sanity: a parser that sees nothing must not pass.
    let sane = report.oks >= expected
        && report.file_syncs >= 1
        && report.matched == report.oks
        && report.unreadable_count == 0;
    if !sane || report.violation_count > 0 {
        // The report names trace lines: keep the trace to read them in.
        let kept = tmp.keep();
        eprintln!(
            "fsync_audit: trace kept in {}",
            kept.join("strace.out").display()
        );
    }
    assert!(
        report.oks >= expected,
        "only {} `HTTP/1.1 200` writes in the trace",
        report.oks
    );
    assert!(
        report.file_syncs >= 1,
        "no fsync/fdatasync of a file under {} in the trace",
        data.display()
    );
    assert!(report.unreadable_count == 0, "{}", report.describe());
    assert!(
        report.matched == report.oks,
        "only {} of {} 200s name an id that a write to the log carried:\n{}",
        report.matched,
        report.oks,
        report.describe()
    );
    assert!(report.violation_count == 0, "{}", report.describe());
}
