//! `moat bench proxy` and `moat bench arena` at a tiny size: every stream and battle completes and
//! the report's figures are finite. (The figures themselves are BENCHMARKS.md's, never asserted.)

use std::path::Path;

use moat_server::bench_cpus::CpuMode;
use moat_server::bench_llm::{run_arena, run_proxy, ArenaBenchArgs, ProxyBenchArgs};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_moat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bench_runs_at_tiny_size() {
    let report = run_proxy(
        ProxyBenchArgs {
            streams: 4,
            tokens: 4,
            token_ms: 5,
            ramp_ms: None,
            admin_token: false,
            // Split would pin this whole test process (every test's threads) to half the CPUs.
            cpus: CpuMode::Shared,
            rounds: 2,
            server_binary: None,
            json: false,
        },
        binary(),
    )
    .await
    .unwrap();
    for phase in [&report.direct, &report.proxied] {
        assert_eq!((phase.completed, phase.failed), (4, 0), "{report}");
        assert!(phase.first_content.p99_ms.is_finite(), "{report}");
        assert!(phase.first_byte.p99_ms.is_finite(), "{report}");
    }
    // The first content cannot come before the upstream's first token is due.
    assert!(report.direct.first_content.p50_ms >= 5.0, "{report}");
    assert!(report.added_p99_ms.is_finite(), "{report}");
    assert_eq!(report.rounds.len(), 2, "{report}");
    assert!(
        report.rounds.iter().all(|r| r.server_cpu_s.is_finite()),
        "{report}"
    );
    assert_eq!(report.cpus, "CPUs: shared", "{report}");
    assert!(report.server.peak_rss_mb > 0.0, "{report}");
    assert!(report.server.per_open_kb.is_finite(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arena_bench_runs_at_tiny_size() {
    let report = run_arena(
        ArenaBenchArgs {
            battles: 4,
            tokens: 4,
            token_ms: 5,
            ramp_ms: None,
            cpus: CpuMode::Shared,
            server_binary: None,
            json: false,
        },
        binary(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.completed, report.void, report.failed),
        (4, 0, 0),
        "{report}"
    );
    assert_eq!(report.direct.completed, 8, "{report}");
    for value in [
        report.first_text.p99_ms,
        report.both_sides.p99_ms,
        report.prompt_post.p99_ms,
        report.added_p99_ms,
        report.server.per_open_kb,
    ] {
        assert!(value.is_finite(), "{report}");
    }
}
