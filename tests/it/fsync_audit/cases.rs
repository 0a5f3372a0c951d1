//! The audit on hand-written traces.

use super::model::*;
use super::strace::*;
use super::*;

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
