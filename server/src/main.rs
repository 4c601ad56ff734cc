/// mimalloc instead of glibc's malloc: exports and the Parquet writer allocate and free buffers of
/// megabytes on several threads, which glibc's per-thread arenas kept as resident memory (a Parquet
/// export's peak RSS varied between 300 and 380 MB with glibc; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    moat_server::cli::main()
}
