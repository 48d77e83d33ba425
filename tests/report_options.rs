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
            date: Some("2026-12-02".into()),
            fd_threshold: Some(0.5),
            ..ReportOptions::new("sub-01_dwi")
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
            fd_threshold: Some(3.0),
            ..ReportOptions::new("x")
        },
        &rows(&fd),
    );
    assert!(svg.contains("0 above FD 3 mm"));
    let y = line_y(&svg, "fd-threshold").unwrap();
    assert!(y.is_finite());
    // No threshold: no line.
    let svg = svg_report_with(
        &ReportOptions {
            fd_threshold: None,
            ..ReportOptions::new("x")
        },
        &rows(&fd),
    );
    assert!(line_y(&svg, "fd-threshold").is_none());
}

/// Outlier slices: a strip marks exactly the volumes that have any, with their counts, and the
/// subtitle totals them; without detection there is no strip.
#[test]
fn outlier_strip_marks_the_volumes_with_outliers() {
    let fd = [0.0, 0.2, 0.9, 0.3, 0.6, 0.1];
    let svg = svg_report_with(
        &ReportOptions {
            outliers_per_volume: Some(vec![0, 2, 0, 0, 1, 0]),
            ..ReportOptions::new("x")
        },
        &rows(&fd),
    );
    let marks: Vec<&str> = svg
        .lines()
        .filter(|l| l.contains("class=\"outlier\""))
        .collect();
    assert_eq!(marks.len(), 2, "{marks:?}");
    assert!(marks[0].contains("volume 1: 2 outlier slices"));
    assert!(marks[1].contains("volume 4: 1 outlier slice<"));
    assert!(svg.contains("3 outlier slices in 2 volumes"));
    let plain = svg_report_with(&ReportOptions::new("x"), &rows(&fd));
    assert!(!plain.contains("class=\"outlier\"") && !plain.contains("outlier slices"));
}

/// Eddy-current terms get a fourth panel whose offset curve is drawn in proportion to the values
/// (y grows downwards); the panel is absent without them.
#[test]
fn eddy_panel_plots_the_terms() {
    let fd = [0.0, 0.2, 0.9, 0.3, 0.6, 0.1];
    let terms: Vec<[f64; 4]> = (0..6)
        .map(|k| [0.1 * k as f64, 0.001, -0.002 * k as f64, 0.0])
        .collect();
    let svg = svg_report_with(
        &ReportOptions {
            eddy_terms: Some(terms),
            ..ReportOptions::new("x")
        },
        &rows(&fd),
    );
    assert!(svg.contains("Eddy-current displacement along the phase-encode axis"));
    let plain = svg_report_with(&ReportOptions::new("x"), &rows(&fd));
    assert!(!plain.contains("Eddy-current"));
    // The offset series is the dashed black polyline of the last panel: equal steps in value
    // give equal steps in y, and larger values are drawn higher (smaller y).
    let line = svg
        .lines()
        .rfind(|l| l.starts_with("<polyline") && l.contains("#222222") && l.contains("dasharray"))
        .expect("offset polyline");
    let pts = line
        .split("points=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"/>");
    let ys: Vec<f64> = pts
        .split(' ')
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ys.len(), 6);
    let step = ys[1] - ys[0];
    assert!(step < 0.0, "larger offsets are drawn higher");
    for w in ys.windows(2) {
        assert!((w[1] - w[0] - step).abs() < 0.02, "{ys:?}");
    }
}
