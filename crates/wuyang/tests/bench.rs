//! `wuyang bench` end to end, small: every scenario it runs here answers
//! without errors and every notification is delivered. (The figures are in
//! docs/benchmarks.md; here only that the benchmark itself works.)

use std::process::Command;

#[test]
fn the_benchmark_runs_its_scenarios_without_errors() {
    let scenarios = [
        "null",
        "create",
        "partial",
        "upsert",
        "query",
        "notify-http",
        "notify-http-batch",
        "notify-mqtt-batch",
        "wide",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_wuyang"))
        .args(["bench", "--requests", "300", "--entities", "2000"])
        .args(["--batch-size", "100", "--wide-instances", "500"])
        .args(["--only", &scenarios.join(",")])
        .output()
        .expect("run wuyang bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The result rows: `| name | rate unit | p50 | p95 | p99 | vs null | errors |`,
    // then those of the wide entity: `| operation | status | ms |`.
    let (rows, wide): (Vec<Vec<&str>>, Vec<Vec<&str>>) = text
        .lines()
        .filter(|l| {
            l.starts_with("| ") && !l.starts_with("| scenario") && !l.starts_with("| operation")
        })
        .map(|l| l.split('|').map(str::trim).collect::<Vec<&str>>())
        .partition(|r| r.len() > 5);
    let statuses: Vec<&str> = wide.iter().map(|r| r[2]).collect();
    assert_eq!(
        statuses,
        [
            "201", "204", "204", "204", "200", "201", "204", "204", "204", "200"
        ],
        "{text}"
    );
    let names: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    for wanted in [
        "null handler: parse entity",
        "create entity",
        "partial attribute update",
        "batch upsert",
        "query type + q",
        "HTTP, partial updates",
        "HTTP, batch updates of 10",
        "MQTT, batch updates of 10",
    ] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "no row for {wanted}:\n{text}"
        );
    }
    for row in &rows {
        assert_eq!(row[7], "0", "errors in {}:\n{text}", row[1]);
        let rate: f64 = row[2].split_whitespace().next().unwrap().parse().unwrap();
        assert!(rate > 0.0, "{}", row[1]);
        if row[1].starts_with("notifications") {
            assert!(row[1].contains("(300/300 delivered)"), "{}", row[1]);
        }
    }
}
