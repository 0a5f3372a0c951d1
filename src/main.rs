//! The `shoprelay` command line: parses arguments, sets up logging, and calls
//! into the library. No relay logic lives here.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// With the `mimalloc` feature (on by default), mimalloc instead of glibc's
/// malloc: the request path allocates and frees many small buffers across
/// threads, where glibc spent 15-25% of the relay's CPU; durable ingest went
/// from 0.31x to 0.37x the bare ceiling and a 5-way fan-out from 21k to 28.6k
/// deliveries/s (docs/PERFORMANCE.md). Built without transparent huge pages
/// (with them a fan-out's RSS doubled) and set below to return freed pages at
/// once; `--no-default-features` builds with the system's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    purge_freed_pages_at_once();
    let args = cli::Args::parse();
    match cli::main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc (v3) keeps freed pages 1 s by default before returning them to the
/// system; returned at once, a 1M-delivery backlog peaked at 93 MB instead
/// of 116 MB, for ~3% more CPU.
#[cfg(feature = "mimalloc")]
fn purge_freed_pages_at_once() {
    // `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (include/mimalloc.h);
    // libmimalloc-sys names only older options. Set only when it reads as
    // v3's documented default, so another numbering changes nothing.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: reads and sets a plain integer option; no memory is touched.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == 1000 {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}
