//! A tiny SVG builder for the report's charts: scales (linear, log) with readable ticks, axes,
//! polylines, circles, rectangles and text. Every piece of text is escaped; styling is left
//! to CSS classes so the page's stylesheet decides colours.

use std::fmt::Write;

/// Escapes text for XML/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A number for a coordinate: two decimals at most, no trailing zeros.
fn n(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Maps data values to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear {
        lo: f64,
        hi: f64,
    },
    /// Both bounds > 0.
    Log {
        lo: f64,
        hi: f64,
    },
}

/// The smallest of 1, 2, 5 × 10^k at or above `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw * (1.0 - 1e-9) {
            return m * mag;
        }
    }
    10.0 * mag
}

impl Scale {
    /// A linear scale over [lo, hi] widened to whole ticks (about `ticks` of them).
    pub fn linear_nice(lo: f64, hi: f64, ticks: usize) -> Scale {
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
            (lo - pad, lo + pad)
        };
        let step = nice_step((hi - lo) / ticks.max(1) as f64);
        Scale::Linear {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
        }
    }

    /// A log scale over [lo, hi] widened to 1, 2, 5 × 10^k.
    pub fn log_nice(lo: f64, hi: f64) -> Scale {
        let lo = lo.max(f64::MIN_POSITIVE);
        let hi = hi.max(lo * 1.5);
        let down = |v: f64| {
            let mag = 10f64.powf(v.log10().floor());
            [5.0, 2.0, 1.0]
                .into_iter()
                .map(|m| m * mag)
                .find(|&c| c <= v * (1.0 + 1e-9))
                .unwrap_or(mag)
        };
        let up = |v: f64| {
            let mag = 10f64.powf(v.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .into_iter()
                .map(|m| m * mag)
                .find(|&c| c >= v * (1.0 - 1e-9))
                .unwrap_or(10.0 * mag)
        };
        Scale::Log {
            lo: down(lo),
            hi: up(hi),
        }
    }

    /// Log when the values span a factor of 8 or more (and are all positive), else linear.
    pub fn fit(lo: f64, hi: f64, ticks: usize) -> Scale {
        if lo > 0.0 && hi / lo >= 8.0 {
            Scale::log_nice(lo, hi)
        } else {
            Scale::linear_nice(lo, hi, ticks)
        }
    }

    pub fn is_log(&self) -> bool {
        matches!(self, Scale::Log { .. })
    }

    pub fn domain(&self) -> (f64, f64) {
        match *self {
            Scale::Linear { lo, hi } | Scale::Log { lo, hi } => (lo, hi),
        }
    }

    /// Position of `v` in [0, 1] (outside for values outside the domain).
    pub fn unit(&self, v: f64) -> f64 {
        match *self {
            Scale::Linear { lo, hi } => {
                if hi == lo {
                    0.5
                } else {
                    (v - lo) / (hi - lo)
                }
            }
            Scale::Log { lo, hi } => {
                if hi == lo || v <= 0.0 {
                    0.0
                } else {
                    (v / lo).ln() / (hi / lo).ln()
                }
            }
        }
    }

    /// Tick values inside the domain, about `approx` of them (log: decades, with 2 and 5
    /// between them when there are few decades).
    pub fn ticks(&self, approx: usize) -> Vec<f64> {
        match *self {
            Scale::Linear { lo, hi } => {
                if hi <= lo {
                    return vec![lo];
                }
                let step = nice_step((hi - lo) / approx.max(1) as f64);
                let first = (lo / step - 1e-9).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                (first..=last)
                    .map(|i| {
                        let v = i as f64 * step;
                        // Round off float noise (0.30000000000000004).
                        let digits = (-step.log10().floor()).max(0.0) as i32 + 1;
                        let f = 10f64.powi(digits);
                        (v * f).round() / f
                    })
                    .collect()
            }
            Scale::Log { lo, hi } => {
                let decades = (hi / lo).log10();
                let mults: &[f64] = if decades <= 1.2 {
                    &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]
                } else if decades <= 3.0 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                let mut out = Vec::new();
                let mut mag = 10f64.powf(lo.log10().floor());
                while mag <= hi * (1.0 + 1e-9) {
                    for m in mults {
                        let v = m * mag;
                        if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                            out.push(v);
                        }
                    }
                    mag *= 10.0;
                }
                out
            }
        }
    }
}

/// A tick label: no more decimals than the spacing of the ticks needs.
pub fn fmt_tick(v: f64, ticks: &[f64]) -> String {
    let step = ticks
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let step = if step.is_finite() { step } else { v.abs() };
    let decimals = if step >= 1.0 || step == 0.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let decimals = decimals.min(6);
    format!("{v:.decimals$}")
}

/// Where a chart's data goes inside its SVG, in pixels.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// A frame with an x and a y scale.
#[derive(Clone, Copy, Debug)]
pub struct Plot {
    pub frame: Frame,
    pub x: Scale,
    pub y: Scale,
}

impl Plot {
    pub fn px(&self, x: f64) -> f64 {
        self.frame.left + self.x.unit(x) * self.frame.width
    }

    pub fn py(&self, y: f64) -> f64 {
        self.frame.top + (1.0 - self.y.unit(y)) * self.frame.height
    }

    pub fn right(&self) -> f64 {
        self.frame.left + self.frame.width
    }

    pub fn bottom(&self) -> f64 {
        self.frame.top + self.frame.height
    }
}

/// Text anchor.
#[derive(Clone, Copy, Debug)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG document under construction.
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

impl Svg {
    pub fn new(width: f64, height: f64) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    pub fn width(&self) -> f64 {
        self.width
    }

    pub fn height(&self) -> f64 {
        self.height
    }

    fn title(&mut self, title: Option<&str>) {
        if let Some(t) = title {
            let _ = write!(self.body, "<title>{}</title>", escape(t));
        }
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="{}"/>"#,
            n(x1),
            n(y1),
            n(x2),
            n(y2),
            escape(class)
        );
    }

    /// A polyline through `points` (nothing for fewer than two).
    pub fn polyline(&mut self, points: &[(f64, f64)], class: &str) {
        if points.len() < 2 {
            return;
        }
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{},{}", n(*x), n(*y)))
            .collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" class="{}"/>"#,
            pts.join(" "),
            escape(class)
        );
    }

    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, class: &str, title: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<circle cx="{}" cy="{}" r="{}" class="{}">"#,
            n(cx),
            n(cy),
            n(r),
            escape(class)
        );
        self.title(title);
        self.body.push_str("</circle>\n");
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, class: &str, title: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<rect x="{}" y="{}" width="{}" height="{}" class="{}">"#,
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0)),
            escape(class)
        );
        self.title(title);
        self.body.push_str("</rect>\n");
    }

    /// A cross (×) of half-size `r`, for a failed candidate.
    pub fn cross(&mut self, cx: f64, cy: f64, r: f64, class: &str, title: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<path d="M{} {}L{} {}M{} {}L{} {}" class="{}">"#,
            n(cx - r),
            n(cy - r),
            n(cx + r),
            n(cy + r),
            n(cx - r),
            n(cy + r),
            n(cx + r),
            n(cy - r),
            escape(class)
        );
        self.title(title);
        self.body.push_str("</path>\n");
    }

    pub fn text(&mut self, x: f64, y: f64, anchor: Anchor, class: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{}" y="{}" text-anchor="{}" class="{}">{}</text>"#,
            n(x),
            n(y),
            anchor.as_str(),
            escape(class),
            escape(text)
        );
    }

    /// Text rotated by `degrees` around its anchor point.
    pub fn text_rotated(
        &mut self,
        x: f64,
        y: f64,
        degrees: f64,
        anchor: Anchor,
        class: &str,
        text: &str,
    ) {
        let _ = writeln!(
            self.body,
            r#"<text x="{}" y="{}" transform="rotate({} {} {})" text-anchor="{}" class="{}">{}</text>"#,
            n(x),
            n(y),
            n(degrees),
            n(x),
            n(y),
            anchor.as_str(),
            escape(class),
            escape(text)
        );
    }

    /// Grid lines, ticks, tick labels and axis titles of `plot`.
    pub fn axes(&mut self, plot: &Plot, x_title: &str, y_title: &str) {
        self.x_axis(plot, x_title);
        self.y_axis(plot, y_title);
    }

    pub fn x_axis(&mut self, plot: &Plot, title: &str) {
        let f = plot.frame;
        let ticks = plot.x.ticks(((f.width / 90.0) as usize).max(2));
        for t in &ticks {
            let x = plot.px(*t);
            self.line(x, f.top, x, plot.bottom(), "grid");
            self.line(x, plot.bottom(), x, plot.bottom() + 4.0, "tick");
            self.text(
                x,
                plot.bottom() + 16.0,
                Anchor::Middle,
                "ticklabel",
                &fmt_tick(*t, &ticks),
            );
        }
        self.line(f.left, plot.bottom(), plot.right(), plot.bottom(), "axis");
        self.text(
            f.left + f.width / 2.0,
            plot.bottom() + 34.0,
            Anchor::Middle,
            "axistitle",
            title,
        );
    }

    pub fn y_axis(&mut self, plot: &Plot, title: &str) {
        let f = plot.frame;
        let ticks = plot.y.ticks(((f.height / 45.0) as usize).max(2));
        for t in &ticks {
            let y = plot.py(*t);
            self.line(f.left, y, plot.right(), y, "grid");
            self.line(f.left - 4.0, y, f.left, y, "tick");
            self.text(
                f.left - 7.0,
                y + 4.0,
                Anchor::End,
                "ticklabel",
                &fmt_tick(*t, &ticks),
            );
        }
        self.line(f.left, f.top, f.left, plot.bottom(), "axis");
        let (cx, cy) = (f.left - 52.0, f.top + f.height / 2.0);
        self.text_rotated(cx, cy, -90.0, Anchor::Middle, "axistitle", title);
    }

    /// The finished `<svg>` element, labelled for screen readers.
    pub fn finish(self, label: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{label}\">\n{body}</svg>",
            w = n(self.width),
            h = n(self.height),
            label = escape(label),
            body = self.body
        )
    }
}

/// The corners of a step line through `points` (sorted by x): flat until the next x, then up
/// or down; the last value is held until `x_end`.
pub fn step_points(points: &[(f64, f64)], x_end: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2 + 1);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            let prev = out.last().map(|p: &(f64, f64)| p.1).unwrap_or(y);
            if prev != y {
                out.push((x, prev));
            } else {
                continue;
            }
        }
        out.push((x, y));
    }
    if let Some(&(x, y)) = out.last() {
        if x_end > x {
            out.push((x_end, y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("μs ×"), "μs ×");
        let mut s = Svg::new(10.0, 10.0);
        s.text(1.0, 2.0, Anchor::Start, "a\"b", "</svg><script>");
        s.circle(1.0, 1.0, 1.0, "c", Some("<b>&"));
        let out = s.finish("x<y");
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;/svg&gt;&lt;script&gt;"));
        assert!(out.contains("class=\"a&quot;b\""));
        assert!(out.contains("<title>&lt;b&gt;&amp;</title>"));
        assert!(out.contains("aria-label=\"x&lt;y\""));
        assert_eq!(out.matches("<svg").count(), 1);
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(28.4), 50.0);
        assert_eq!(nice_step(0.03), 0.05);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn linear_ticks() {
        let s = Scale::linear_nice(0.0, 10.0, 5);
        assert_eq!(s.domain(), (0.0, 10.0));
        assert_eq!(s.ticks(5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        // Latencies 558..700 μs: the domain widens to whole ticks of 50.
        let s = Scale::linear_nice(558.0, 700.0, 4);
        assert_eq!(s.domain(), (550.0, 700.0));
        assert_eq!(s.ticks(4), [550.0, 600.0, 650.0, 700.0]);
        // No float noise in small steps.
        let t = Scale::linear_nice(0.0, 0.9, 9).ticks(9);
        assert_eq!(t[3], 0.3);
        let labels: Vec<String> = t.iter().map(|v| fmt_tick(*v, &t)).collect();
        assert_eq!(labels[..4], ["0.0", "0.1", "0.2", "0.3"]);
        // A single value gets a range around it.
        let (lo, hi) = Scale::linear_nice(5.0, 5.0, 4).domain();
        assert!(lo < 5.0 && hi > 5.0);
    }

    #[test]
    fn log_ticks() {
        let s = Scale::log_nice(1.0, 1000.0);
        assert_eq!(s.domain(), (1.0, 1000.0));
        assert_eq!(
            s.ticks(5),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        let s = Scale::log_nice(3.0, 70_000.0);
        assert_eq!(s.domain(), (2.0, 100_000.0));
        assert_eq!(s.ticks(5), [10.0, 100.0, 1000.0, 10_000.0, 100_000.0]);
        assert!((s.unit(2.0)).abs() < 1e-12 && (s.unit(100_000.0) - 1.0).abs() < 1e-12);
        let labels: Vec<String> = [10.0, 100.0]
            .iter()
            .map(|v| fmt_tick(*v, &[10.0, 100.0]))
            .collect();
        assert_eq!(labels, ["10", "100"]);
    }

    #[test]
    fn fit_picks_log_for_wide_ranges() {
        assert!(!Scale::fit(558.0, 700.0, 4).is_log());
        assert!(Scale::fit(50.0, 5000.0, 4).is_log());
        assert!(!Scale::fit(0.0, 5000.0, 4).is_log());
    }

    #[test]
    fn plot_maps_data_to_pixels() {
        let p = Plot {
            frame: Frame {
                left: 50.0,
                top: 10.0,
                width: 100.0,
                height: 200.0,
            },
            x: Scale::Linear { lo: 0.0, hi: 10.0 },
            y: Scale::Linear { lo: 0.0, hi: 100.0 },
        };
        assert_eq!(p.px(0.0), 50.0);
        assert_eq!(p.px(10.0), 150.0);
        assert_eq!(p.py(0.0), 210.0);
        assert_eq!(p.py(100.0), 10.0);
        let mut s = Svg::new(200.0, 250.0);
        s.axes(&p, "evaluation", "p50 (μs)");
        let out = s.finish("chart");
        // About one tick per 90 px across (0, 5, 10) and per 45 px up (0, 50, 100).
        assert_eq!(out.matches("class=\"ticklabel\"").count(), 3 + 3, "{out}");
        for label in [
            ">0<",
            ">5<",
            ">10<",
            ">50<",
            ">100<",
            ">evaluation<",
            ">p50 (μs)<",
        ] {
            assert!(out.contains(label), "no {label} in {out}");
        }
        // The y ticks sit where the data would.
        assert!(
            out.contains(r#"<line x1="46" y1="110" x2="50" y2="110" class="tick"/>"#),
            "{out}"
        );
    }

    #[test]
    fn shapes_and_steps() {
        let mut s = Svg::new(100.0, 100.0);
        s.polyline(&[(0.0, 0.0)], "one");
        s.polyline(&[(0.0, 0.0), (1.5, 2.25)], "two");
        s.circle(1.0, 2.0, 3.0, "c", None);
        s.rect(0.0, 0.0, -1.0, 5.0, "r", Some("t"));
        s.cross(5.0, 5.0, 2.0, "x", None);
        let out = s.finish("shapes");
        assert_eq!(out.matches("<polyline").count(), 1);
        assert!(out.contains(r#"points="0,0 1.5,2.25""#));
        assert_eq!(out.matches("<circle").count(), 1);
        assert!(out.contains(r#"width="0""#));
        assert!(out.contains(r#"d="M3 3L7 7M3 7L7 3""#));
        assert_eq!(
            step_points(&[(1.0, 5.0), (2.0, 5.0), (3.0, 4.0), (4.0, 2.0)], 6.0),
            [
                (1.0, 5.0),
                (3.0, 5.0),
                (3.0, 4.0),
                (4.0, 4.0),
                (4.0, 2.0),
                (6.0, 2.0)
            ]
        );
        assert!(step_points(&[], 3.0).is_empty());
    }
}
