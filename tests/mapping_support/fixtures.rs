//! The fixture files under `tests/fixtures/<kind>/<topic with / as __>[.case].json`,
//! each with its label (`shopify/orders__create.guest`).

use std::path::{Path, PathBuf};

use shoprelay::sources::SourceKind;

/// One fixture payload.
pub struct Fixture {
    pub kind: SourceKind,
    pub topic: String,
    pub body: Vec<u8>,
}

/// Where the fixtures (and the golden files beside them) live.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture payload with its label, sorted, for both source kinds.
pub fn fixtures() -> Vec<(String, Fixture)> {
    let mut out = Vec::new();
    for kind in [SourceKind::Shopify, SourceKind::Convertedin] {
        let dir = fixtures_dir().join(kind.as_str());
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json") && !name.ends_with(".expected.json")
            })
            .collect();
        paths.sort();
        for path in paths {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let topic = stem.split('.').next().unwrap_or(stem).replace("__", "/");
            let body = std::fs::read(&path).expect("read fixture");
            out.push((
                format!("{}/{stem}", kind.as_str()),
                Fixture { kind, topic, body },
            ));
        }
    }
    out
}
