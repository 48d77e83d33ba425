//! report.svg: a self-contained, hand-written SVG of the motion over the series — a b-value
//! strip, translations (mm), rotations (deg), and FD / RMS (mm) against the volume index —
//! readable on its own (title, units, ticks, legends, the conventions in a footnote).

use super::motion::MotionRow;
use crate::io::gradients::{self, GradientTable};
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 150.0; // room for legends beside each panel
/// b ≤ this is a b=0 volume (the tool's default --b0-threshold).
const B0_THRESHOLD: f64 = 50.0;
const PANEL_H: f64 = 150.0;
const PANEL_GAP: f64 = 42.0;
const TOP: f64 = 132.0; // below the title block and b-value strip

/// Colours of x, y, z (the usual RGB axis code) and of the shells.
const AXIS_COLOURS: [&str; 3] = ["#d62728", "#2ca02c", "#1f77b4"];
const B0_COLOUR: &str = "#9a9a9a";
const SHELL_COLOURS: [&str; 6] = [
    "#7b3294", "#e66101", "#008837", "#c51b7d", "#4575b4", "#8c510a",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Shells of the b-values as the rest of the tool sees them ([`crate::io::gradients::shells`],
/// b ≤ 50 is b=0 = shell 0). Returns per-volume shell ids and each shell's label.
fn shells(bvals: &[f64]) -> (Vec<usize>, Vec<String>) {
    let table = GradientTable {
        bvecs: vec![[0.0; 3]; bvals.len()],
        bvals: bvals.to_vec(),
    };
    let mut ids = vec![0; bvals.len()];
    let mut labels = vec!["b=0".to_string()];
    for (s, shell) in gradients::shells(&table, B0_THRESHOLD).iter().enumerate() {
        for &i in &shell.indices {
            ids[i] = s + 1;
        }
        // Scanners jitter b around the nominal value: show the mean to the nearest 10.
        labels.push(format!("b≈{}", (shell.bvalue / 10.0).round() * 10.0));
    }
    (ids, labels)
}

fn shell_colour(id: usize) -> &'static str {
    if id == 0 {
        B0_COLOUR
    } else {
        SHELL_COLOURS[(id - 1) % SHELL_COLOURS.len()]
    }
}

/// "Nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Y range covering the data and 0, padded and snapped to ticks: (lo, hi, step).
fn y_range(values: impl Iterator<Item = f64>, min_span: f64) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < min_span {
        let pad = (min_span - (hi - lo)) / 2.0;
        if lo < 0.0 {
            lo -= pad;
            hi += pad;
        } else {
            hi = lo + min_span;
        }
    }
    let step = nice_step(hi - lo, 4.0);
    let lo = (lo / step + 1e-9).floor() * step;
    let hi = (hi / step - 1e-9).ceil() * step;
    (lo, hi, step)
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let s = format!("{:.*}", decimals, v);
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    series: Vec<(String, &'a str, Vec<f64>, bool)>, // label, colour, values, dashed
    min_span: f64,
}

/// Power's FD above which a volume is commonly flagged (mm): the report's default threshold line.
pub const DEFAULT_FD_THRESHOLD_MM: f64 = 0.5;

/// The UTC calendar date `YYYY-MM-DD` of `secs` seconds after the Unix epoch (proleptic
/// Gregorian; Howard Hinnant's civil-from-days).
pub fn utc_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What the report shows besides the motion rows.
#[derive(Clone, Debug)]
pub struct ReportOptions<'a> {
    /// The series' name, shown as given in the title.
    pub title: &'a str,
    /// Date shown in the title (e.g. of the run, `YYYY-MM-DD`).
    pub date: Option<String>,
    /// FD threshold (mm): a line in the displacement panel and the count of volumes above it.
    pub fd_threshold: Option<f64>,
    /// Outlier slices per volume (one count per row), when detection ran: a strip under the
    /// b-value strip marks the volumes that have any, and the subtitle counts them.
    pub outliers_per_volume: Option<Vec<usize>>,
    /// Eddy-current terms per volume, when estimated: `[offset, ∂d/∂x, ∂d/∂y, ∂d/∂z]`, the
    /// displacement along the phase-encode axis at the field centre (mm) and its gradient
    /// (mm per mm, scanner RAS). Shown in a fourth panel, gradients as mm per 100 mm.
    pub eddy_terms: Option<Vec<[f64; 4]>>,
}

impl<'a> ReportOptions<'a> {
    /// Title only; FD threshold at [`DEFAULT_FD_THRESHOLD_MM`]; nothing else.
    pub fn new(title: &'a str) -> Self {
        ReportOptions {
            title,
            date: None,
            fd_threshold: Some(DEFAULT_FD_THRESHOLD_MM),
            outliers_per_volume: None,
            eddy_terms: None,
        }
    }
}

/// The SVG report of a run. `title` is shown as given (e.g. the input file name); the FD
/// threshold line is drawn at [`DEFAULT_FD_THRESHOLD_MM`].
pub fn svg_report(title: &str, rows: &[MotionRow]) -> String {
    svg_report_with(&ReportOptions::new(title), rows)
}

/// The SVG report of a run with [`ReportOptions`].
pub fn svg_report_with(opts: &ReportOptions, rows: &[MotionRow]) -> String {
    let title = opts.title;
    let n = rows.len();
    let bvals: Vec<f64> = rows.iter().map(|r| r.bvalue).collect();
    let (ids, labels) = shells(&bvals);
    let plot_w = WIDTH - LEFT - RIGHT;
    // Volume k occupies the cell [k, k+1)·cell; its points sit at the cell centre, so the
    // b-value strip, the b=0 bands and the curves line up.
    let cell = plot_w / n.max(1) as f64;
    let xs = |k: f64| -> f64 { LEFT + (k + 0.5) * cell };
    let col = |i: usize| -> Vec<f64> { rows.iter().map(|r| r.params[i]).collect() };
    let mut panels = vec![
        Panel {
            title: "Translation",
            unit: "mm",
            series: (0..3)
                .map(|i| {
                    (
                        ["tx", "ty", "tz"][i].to_string(),
                        AXIS_COLOURS[i],
                        col(i),
                        false,
                    )
                })
                .collect(),
            min_span: 0.5,
        },
        Panel {
            title: "Rotation",
            unit: "deg",
            series: (0..3)
                .map(|i| {
                    (
                        ["rx", "ry", "rz"][i].to_string(),
                        AXIS_COLOURS[i],
                        col(3 + i),
                        false,
                    )
                })
                .collect(),
            min_span: 0.5,
        },
        Panel {
            title: "Displacement",
            unit: "mm",
            series: vec![
                (
                    "FD (Power)".into(),
                    "#222222",
                    rows.iter().map(|r| r.fd).collect(),
                    false,
                ),
                (
                    "RMS rel (prev.)".into(),
                    "#e377c2",
                    rows.iter().map(|r| r.rms_rel).collect(),
                    false,
                ),
                (
                    "RMS abs (ref.)".into(),
                    "#17becf",
                    rows.iter().map(|r| r.rms_abs).collect(),
                    true,
                ),
            ],
            min_span: 0.5,
        },
    ];
    if let Some(ec) = opts.eddy_terms.as_ref().filter(|e| e.len() == n) {
        let names = ["offset", "per 100 mm x", "per 100 mm y", "per 100 mm z"];
        let colours = ["#222222", AXIS_COLOURS[0], AXIS_COLOURS[1], AXIS_COLOURS[2]];
        panels.push(Panel {
            title: "Eddy-current displacement along the phase-encode axis",
            unit: "mm",
            series: (0..4)
                .map(|i| {
                    let scale = if i == 0 { 1.0 } else { 100.0 };
                    (
                        names[i].to_string(),
                        colours[i],
                        ec.iter().map(|t| scale * t[i]).collect(),
                        i == 0,
                    )
                })
                .collect(),
            min_span: 0.2,
        });
    }
    let outliers = opts.outliers_per_volume.as_ref().filter(|o| o.len() == n);
    // The outlier strip sits under the b-value strip; panels move down to make room.
    let top = if outliers.is_some() { TOP + 24.0 } else { TOP };
    let n_panels = panels.len() as f64;
    let height = top + n_panels * (PANEL_H + PANEL_GAP) + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Title block.
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="26" font-size="17" font-weight="bold">Head motion: {}{}</text>"#,
        esc(title),
        opts.date
            .as_deref()
            .map(|d| format!(" · {}", esc(d)))
            .unwrap_or_default()
    );
    let fd_max = rows.iter().map(|r| r.fd).fold(0.0, f64::max);
    let fd_mean = if n > 1 {
        rows[1..].iter().map(|r| r.fd).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let rms_max = rows.iter().map(|r| r.rms_abs).fold(0.0, f64::max);
    let above = opts
        .fd_threshold
        .map(|t| {
            format!(
                " · {} above FD {} mm",
                rows.iter().filter(|r| r.fd > t).count(),
                t
            )
        })
        .unwrap_or_default();
    let outlier_note = outliers
        .map(|o| {
            format!(
                " · {} outlier slices in {} volumes",
                o.iter().sum::<usize>(),
                o.iter().filter(|&&c| c > 0).count()
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="46" fill="#444">{n} volumes · mean FD {fd_mean:.3} mm · max FD {fd_max:.3} mm{above} · max RMS from reference {rms_max:.3} mm{outlier_note}</text>"##
    );

    // b-value strip with legend.
    let strip_y = 62.0;
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">b-value</text>"##,
        LEFT - 8.0,
        strip_y + 12.0
    );
    for (k, &id) in ids.iter().enumerate() {
        let x = LEFT + k as f64 * cell;
        let _ = writeln!(
            s,
            r#"<rect x="{:.2}" y="{strip_y}" width="{:.2}" height="16" fill="{}"><title>volume {k}: b={}</title></rect>"#,
            x,
            cell,
            shell_colour(id),
            bvals[k]
        );
    }
    let mut lx = LEFT;
    for (id, label) in labels.iter().enumerate() {
        if !ids.contains(&id) {
            continue;
        }
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            strip_y + 24.0,
            shell_colour(id)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 16.0,
            strip_y + 34.0,
            esc(label)
        );
        lx += 30.0 + 8.0 * label.chars().count() as f64;
    }

    if let Some(o) = outliers {
        let y = strip_y + 42.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">outliers</text>"##,
            LEFT - 8.0,
            y + 11.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="14" fill="none" stroke="#ccc"/>"##
        );
        for (k, &c) in o.iter().enumerate().filter(|(_, &c)| c > 0) {
            let _ = writeln!(
                s,
                r##"<rect class="outlier" x="{:.2}" y="{y:.1}" width="{:.2}" height="14" fill="#d62728"><title>volume {k}: {c} outlier slice{}</title></rect>"##,
                LEFT + k as f64 * cell,
                cell.max(1.5),
                if c == 1 { "" } else { "s" }
            );
        }
    }

    for (p, panel) in panels.iter().enumerate() {
        let y0 = top + p as f64 * (PANEL_H + PANEL_GAP);
        // The displacement panel always shows its FD threshold line.
        let threshold = opts.fd_threshold.filter(|_| p == 2);
        let (lo, hi, step) = y_range(
            panel
                .series
                .iter()
                .flat_map(|s| s.2.iter().copied())
                .chain(threshold),
            panel.min_span,
        );
        let ys = |v: f64| y0 + PANEL_H * (hi - v) / (hi - lo);
        let _ = writeln!(s, r#"<g>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{} ({})</text>"#,
            y0 - 8.0,
            panel.title,
            panel.unit
        );
        // Light bands behind b=0 volumes.
        for (k, &id) in ids.iter().enumerate() {
            if id == 0 {
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.2}" y="{y0}" width="{:.2}" height="{PANEL_H}" fill="{B0_COLOUR}" fill-opacity="0.15"/>"#,
                    LEFT + k as f64 * cell,
                    cell
                );
            }
        }
        // Y grid, ticks and labels.
        let mut v = lo;
        while v <= hi + step * 1e-6 {
            let y = ys(v);
            let zero = v.abs() < step * 1e-6;
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" x2="{:.1}" y1="{y:.2}" y2="{y:.2}" stroke="{}" stroke-width="{}"/>"#,
                LEFT + plot_w,
                if zero { "#888" } else { "#e3e3e3" },
                if zero { 1.0 } else { 0.8 }
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.2}" text-anchor="end" fill="#333">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                tick_label(v, step)
            );
            v += step;
        }
        // Y axis label.
        let _ = writeln!(
            s,
            r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" fill="#333">{}</text>"##,
            LEFT - 52.0,
            y0 + PANEL_H / 2.0,
            panel.unit
        );
        // X ticks.
        if n > 0 {
            let xstep = nice_step(n.max(2) as f64 - 1.0, 10.0).max(1.0);
            let mut k = 0.0;
            while k <= (n - 1) as f64 + 1e-9 {
                let x = xs(k);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x:.2}" x2="{x:.2}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
                    y0 + PANEL_H,
                    y0 + PANEL_H + 4.0
                );
                let _ = writeln!(
                    s,
                    r##"<text x="{x:.2}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
                    y0 + PANEL_H + 16.0,
                    k as usize
                );
                k += xstep;
            }
        }
        // Series: polylines broken at non-finite values, then markers coloured by shell.
        for (label, colour, values, dashed) in &panel.series {
            let mut seg: Vec<String> = Vec::new();
            let flush = |seg: &mut Vec<String>, s: &mut String| {
                if seg.len() > 1 {
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6"{} points="{}"/>"#,
                        if *dashed {
                            r#" stroke-dasharray="5,3""#
                        } else {
                            ""
                        },
                        seg.join(" ")
                    );
                }
                seg.clear();
            };
            for (k, &v) in values.iter().enumerate() {
                if v.is_finite() {
                    seg.push(format!("{:.2},{:.2}", xs(k as f64), ys(v)));
                } else {
                    flush(&mut seg, &mut s);
                }
            }
            flush(&mut seg, &mut s);
            let _ = label;
        }
        if let Some((_, _, fd, _)) = panel.series.first().filter(|_| p == 2) {
            for (k, &v) in fd.iter().enumerate() {
                if v.is_finite() {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="{}" stroke="white" stroke-width="0.6"><title>volume {k}: b={}, FD {v:.3} mm</title></circle>"#,
                        xs(k as f64),
                        ys(v),
                        shell_colour(ids[k]),
                        bvals[k]
                    );
                }
            }
        }
        if let Some(t) = threshold {
            let y = ys(t);
            let _ = writeln!(
                s,
                r##"<line class="fd-threshold" x1="{LEFT}" x2="{:.1}" y1="{y:.2}" y2="{y:.2}" stroke="#d62728" stroke-width="1" stroke-dasharray="2,3"><title>FD threshold {t} mm</title></line>"##,
                LEFT + plot_w
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.2}" text-anchor="end" font-size="10" fill="#d62728">FD {t} mm</text>"##,
                LEFT + plot_w - 4.0,
                y - 3.0
            );
        }
        // Frame.
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0}" width="{plot_w:.1}" height="{PANEL_H}" fill="none" stroke="#333"/>"##
        );
        // Legend beside the panel.
        for (i, (label, colour, _, dashed)) in panel.series.iter().enumerate() {
            let ly = y0 + 14.0 + 20.0 * i as f64;
            let lx0 = LEFT + plot_w + 14.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx0:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{}/>"#,
                lx0 + 22.0,
                if *dashed {
                    r#" stroke-dasharray="5,3""#
                } else {
                    ""
                }
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                lx0 + 28.0,
                ly + 4.0,
                esc(label)
            );
        }
        let _ = writeln!(s, "</g>");
    }
    let yb = top + n_panels * (PANEL_H + PANEL_GAP) - PANEL_GAP + 34.0;
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{yb:.1}" text-anchor="middle" fill="#333">volume index (grey bands: b=0 volumes)</text>"##,
        LEFT + plot_w / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" font-size="10" fill="#666">Transforms map the reference (b=0 median) to each volume; parameters about the volume centre, R = Rz·Ry·Rx.</text>"##,
        yb + 18.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" font-size="10" fill="#666">FD: Power et al. 2012 (rotations on a 50 mm sphere). RMS: Jenkinson 1999 (80 mm sphere), from the reference (abs) and the previous volume (rel).</text>"##,
        yb + 32.0
    );
    s.push_str("</svg>\n");
    s
}
