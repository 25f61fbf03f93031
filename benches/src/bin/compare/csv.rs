//! `compare.csv`: one line per measured value, `rep,"target",metric,value`, for every repetition
//! of every target, and the QoS 1 percentiles pooled over the repetitions (`rep` = `all`).

use std::fmt::{Display, Write as _};

use crate::fleet::Fleet;
use crate::phases::{FLOODS, Row, percentile};
use crate::report::pooled;

/// The CSV text, its header first.
pub(crate) struct Csv(String);

impl Csv {
    pub(crate) fn new() -> Self {
        Self(String::from("rep,target,metric,value\n"))
    }

    /// One line. The target is quoted: its name may hold a comma (`gateway mTLS, a worker per
    /// core`); none holds a quote.
    pub(crate) fn line(
        &mut self,
        rep: impl Display,
        target: &str,
        metric: impl Display,
        value: impl Display,
    ) {
        let _ = writeln!(self.0, "{rep},\"{target}\",{metric},{value}");
    }

    /// The lines of one repetition of one target.
    pub(crate) fn rows(&mut self, rep: usize, name: &str, row: &Row) {
        for ((pubs, payload), (rate, cpu)) in FLOODS.iter().zip(&row.flood) {
            let flood = format!("flood_{pubs}x{payload}B");
            self.line(
                rep,
                name,
                format_args!("{flood}_msgs_per_s"),
                format_args!("{rate:.0}"),
            );
            if let Some(c) = cpu {
                self.line(
                    rep,
                    name,
                    format_args!("{flood}_cpu_us_per_msg"),
                    format_args!("{c:.3}"),
                );
            }
        }
        for (metric, value) in [
            ("fixed_20k_cpu_us_per_msg", row.fixed_cpu),
            ("fixed_20k_20pubs_cpu_us_per_msg", row.fixed_cpu_fleet),
            ("fixed_20k_kernel_us_per_msg", row.fixed_kernel),
            ("fixed_20k_20pubs_kernel_us_per_msg", row.fixed_kernel_fleet),
        ] {
            if let Some(c) = value {
                self.line(rep, name, metric, format_args!("{c:.3}"));
            }
        }
        for (phase, calls) in [
            ("fixed_20k", row.fixed_calls),
            ("fixed_20k_20pubs", row.fixed_calls_fleet),
        ] {
            let Some(c) = calls else { continue };
            self.line(
                rep,
                name,
                format_args!("{phase}_wakeups_per_msg"),
                format_args!("{:.3}", c.wakeups),
            );
            if let (Some(all), Some(epoll)) = (c.syscalls, c.epoll) {
                self.line(
                    rep,
                    name,
                    format_args!("{phase}_syscalls_per_msg"),
                    format_args!("{all:.3}"),
                );
                self.line(
                    rep,
                    name,
                    format_args!("{phase}_epoll_waits_per_msg"),
                    format_args!("{epoll:.3}"),
                );
            }
        }
        self.line(
            rep,
            name,
            "qos1_p50_us",
            format_args!("{:.0}", row.latency.0),
        );
        self.line(
            rep,
            name,
            "qos1_p99_us",
            format_args!("{:.0}", row.latency.1),
        );
        if let Some(h) = row.handshakes {
            self.line(rep, name, "handshakes_per_s", format_args!("{h:.0}"));
        }
        if let Some(h) = row.resumed {
            self.line(
                rep,
                name,
                "resumed_handshakes_per_s",
                format_args!("{h:.0}"),
            );
        }
    }

    /// The lines of one idle run: KiB per connection, and the RSS before the connections.
    pub(crate) fn idle(&mut self, rep: usize, name: &str, per: f64, base: f64) {
        self.line(rep, name, "idle_kib_per_conn", format_args!("{per:.2}"));
        self.line(rep, name, "idle_base_kib", format_args!("{base:.0}"));
    }

    /// The lines of one fleet run.
    pub(crate) fn fleet(&mut self, rep: usize, name: &str, f: &Fleet) {
        let (user, kernel) = f.cpu_us();
        let calls = f.calls();
        let mut line = |metric: &str, value: &dyn Display| {
            self.line(rep, name, format_args!("fleet_{metric}"), value);
        };
        line("messages", &f.messages);
        line("user_us_per_msg", &format_args!("{user:.3}"));
        line("kernel_us_per_msg", &format_args!("{kernel:.3}"));
        line("wakeups_per_msg", &format_args!("{:.3}", calls.wakeups));
        if let (Some(all), Some(epoll)) = (calls.syscalls, calls.epoll) {
            line("syscalls_per_msg", &format_args!("{all:.3}"));
            line("epoll_waits_per_msg", &format_args!("{epoll:.3}"));
        }
        line("rss_kib", &format_args!("{:.0}", f.rss_kib));
        for (label, p) in [("p50", 0.50), ("p99", 0.99), ("p999", 0.999)] {
            line(
                &format!("qos1_{label}_us"),
                &format_args!("{:.0}", percentile(&f.samples, p)),
            );
        }
    }

    /// The QoS 1 percentiles of every target pooled over all repetitions.
    pub(crate) fn pooled(&mut self, names: &[&str], runs: &[Vec<Row>]) {
        for (i, name) in names.iter().enumerate() {
            let all = pooled(runs, i);
            if all.is_empty() {
                continue;
            }
            for (label, p) in [("p50", 0.50), ("p99", 0.99), ("p999", 0.999)] {
                self.line(
                    "all",
                    name,
                    format_args!("qos1_pooled_{label}_us"),
                    format_args!("{:.0}", percentile(&all, p)),
                );
            }
        }
    }

    /// The text.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}
