//! What `compare` prints and draws: the table of medians with the ratios between targets, and
//! the SVG chart (the CSV lines are `csv.rs`).

use std::fmt::Write as _;

use crate::fleet::Fleet;
use crate::phases::{Calls, FLOODS, Row, percentile};

/// The QoS 1 latency samples of target `i` from every repetition, sorted.
pub(crate) fn pooled(runs: &[Vec<Row>], i: usize) -> Vec<u64> {
    let mut all: Vec<u64> = runs
        .iter()
        .filter_map(|rows| rows.get(i))
        .flat_map(|r| r.latency_samples.iter().copied())
        .collect();
    all.sort_unstable();
    all
}

/// The median over the repetitions of `f` for target `i`.
pub(crate) fn median_of(runs: &[Vec<Row>], f: &dyn Fn(&Row) -> Option<f64>, i: usize) -> f64 {
    median(
        runs.iter()
            .filter_map(|rows| rows.get(i).and_then(f))
            .collect(),
    )
}

/// The table of medians (a line per target, in the order of `names`) and the ratios.
pub(crate) fn table(names: &[&str], runs: &[Vec<Row>], reps: usize) -> String {
    let med = |f: &dyn Fn(&Row) -> Option<f64>, i: usize| median_of(runs, f, i);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "medians of {reps} runs; load client, broker and proxy on the same 2 cores\n"
    );
    let _ = writeln!(
        out,
        "| target | {} | fixed 20k/s µs/msg: 1 pub × 20 / 20 pubs × 1 | QoS 1 p50 / p99 µs | handshakes/s full / resumed | idle KiB/conn | 100k idle (GiB) |",
        FLOODS
            .iter()
            .map(|(p, b)| format!("{p}×{b} B msg/s (µs/msg)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", " --- |".repeat(6 + FLOODS.len()));
    for (i, t) in names.iter().enumerate() {
        let mut cells = Vec::new();
        for f in 0..FLOODS.len() {
            let rate = med(&|r: &Row| r.flood.get(f).map(|x| x.0), i);
            let cpu = med(&|r: &Row| r.flood.get(f).and_then(|x| x.1), i);
            cells.push(format!("{} ({})", fmt(rate, 0), fmt(cpu, 2)));
        }
        let idle = med(&|r: &Row| r.idle_kib, i);
        let base = med(&|r: &Row| r.idle_base_kib, i);
        let projection = (base + idle * 100_000.0) / (1024.0 * 1024.0);
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} | {} |",
            t,
            cells.join(" | "),
            fmt(med(&|r: &Row| r.fixed_cpu, i), 2),
            fmt(med(&|r: &Row| r.fixed_cpu_fleet, i), 2),
            fmt(med(&|r: &Row| Some(r.latency.0), i), 0),
            fmt(med(&|r: &Row| Some(r.latency.1), i), 0),
            fmt(med(&|r: &Row| r.handshakes, i), 0),
            fmt(med(&|r: &Row| r.resumed, i), 0),
            fmt(idle, 1),
            fmt(projection, 2),
        );
    }
    // QoS 1 percentiles over every sample of every repetition: a tail percentile of one 8 s run
    // moves with whatever else the shared machine did then; pooled, it moves much less.
    let pools: Vec<Vec<u64>> = (0..names.len()).map(|i| pooled(runs, i)).collect();
    if pools.iter().any(|p| !p.is_empty()) {
        let _ = writeln!(
            out,
            "\nQoS 1 latency pooled over the {reps} runs (every sample of every run):\n\n| target | samples | p50 µs | p99 µs | p99.9 µs |\n| --- | --- | --- | --- | --- |"
        );
        for (t, all) in names.iter().zip(&pools) {
            if all.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} |",
                all.len(),
                fmt(percentile(all, 0.50), 0),
                fmt(percentile(all, 0.99), 0),
                fmt(percentile(all, 0.999), 0),
            );
        }
    }
    // Where the fixed-rate CPU goes: the proxy's own code (user) and the kernel's TCP work for
    // its sockets (system; on loopback a sender also pays its receiver's TCP processing).
    if (0..names.len()).any(|i| med(&|r: &Row| r.fixed_kernel, i).is_finite()) {
        let _ = writeln!(
            out,
            "\nFixed-rate CPU split, medians, µs/msg (user = the proxy's own code, kernel = system time):\n\n| target | 1 pub × 20: user / kernel | 20 pubs × 1: user / kernel |\n| --- | --- | --- |"
        );
        for (i, t) in names.iter().enumerate() {
            let kernel = med(&|r: &Row| r.fixed_kernel, i);
            let kernel_fleet = med(&|r: &Row| r.fixed_kernel_fleet, i);
            if !kernel.is_finite() && !kernel_fleet.is_finite() {
                continue;
            }
            // Medians of the per-run user times, not median total minus median kernel.
            let user = med(
                &|r: &Row| r.fixed_cpu.zip(r.fixed_kernel).map(|(c, k)| c - k),
                i,
            );
            let user_fleet = med(
                &|r: &Row| {
                    r.fixed_cpu_fleet
                        .zip(r.fixed_kernel_fleet)
                        .map(|(c, k)| c - k)
                },
                i,
            );
            let _ = writeln!(
                out,
                "| {t} | {} / {} | {} / {} |",
                fmt(user, 2),
                fmt(kernel, 2),
                fmt(user_fleet, 2),
                fmt(kernel_fleet, 2),
            );
        }
    }
    wakeup_table(&mut out, names, runs);
    fleet_table(&mut out, names, runs, reps);
    let pooled_p99 = |i: usize| pools.get(i).map_or(f64::NAN, |p| percentile(p, 0.99));
    // Ratios from the medians: the gateway's mTLS listener against the others.
    let _ = writeln!(out);
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap_or(0);
    for (ours, other) in [
        ("gateway mTLS", "HAProxy mTLS"),
        ("gateway mTLS", "nginx mTLS, 1 worker"),
        ("gateway mTLS", "nginx mTLS, auto workers"),
        (
            "gateway mTLS, a worker per core",
            "nginx mTLS, auto workers",
        ),
        (
            "gateway mTLS, unix upstream",
            "nginx mTLS, 1 worker, unix upstream",
        ),
        ("gateway mTLS, unix upstream", "gateway mTLS"),
        ("gateway mTLS", "mosquitto direct"),
    ] {
        let label = format!("{ours} / {other}");
        let (ours, other) = (at(ours), at(other));
        let ratio = |f: &dyn Fn(&Row) -> Option<f64>, other: usize| med(f, ours) / med(f, other);
        let _ = writeln!(
            out,
            "{label}: flood 1×64 B msg/s {}, 4×64 B msg/s {}, fixed-rate CPU {} (20 publishers: {}), p99 {} (pooled {}), handshakes/s {} (resumed {}), idle KiB/conn {}, fleet CPU {} (user {}), fleet p99 {}, fleet RSS {}",
            fmt(ratio(&|r: &Row| r.flood.first().map(|x| x.0), other), 2),
            fmt(ratio(&|r: &Row| r.flood.get(1).map(|x| x.0), other), 2),
            fmt(ratio(&|r: &Row| r.fixed_cpu, other), 2),
            fmt(ratio(&|r: &Row| r.fixed_cpu_fleet, other), 2),
            fmt(ratio(&|r: &Row| Some(r.latency.1), other), 2),
            fmt(pooled_p99(ours) / pooled_p99(other), 2),
            fmt(ratio(&|r: &Row| r.handshakes, other), 2),
            fmt(ratio(&|r: &Row| r.resumed, other), 2),
            fmt(ratio(&|r: &Row| r.idle_kib, other), 2),
            fmt(ratio(&fleet_cpu, other), 2),
            fmt(
                ratio(&|r: &Row| r.fleet.as_ref().map(|f| f.cpu_us().0), other),
                2
            ),
            fmt(
                fleet_pooled(runs, ours, 0.99) / fleet_pooled(runs, other, 0.99),
                2
            ),
            fmt(
                ratio(&|r: &Row| r.fleet.as_ref().map(|f| f.rss_kib), other),
                2
            ),
        );
    }
    out
}

/// Fleet CPU per message, user + kernel (µs).
fn fleet_cpu(r: &Row) -> Option<f64> {
    r.fleet.as_ref().map(|f| {
        let (user, kernel) = f.cpu_us();
        user + kernel
    })
}

/// The `p` quantile (µs) of target `i`'s fleet latency samples pooled over every repetition.
fn fleet_pooled(runs: &[Vec<Row>], i: usize, p: f64) -> f64 {
    let mut all: Vec<u64> = runs
        .iter()
        .filter_map(|rows| rows.get(i).and_then(|r| r.fleet.as_ref()))
        .flat_map(|f| f.samples.iter().copied())
        .collect();
    all.sort_unstable();
    percentile(&all, p)
}

/// Where a row keeps one phase's wake-ups and syscalls.
type CallsOf = &'static dyn Fn(&Row) -> Option<Calls>;

/// Wake-ups and syscalls per message in the fixed-rate phases and the fleet (medians).
fn wakeup_table(out: &mut String, names: &[&str], runs: &[Vec<Row>]) {
    let med = |f: &dyn Fn(&Row) -> Option<f64>, i: usize| median_of(runs, f, i);
    let phases: [(&str, CallsOf); 3] = [
        ("1 pub × 20", &|r: &Row| r.fixed_calls),
        ("20 pubs × 1", &|r: &Row| r.fixed_calls_fleet),
        ("fleet", &|r: &Row| r.fleet.as_ref().map(Fleet::calls)),
    ];
    let any = (0..names.len()).any(|i| {
        phases
            .iter()
            .any(|(_, f)| med(&|r: &Row| f(r).map(|c| c.wakeups), i).is_finite())
    });
    if !any {
        return;
    }
    let _ = writeln!(
        out,
        "\nWake-ups (voluntary context switches) / syscalls / epoll_waits per message, medians:\n\n| target | {} |\n| --- |{}",
        phases.map(|(p, _)| p).join(" | "),
        " --- |".repeat(phases.len())
    );
    for (i, t) in names.iter().enumerate() {
        let cells: Vec<String> = phases
            .iter()
            .map(|(_, f)| {
                format!(
                    "{} / {} / {}",
                    fmt(med(&|r: &Row| f(r).map(|c| c.wakeups), i), 2),
                    fmt(med(&|r: &Row| f(r).and_then(|c| c.syscalls), i), 2),
                    fmt(med(&|r: &Row| f(r).and_then(|c| c.epoll), i), 2),
                )
            })
            .collect();
        if cells.iter().all(|c| c == "- / - / -") {
            continue;
        }
        let _ = writeln!(out, "| {t} | {} |", cells.join(" | "));
    }
}

/// The fleet phase: medians of CPU and RSS, latency pooled over the repetitions.
fn fleet_table(out: &mut String, names: &[&str], runs: &[Vec<Row>], reps: usize) {
    let med = |f: &dyn Fn(&Row) -> Option<f64>, i: usize| median_of(runs, f, i);
    if !(0..names.len()).any(|i| med(&fleet_cpu, i).is_finite()) {
        return;
    }
    let _ = writeln!(
        out,
        "\nFleet: {} mTLS devices, one 64 B QoS 1 message each every {} s, one subscriber; medians of {reps} runs (latency pooled):\n\n| target | msgs/window | CPU µs/msg | user / kernel | RSS MiB | QoS 1 p50 / p99 / p99.9 µs |\n| --- | --- | --- | --- | --- | --- |",
        crate::fleet::DEVICES,
        crate::fleet::PERIOD.as_secs()
    );
    for (i, t) in names.iter().enumerate() {
        let cpu = med(&fleet_cpu, i);
        if !cpu.is_finite() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {t} | {} | {} | {} / {} | {} | {} / {} / {} |",
            fmt(
                med(&|r: &Row| r.fleet.as_ref().map(|f| f.messages as f64), i),
                0
            ),
            fmt(cpu, 2),
            fmt(med(&|r: &Row| r.fleet.as_ref().map(|f| f.cpu_us().0), i), 2),
            fmt(med(&|r: &Row| r.fleet.as_ref().map(|f| f.cpu_us().1), i), 2),
            fmt(
                med(&|r: &Row| r.fleet.as_ref().map(|f| f.rss_kib / 1024.0), i),
                1
            ),
            fmt(fleet_pooled(runs, i, 0.50), 0),
            fmt(fleet_pooled(runs, i, 0.99), 0),
            fmt(fleet_pooled(runs, i, 0.999), 0),
        );
    }
}

/// The chart of message rates and CPU per message (medians), as SVG text.
pub(crate) fn chart(names: &[&str], runs: &[Vec<Row>]) -> String {
    let med = |f: &dyn Fn(&Row) -> Option<f64>, i: usize| median_of(runs, f, i);
    svg(
        names,
        &[
            (
                "QoS 0 msg/s, 1 publisher, 64 B",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.flood.first().map(|x| x.0), i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg, flood 1×64 B",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.flood.first().and_then(|x| x.1), i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg at 20,000 msg/s, 1 publisher × 20",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.fixed_cpu, i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg at 20,000 msg/s, 20 publishers × 1",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.fixed_cpu_fleet, i))
                    .collect(),
            ),
            (
                "fleet: proxy CPU µs/msg (9,900 devices, QoS 1 every 5 s)",
                (0..names.len()).map(|i| med(&fleet_cpu, i)).collect(),
            ),
            (
                "fleet: QoS 1 p99 µs (pooled)",
                (0..names.len())
                    .map(|i| fleet_pooled(runs, i, 0.99))
                    .collect(),
            ),
            (
                "fleet: proxy RSS MiB",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.fleet.as_ref().map(|f| f.rss_kib / 1024.0), i))
                    .collect(),
            ),
            (
                "idle KiB per mTLS connection",
                (0..names.len())
                    .map(|i| med(&|r: &Row| r.idle_kib, i))
                    .collect(),
            ),
        ],
    )
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".to_owned()
    }
}

/// A bar chart of two series per target, side by side, as SVG text.
pub(crate) fn svg(names: &[&str], panels: &[(&str, Vec<f64>)]) -> String {
    let (w, h, pad) = (360.0, 240.0, 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        w * panels.len() as f64,
        h + 100.0
    );
    let colors = [
        "#555", "#1f77b4", "#2ca02c", "#17becf", "#d62728", "#9467bd", "#ff7f0e",
    ];
    for (p, (title, values)) in panels.iter().enumerate() {
        let x0 = w * p as f64;
        let max = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"16\" font-size=\"12\">{title}</text>",
            x0 + pad
        );
        let bw = (w - 2.0 * pad) / values.len() as f64;
        for (i, v) in values.iter().enumerate() {
            let v = if v.is_finite() { *v } else { 0.0 };
            let bh = (h - pad) * v / max;
            let x = x0 + pad + bw * i as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(30 {:.1} {:.1})\">{}</text>",
                h - bh,
                bw * 0.8,
                colors.get(i % colors.len()).copied().unwrap_or("#555"),
                x,
                h - bh - 3.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                },
                x,
                h + 12.0,
                x,
                h + 12.0,
                names.get(i).copied().unwrap_or("")
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
