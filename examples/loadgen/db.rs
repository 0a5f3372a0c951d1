//! The database side of a run on PostgreSQL: a schema of the run's own, and
//! what the server did meanwhile.

use shoprelay::config::pg_url;

/// Connects to `url` as the relay would (sslmode and all).
async fn connect(url: &str) -> tokio_postgres::Client {
    let target = pg_url::parse(url).unwrap_or_else(|e| panic!("--storage-url: {e}"));
    let connector = target
        .connector()
        .unwrap_or_else(|e| panic!("--storage-url: {e}"));
    let (client, conn) = target
        .pg
        .connect(connector)
        .await
        .unwrap_or_else(|e| panic!("connecting to --storage-url: {e}"));
    tokio::spawn(conn);
    client
}

/// Creates schema `loadgen_RUN`; returns the URL whose connections use it.
pub async fn fresh_schema(url: &str, run: &str) -> String {
    let c = connect(url).await;
    c.batch_execute(&format!("CREATE SCHEMA loadgen_{run}"))
        .await
        .expect("create the run's schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3Dloadgen_{run}")
}

pub async fn drop_schema(url: &str, run: &str) {
    let c = connect(url).await;
    if let Err(e) = c
        .batch_execute(&format!("DROP SCHEMA loadgen_{run} CASCADE"))
        .await
    {
        eprintln!("could not drop schema loadgen_{run}: {e}");
    }
}

/// The server's counters that tell where a webhook's cost goes.
#[derive(Clone, Copy, Default)]
pub struct Counters {
    pub commits: i64,
    pub wal_bytes: f64,
    pub wal_syncs: i64,
}

pub async fn counters(url: &str) -> Counters {
    let c = connect(url).await;
    let commits: i64 = c
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    // pg_stat_wal is PostgreSQL 14+.
    let (wal_bytes, wal_syncs) = c
        .query_one("SELECT wal_bytes::float8, wal_sync FROM pg_stat_wal", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0.0, 0));
    Counters {
        commits,
        wal_bytes,
        wal_syncs,
    }
}

/// CPU seconds of the PostgreSQL server whose data dir is `data`: the
/// postmaster with its reaped children, and its live backends.
pub fn pg_cpu_secs(data: &std::path::Path) -> f64 {
    let Some(pm) = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    else {
        return 0.0;
    };
    let fields = |pid: &str| -> Option<Vec<String>> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(str::to_string).collect())
    };
    let secs = |f: &[String], from: usize, to: usize| -> f64 {
        f[from..=to]
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .sum::<f64>()
            / 100.0
    };
    // utime, stime, cutime, cstime are fields 11..=14 after the comm.
    let mut total = fields(&pm).map_or(0.0, |f| secs(&f, 11, 14));
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(f) = fields(&pid) {
                if f.get(1).map(String::as_str) == Some(pm.as_str()) {
                    total += secs(&f, 11, 12);
                }
            }
        }
    }
    total
}
