//! report.svg options: the date in the title (calendar dates checked against Python's
//! datetime), the FD threshold line at the right height, and the count of volumes above it.

use nifreeze::report::{svg_report_with, utc_date, MotionRow, ReportOptions};

#[test]
fn utc_dates_match_the_calendar() {
    // python3: datetime.fromtimestamp(s, timezone.utc).date()
    for (secs, date) in [
        (0, "1970-01-01"),
        (951_782_400, "2000-02-29"),
        (1_767_225_600, "2026-01-01"),
        (-86_400, "1969-12-31"),
        (4_102_444_800, "2100-01-01"),
        (4_102_444_799, "2099-12-31"),
    ] {
        assert_eq!(utc_date(secs), date, "{secs}");
    }
}

fn rows(fd: &[f64]) -> Vec<MotionRow> {
    fd.iter()
        .enumerate()
        .map(|(k, &f)| MotionRow {
            index: k,
            bvalue: if k == 0 { 0.0 } else { 1000.0 },
            params: [0.0; 6],
            fd: f,
            rms_abs: f,
            rms_rel: f,
        })
        .collect()
}

/// The y coordinate of a horizontal line with `class` in the SVG.
fn line_y(svg: &str, class: &str) -> Option<f64> {
    let line = svg
        .lines()
        .find(|l| l.contains(&format!("class=\"{class}\"")))?;
    let start = line.find("y1=\"")? + 4;
    line[start..].split('"').next()?.parse().ok()
}

#[test]
fn threshold_line_title_date_and_count() {
    let fd = [0.0, 0.2, 0.9, 0.3, 0.6, 0.1];
    let svg = svg_report_with(
        &ReportOptions {
            title: "sub-01_dwi",
            date: Some("2026-12-02".into()),
            fd_threshold: Some(0.5),
        },
        &rows(&fd),
    );
    assert!(svg.contains("Head motion: sub-01_dwi · 2026-12-02"));
    assert!(svg.contains("2 above FD 0.5 mm"));
    // The line sits between the markers of FD 0.3 and 0.6, proportionally (y grows downwards).
    let y = line_y(&svg, "fd-threshold").expect("threshold line");
    let marker_y = |v: f64| -> f64 {
        let tag = format!("FD {v:.3} mm</title>");
        let l = svg.lines().find(|l| l.contains(&tag)).unwrap();
        let s = l.find("cy=\"").unwrap() + 4;
        l[s..].split('"').next().unwrap().parse().unwrap()
    };
    let (y3, y6) = (marker_y(0.3), marker_y(0.6));
    let expected = y3 + (y6 - y3) * (0.5 - 0.3) / (0.6 - 0.3);
    assert!(
        (y - expected).abs() < 0.02,
        "line at {y}, expected {expected}"
    );
    // A threshold above every FD still shows (the axis extends to it).
    let svg = svg_report_with(
        &ReportOptions {
            title: "x",
            date: None,
            fd_threshold: Some(3.0),
        },
        &rows(&fd),
    );
    assert!(svg.contains("0 above FD 3 mm"));
    let y = line_y(&svg, "fd-threshold").unwrap();
    assert!(y.is_finite());
    // No threshold: no line.
    let svg = svg_report_with(
        &ReportOptions {
            title: "x",
            date: None,
            fd_threshold: None,
        },
        &rows(&fd),
    );
    assert!(line_y(&svg, "fd-threshold").is_none());
}
