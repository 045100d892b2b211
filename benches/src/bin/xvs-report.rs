//! Turns the performance harness's raw measurements (`DIR/runs.jsonl`, written by
//! `scripts/bench.sh`) into `DIR/report.md` (medians, ratios of xvs to every peer and to the
//! testbed's limits, the targets, where xvs's cycles go, multi-core scaling) and SVG plots:
//! delivered against offered rate, the machine's CPU against offered rate, peak rates per
//! switch, and latency CDFs.
//!
//! usage: xvs-report DIR [--smoke]

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const SWITCHES: [&str; 8] = ["xvs", "xvs-core", "kernel", "ovs", "ovs-dpdk", "xdpfwd", "testpmd", "testpmd-hosts"];
/// The peers each xvs figure is a ratio to, with how the report names them.
const PEERS: [(&str, &str); 7] = [
    ("kernel", "kernel bridge+vxlan"),
    ("ovs", "OVS (AF_XDP)"),
    ("ovs-dpdk", "OVS-DPDK"),
    ("xdpfwd", "XDP forwarder (no encapsulation)"),
    ("testpmd", "testpmd, one process (no switching)"),
    ("testpmd-hosts", "testpmd per host (no switching)"),
    ("xvs-core", "xvs without the fast path"),
];
const LOSS_FREE: f64 = 0.001;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

/// Delivered rate (frames received by the sink per second of sending) and loss of a flow.
fn delivered(r: &Value) -> Option<(f64, f64, f64)> {
    let sent = f(r, &["send", "sent"])?;
    let secs = f(r, &["send", "secs"])?;
    let got = f(r, &["sink", "received"])?;
    Some((got / secs, sent / secs, if sent > 0.0 { (1.0 - got / sent).max(0.0) } else { 1.0 }))
}

/// Medians of one switch's measurements.
#[derive(Default, Debug)]
struct Summary {
    flat: Option<f64>,
    flat_offered: Option<f64>,
    loss_free: Option<f64>,
    tcp: Option<f64>,
    rtt_low: [Option<f64>; 3],
    rtt_half: [Option<f64>; 3],
    idle_sw_cpu: Option<f64>,
    idle_cpu1: Option<f64>,
    load_sw_cpu: Option<f64>,
    load_cpu1: Option<f64>,
    /// CPU cycles of the whole machine per delivered frame, flat out.
    cycles_per_frame: Option<f64>,
    /// Share of the frames xvsd's VM ports received that the XDP fast path forwarded.
    fast_share: Option<f64>,
    sweep: Vec<(f64, f64)>,
    /// (offered pps, busy CPU of the whole machine in % of one core): idle, 1,000 pps, the sweep.
    cpu: Vec<(f64, f64)>,
    cdf_low: Vec<(f64, f64)>,
    cdf_half: Vec<(f64, f64)>,
}

fn summarize(runs: &[Value], sw: &str) -> Summary {
    let of = |kind: &str| -> Vec<&Value> { runs.iter().filter(|r| r["switch"] == sw && r["kind"] == kind).collect() };
    let mut s = Summary::default();
    let flat = of("flat");
    s.flat = median(flat.iter().filter_map(|r| delivered(r).map(|d| d.0)).collect());
    s.flat_offered = median(flat.iter().filter_map(|r| delivered(r).map(|d| d.1)).collect());
    s.load_sw_cpu = median(flat.iter().filter_map(|r| r["switch_cpu_pct"].as_f64()).collect());
    s.load_cpu1 = median(flat.iter().filter_map(|r| r["cpu1_pct"].as_f64()).collect());
    s.cycles_per_frame = median(
        flat.iter()
            .filter_map(|r| {
                let busy = r["machine_busy_jiffies"].as_f64()?;
                let hz = r["hz"].as_f64()?;
                let mhz = r["mhz"].as_f64()?;
                let got = f(r, &["sink", "received"])?;
                (got > 0.0).then(|| busy / hz * mhz * 1e6 / got)
            })
            .collect(),
    );
    s.fast_share = median(
        flat.iter()
            .filter_map(|r| {
                let (mut fast, mut all) = (0.0, 0.0);
                for h in ["h1", "h2"] {
                    let ports = r[h]["stats"]["ports"].as_array()?;
                    // every frame crosses one VM port: vm1's on host 1 (in), vm2's on host 2 (out)
                    for (i, p) in ports.iter().enumerate().skip(1) {
                        let name = r[h]["ports"][i]["name"].as_str().unwrap_or("");
                        if !(name.ends_with("-p1") || name.ends_with("-p2")) {
                            continue;
                        }
                        let (fr, ft) = (p["fast_rx_packets"].as_f64()?, p["fast_tx_packets"].as_f64()?);
                        let (ar, at) = (p["rx_packets"].as_f64()?, p["tx_packets"].as_f64()?);
                        fast += fr + ft;
                        all += ar + at;
                    }
                }
                (all > 0.0).then(|| fast / all)
            })
            .collect(),
    );
    let idle = of("idle");
    s.idle_sw_cpu = median(idle.iter().filter_map(|r| r["switch_cpu_pct"].as_f64()).collect());
    s.idle_cpu1 = median(idle.iter().filter_map(|r| r["cpu1_pct"].as_f64()).collect());
    // Loss-free: per repeat, the highest offered rate with under 0.1 % loss; then the median.
    let sweep = of("sweep");
    let mut reps: BTreeMap<i64, f64> = BTreeMap::new();
    for r in &sweep {
        let rep = r["repeat"].as_i64().unwrap_or(0);
        let best = reps.entry(rep).or_insert(0.0);
        if let Some((d, o, loss)) = delivered(r) {
            s.sweep.push((o, d));
            if loss < LOSS_FREE && o > *best {
                *best = o;
            }
        }
    }
    s.sweep.sort_by(|a, b| a.0.total_cmp(&b.0));
    let busy_pct = |r: &Value, secs: f64| Some(100.0 * r["machine_busy_jiffies"].as_f64()? / r["hz"].as_f64()? / secs);
    s.cpu = idle.iter().filter_map(|r| Some((0.0, busy_pct(r, r["secs"].as_f64()?)?))).collect();
    for r in sweep.iter().chain(of("rtt_low").iter()) {
        if let (Some((_, o, _)), Some(secs)) = (delivered(r), f(r, &["send", "secs"])) {
            s.cpu.extend(busy_pct(r, secs).map(|c| (o, c)));
        }
    }
    s.cpu.sort_by(|a, b| a.0.total_cmp(&b.0));
    s.loss_free = median(reps.values().copied().collect());
    s.tcp = median(of("tcp").iter().filter_map(|r| f(r, &["tcp", "gbps"])).collect());
    for (kind, out, cdf) in
        [("rtt_low", &mut s.rtt_low, &mut s.cdf_low), ("rtt_half", &mut s.rtt_half, &mut s.cdf_half)]
    {
        let rs = of(kind);
        for (i, q) in ["p50_us", "p99_us", "p999_us"].iter().enumerate() {
            out[i] = median(rs.iter().filter_map(|r| f(r, &["send", "rtt", q])).collect());
        }
        // The CDF of the median run (by p50).
        let mut with: Vec<(&Value, f64)> =
            rs.iter().filter_map(|r| f(r, &["send", "rtt", "p50_us"]).map(|p| (*r, p))).collect();
        with.sort_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((r, _)) = with.get(with.len() / 2)
            && let Some(points) = r["send"]["rtt"]["cdf"].as_array()
        {
            *cdf = points.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect();
        }
    }
    s
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn kpps(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.0}k", x / 1000.0))
}

/// a / b, where both were measured and b is not zero.
fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    quotient(a, b).map_or("–".into(), |x| format!("{x:.2}×"))
}

/// Per-core profile of xvsd on both hosts during the last flat-out run.
fn profile(runs: &[Value], kind: &str, sw: &str) -> Vec<String> {
    let Some(r) = runs.iter().rev().find(|r| r["switch"] == sw && r["kind"] == kind) else { return vec![] };
    // The CPU clock, from this record or, in older raw data, any record that has it.
    let mhz = r["mhz"].as_f64().or_else(|| runs.iter().find_map(|x| x["mhz"].as_f64())).unwrap_or(0.0);
    let mut rows = Vec::new();
    for h in ["h1", "h2"] {
        let Some(cores) = r[h]["per_core"].as_array() else { continue };
        for c in cores {
            let pk = c["packets"].as_f64().unwrap_or(0.0).max(1.0);
            let st = &c["stage_cycles"];
            let per = |k: &str| st[k].as_f64().unwrap_or(0.0) / pk;
            rows.push(format!(
                "| {h} | {} | {:.0} | {:.1} % | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                c["cpu"],
                c["packets"].as_f64().unwrap_or(0.0),
                100.0 * c["busy_share"].as_f64().unwrap_or(0.0),
                c["ns_per_packet"].as_f64().unwrap_or(0.0),
                c["ns_per_packet"].as_f64().unwrap_or(0.0) * mhz / 1000.0,
                per("rx"),
                per("process"),
                per("tx"),
                per("recycle"),
            ));
        }
    }
    rows
}

/// A white 800-pixel-wide SVG canvas at `path`.
fn canvas(path: &Path, height: u32) -> Result<DrawingArea<SVGBackend<'_>, plotters::coord::Shift>> {
    let root = SVGBackend::new(path, (800, height)).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// The frame every chart shares: title, margin and label areas (`y_labels` wide).
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 20)).margin(15).x_label_area_size(45).y_label_area_size(y_labels);
    b
}

fn plot_sweep(path: &Path, sums: &[(&str, &Summary)], ceiling: Option<f64>) -> Result<()> {
    let max = sums.iter().flat_map(|(_, s)| s.sweep.iter().map(|p| p.0.max(p.1))).fold(1.0f64, f64::max) * 1.1 / 1000.0;
    let root = canvas(path, 500)?;
    let mut c = frame(&root, "64-byte frames VM to VM across VXLAN: delivered vs offered", 60)
        .build_cartesian_2d(0.0..max, 0.0..max)?;
    c.configure_mesh().x_desc("offered, kpps").y_desc("delivered, kpps").draw()?;
    c.draw_series(LineSeries::new([(0.0, 0.0), (max, max)], BLACK.mix(0.3)))?
        .label("no loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));
    for (i, (name, s)) in sums.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s.sweep.iter().map(|(o, d)| (o / 1000.0, d / 1000.0)).collect();
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, col.filled())))?;
        c.draw_series(LineSeries::new(pts.clone(), col))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], col));
    }
    if let Some(cl) = ceiling {
        let y = cl / 1000.0;
        if y < max {
            c.draw_series(LineSeries::new([(0.0, y), (max, y)], RED.mix(0.5)))?
                .label("generator ceiling")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.mix(0.5)));
        }
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

/// The whole machine's busy CPU against offered rate, one line per switch.
fn plot_cpu(path: &Path, sums: &[(&str, &Summary)]) -> Result<()> {
    let xmax = sums.iter().flat_map(|(_, s)| s.cpu.iter().map(|p| p.0)).fold(1.0f64, f64::max) * 1.05 / 1000.0;
    let ymax = sums.iter().flat_map(|(_, s)| s.cpu.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
    let root = canvas(path, 500)?;
    let mut c = frame(&root, "CPU of the whole machine (generator and sink included) vs offered rate", 60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    c.configure_mesh().x_desc("offered, kpps").y_desc("busy CPU, % of one core").draw()?;
    for (i, (name, s)) in sums.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s.cpu.iter().map(|(o, b)| (o / 1000.0, *b)).collect();
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, col.filled())))?;
        c.draw_series(LineSeries::new(pts.clone(), col))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], col));
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

fn plot_bars(path: &Path, title: &str, unit: &str, bars: &[(String, f64)]) -> Result<()> {
    let max = bars.iter().map(|b| b.1).fold(1e-9, f64::max) * 1.15;
    let root = canvas(path, 450)?;
    let mut c = frame(&root, title, 70).build_cartesian_2d(0.0..bars.len() as f64, 0.0..max)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 { names.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc(unit)
        .draw()?;
    c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let col = Palette99::pick(i).to_rgba();
        Rectangle::new([(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *v)], col.filled())
    }))?;
    c.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, (_, v))| Text::new(format!("{v:.2}"), (i as f64 + 0.35, *v + max * 0.02), ("sans-serif", 15))),
    )?;
    root.present()?;
    Ok(())
}

fn plot_cdf(path: &Path, title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let max_us = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let root = canvas(path, 500)?;
    let mut c = frame(&root, title, 60).build_cartesian_2d((1.0..max_us * 1.5).log_scale(), 0.0..100.0)?;
    c.configure_mesh().x_desc("round-trip time, µs (log)").y_desc("percent of frames").draw()?;
    for (i, (name, pts)) in curves.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = pts.iter().map(|(q, v)| (v.max(1.0), *q)).collect();
        c.draw_series(LineSeries::new(pts, col.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], col));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else { bail!("usage: xvs-report DIR [--smoke]") };
    let smoke = args.iter().any(|a| a == "--smoke");
    let dir = Path::new(dir);
    let raw = std::fs::read_to_string(dir.join("runs.jsonl"))
        .with_context(|| format!("reading {}/runs.jsonl", dir.display()))?;
    let runs: Vec<Value> = raw
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("runs.jsonl line {}", i + 1)))
        .collect::<Result<_>>()?;
    let present: Vec<&str> = SWITCHES.iter().copied().filter(|s| runs.iter().any(|r| r["switch"] == *s)).collect();
    let sums: Vec<(&str, Summary)> = present.iter().map(|s| (*s, summarize(&runs, s))).collect();
    let get = |name: &str| sums.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let ceiling =
        median(runs.iter().filter(|r| r["switch"] == "ceiling").filter_map(|r| delivered(r).map(|d| d.0)).collect());
    let repeats = runs.iter().filter_map(|r| r["repeat"].as_i64()).max().unwrap_or(0);

    let mut md = String::new();
    writeln!(md, "# Performance report{}\n", if smoke { " (smoke run: numbers are not measurements)" } else { "" })?;
    writeln!(
        md,
        "Made by `scripts/bench.sh` on {} CPUs, kernel {}; medians of {repeats} repeat(s). Raw data: `runs.jsonl`.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    )?;
    writeln!(
        md,
        "Testbed: two hosts in network namespaces joined by a veth underlay (MTU 1600), VMs as \
         namespaces on veth ports, two tenants (VNI 100 and 200) with the same addresses. \
         Traffic: `xvs-trafgen` (AF_XDP) sending one UDP flow of 60-byte frames (64 with FCS) \
         from vm1 to vm2 across VXLAN, sink in vm2 (AF_XDP), both on CPU0; every switch on CPU1.\n"
    )?;
    writeln!(md, "## Results\n")?;
    writeln!(
        md,
        "| switch | flat-out delivered pps | offered | loss-free pps (<0.1 %) | TCP Gbit/s | RTT low load p50 / p99 / p99.9 µs | RTT at 50 % of peak p50 / p99 / p99.9 µs | switch CPU idle | switch CPU under load | CPU1 busy idle / load | machine cycles per delivered frame | frames on the XDP fast path |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (name, s) in &sums {
        let pct = |v: Option<f64>| v.map_or("n/a (softirq)".into(), |x| format!("{x:.1} %"));
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} | {} | {} | {} / {} % | {} | {} |",
            kpps(s.flat),
            kpps(s.flat_offered),
            kpps(s.loss_free),
            num(s.tcp, 2),
            num(s.rtt_low[0], 0),
            num(s.rtt_low[1], 0),
            num(s.rtt_low[2], 0),
            num(s.rtt_half[0], 0),
            num(s.rtt_half[1], 0),
            num(s.rtt_half[2], 0),
            pct(s.idle_sw_cpu),
            pct(s.load_sw_cpu),
            num(s.idle_cpu1, 0),
            num(s.load_cpu1, 0),
            num(s.cycles_per_frame, 0),
            s.fast_share.map_or("–".into(), |x| format!("{:.1} %", 100.0 * x)),
        )?;
    }
    writeln!(
        md,
        "\nMachine cycles per delivered frame: busy time of every CPU during the flat-out run (user, system, irq, softirq; generator and sink included, the same for every switch) times the clock, over the frames the sink got. The fast-path share counts vm1's port on host 1 and vm2's on host 2 (each frame crosses one of each)."
    )?;
    writeln!(
        md,
        "\nSwitch CPU is the switch's processes' user+system time in % of one core (xvs: both xvsd; OVS and OVS-DPDK: both ovs-vswitchd and ovsdb-server; testpmd and the XDP forwarder: their processes); the kernel switch works in softirq, visible only in CPU1's busy share."
    )?;
    if let Some(c) = ceiling {
        writeln!(
            md,
            "\nGenerator ceiling (sender and sink on a bare veth pair, same placement): **{}** delivered pps.",
            kpps(Some(c))
        )?;
        for (name, s) in &sums {
            if s.flat.is_some_and(|x| x > 0.9 * c) {
                writeln!(
                    md,
                    "*{name} is within 10 % of the ceiling or above it: with the ceiling's placement its figure would be generator-bound. (xvs and xdpfwd run the ports' NAPI on CPU1, which leaves CPU0 to the generator and the sink, so their own ceiling is higher and not measured.)*"
                )?;
            }
        }
    }
    let xvs = get("xvs");
    writeln!(md, "\n## Ratios\n")?;
    let present_peers: Vec<(&str, &str)> = PEERS.iter().copied().filter(|(p, _)| get(p).is_some()).collect();
    let mut head = String::from("| measure |");
    let mut rule = String::from("|---|");
    for (_, label) in &present_peers {
        write!(head, " xvs / {label} |")?;
        rule.push_str("---|");
    }
    writeln!(md, "{head}\n{rule}")?;
    type Measure = fn(&Summary) -> Option<f64>;
    let rows: [(&str, Measure); 5] = [
        ("flat-out pps", |s| s.flat),
        ("loss-free pps", |s| s.loss_free),
        ("TCP Gbit/s", |s| s.tcp),
        ("RTT p99 at low load (lower is better)", |s| s.rtt_low[1]),
        ("machine cycles per frame (lower is better)", |s| s.cycles_per_frame),
    ];
    for (label, g) in rows {
        let mut line = format!("| {label} |");
        for (p, _) in &present_peers {
            write!(line, " {} |", ratio(xvs.and_then(g), get(p).and_then(g)))?;
        }
        writeln!(md, "{line}")?;
    }

    writeln!(md, "\n## Targets\n")?;
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let k = get("kernel");
    let o = get("ovs");
    let od = get("ovs-dpdk");
    let x = get("xdpfwd");
    let core = get("xvs-core");
    let fk = quotient(xvs.and_then(|s| s.flat), k.and_then(|s| s.flat));
    let fo = quotient(xvs.and_then(|s| s.flat), o.and_then(|s| s.flat));
    let fod = quotient(xvs.and_then(|s| s.flat), od.and_then(|s| s.flat));
    let fx = quotient(xvs.and_then(|s| s.flat), x.and_then(|s| s.flat));
    let lk = quotient(xvs.and_then(|s| s.rtt_low[1]), k.and_then(|s| s.rtt_low[1]));
    let lc = quotient(xvs.and_then(|s| s.rtt_low[1]), core.and_then(|s| s.rtt_low[1]));
    let lf = quotient(xvs.and_then(|s| s.loss_free), core.and_then(|s| s.loss_free));
    let peers_cycles: Vec<(&str, f64)> = PEERS
        .iter()
        .filter(|(p, _)| *p != "xvs-core")
        .filter_map(|(p, _)| Some((*p, get(p)?.cycles_per_frame?)))
        .collect();
    let cyc = xvs.and_then(|s| s.cycles_per_frame);
    let fewer = cyc.filter(|_| !peers_cycles.is_empty()).map(|c| peers_cycles.iter().all(|p| c < p.1));
    let idle = xvs.and_then(|s| s.idle_sw_cpu).map(|x| x / 2.0);
    let to = quotient(xvs.and_then(|s| s.tcp), o.and_then(|s| s.tcp));
    writeln!(md, "| target | measured | verdict |\n|---|---|---|")?;
    let times = |x: Option<f64>, unit: &str| x.map_or("–".into(), |x| format!("{x:.2}×{unit}"));
    let rows = [
        ("64-byte rate ≥ 2× kernel", times(fk, ""), fk.map(|x| x >= 2.0)),
        ("64-byte rate ≥ 1.6× OVS-DPDK", times(fod, ""), fod.map(|x| x >= 1.6)),
        ("64-byte rate vs OVS (AF_XDP)", times(fo, ""), None),
        ("64-byte rate ≥ 90 % of the in-kernel XDP forwarder", times(fx, ""), fx.map(|x| x >= 0.9)),
        ("loss-free rate no worse than without the fast path", times(lf, ""), lf.map(|x| x >= 1.0)),
        ("p99 RTT at low load no worse than without the fast path", times(lc, ""), lc.map(|x| x <= 1.05)),
        ("p99 RTT at low load ≤ kernel's", times(lk, " the kernel's"), lk.map(|x| x <= 1.0)),
        (
            "fewer machine cycles per delivered frame than every peer",
            format!(
                "xvs {}, peers {}",
                num(cyc, 0),
                peers_cycles.iter().map(|(p, c)| format!("{p} {c:.0}")).collect::<Vec<_>>().join(", ")
            ),
            fewer,
        ),
        (
            "idle CPU < 2 % of a core (per xvsd); OVS's PMD burns a core",
            format!(
                "xvs {} per xvsd, OVS {}",
                idle.map_or("–".into(), |x| format!("{x:.2} %")),
                o.and_then(|s| s.idle_sw_cpu).map_or("–".into(), |x| format!("{x:.0} %"))
            ),
            idle.map(|x| x < 2.0),
        ),
        ("TCP ≥ OVS (AF_XDP)", times(to, ""), to.map(|x| x >= 1.0)),
    ];
    for (target, measured, ok) in rows {
        writeln!(md, "| {target} | {measured} | {} |", verdict(ok))?;
    }

    let prof = profile(&runs, "flat", "xvs");
    if !prof.is_empty() {
        writeln!(md, "\n## Where xvs's cycles go (last flat-out run, from xvsd's own counters)\n")?;
        writeln!(
            md,
            "| host | CPU | frames | busy share | busy ns/frame | busy cycles/frame | rx cycles/frame | pipeline cycles/frame | tx cycles/frame | recycle cycles/frame |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
        for row in prof {
            writeln!(md, "{row}")?;
        }
        writeln!(
            md,
            "\nBusy time is wall time of polls that received frames; the stage cycles come from the \
             time-stamp counter read around each stage (once per port and poll, never per frame). Time \
             the kernel spends for xvs (AF_XDP copy mode, veth transmit) is in the system calls of the \
             tx and rx stages and in softirq outside xvsd."
        )?;
    }

    // Multi-core scaling.
    let one = xvs.and_then(|s| s.flat);
    let two = median(
        runs.iter()
            .filter(|r| r["switch"] == "xvs-2core")
            .filter_map(|r| {
                let got = f(r, &["sink", "received"])?;
                let secs = f(r, &["send0", "secs"])?.max(f(r, &["send1", "secs"]).unwrap_or(0.0));
                Some(got / secs)
            })
            .collect(),
    );
    if one.is_some() || two.is_some() {
        writeln!(md, "\n## Multi-core scaling (xvs)\n")?;
        writeln!(md, "| forwarding cores per xvsd | flows | delivered pps | Mpps per core |\n|---|---|---|---|")?;
        if let Some(v) = one {
            writeln!(md, "| 1 | 1 | {} | {:.3} |", kpps(Some(v)), v / 1e6)?;
        }
        if let Some(v) = two {
            writeln!(md, "| 2 | 2 (one per queue) | {} | {:.3} |", kpps(Some(v)), v / 2e6)?;
        }
        writeln!(
            md,
            "\nThis machine has 2 CPUs: with 2 cores, each xvsd's second core shares CPU0 with the generator and the sink."
        )?;
        let prof2 = profile(&runs, "flat2", "xvs-2core");
        if !prof2.is_empty() {
            writeln!(
                md,
                "\n| host | CPU | frames | busy share | busy ns/frame | busy cycles/frame | rx | pipeline | tx | recycle |\n|---|---|---|---|---|---|---|---|---|---|"
            )?;
            for row in prof2 {
                writeln!(md, "{row}")?;
            }
        }
    }

    // Plots.
    let refs: Vec<(&str, &Summary)> = sums.iter().map(|(n, s)| (*n, s)).collect();
    plot_sweep(&dir.join("sweep.svg"), &refs, ceiling)?;
    plot_cpu(&dir.join("cpu.svg"), &refs)?;
    let mut bars: Vec<(String, f64)> = sums.iter().filter_map(|(n, s)| Some((n.to_string(), s.flat? / 1e6))).collect();
    if let Some(c) = ceiling {
        bars.push(("generator ceiling".into(), c / 1e6));
    }
    plot_bars(&dir.join("throughput.svg"), "64-byte frames VM to VM across VXLAN, flat out", "Mpps delivered", &bars)?;
    let tcp: Vec<(String, f64)> = sums.iter().filter_map(|(n, s)| Some((n.to_string(), s.tcp?))).collect();
    plot_bars(&dir.join("tcp.svg"), "TCP VM to VM across VXLAN (iperf3, one stream)", "Gbit/s", &tcp)?;
    let mut curves = Vec::new();
    for (n, s) in &sums {
        if !s.cdf_low.is_empty() {
            curves.push((format!("{n}, 1k pps"), s.cdf_low.clone()));
        }
        if !s.cdf_half.is_empty() {
            curves.push((format!("{n}, 50% of peak"), s.cdf_half.clone()));
        }
    }
    plot_cdf(&dir.join("latency-cdf.svg"), "Round-trip time of 64-byte frames (CDF)", &curves)?;
    writeln!(md, "\n## Plots\n")?;
    for (file, what) in [
        ("throughput.svg", "flat-out rate per switch"),
        ("sweep.svg", "delivered against offered rate"),
        ("cpu.svg", "the machine's CPU against offered rate"),
        ("latency-cdf.svg", "round-trip latency CDFs"),
        ("tcp.svg", "TCP throughput"),
    ] {
        writeln!(md, "![{what}]({file})")?;
    }
    std::fs::write(dir.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}
