//! The result table: one row per figure, our value beside its baseline.

use std::fmt::Write as _;

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// No target, or not comparable.
    NotApplicable,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub ours: String,
    pub baseline: String,
    /// ours / baseline, or a dash.
    pub ratio: String,
    pub target: String,
    pub met: Met,
}

impl Row {
    pub fn new(scenario: impl Into<String>, ours: impl Into<String>) -> Row {
        Row {
            scenario: scenario.into(),
            ours: ours.into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            met: Met::NotApplicable,
        }
    }

    pub fn baseline(mut self, baseline: impl Into<String>, ratio: Option<f64>) -> Row {
        self.baseline = baseline.into();
        self.ratio = ratio.map_or_else(|| "—".into(), |r| format!("{r:.2}×"));
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = if met { Met::Yes } else { Met::No };
        self
    }

    pub fn note_target(mut self, target: impl Into<String>) -> Row {
        self.target = target.into();
        self
    }
}

/// Safe ratio: `None` when the denominator is zero.
pub fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| ours / baseline)
}

/// The table as Markdown (readable in a terminal too).
pub fn render(rows: &[Row]) -> String {
    let header = ["scenario", "ours", "baseline", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.ours.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
                match r.met {
                    Met::Yes => "yes".into(),
                    Met::No => "**no**".into(),
                    Met::NotApplicable => "—".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        out.push('|');
        for (c, w) in cols.iter().zip(widths) {
            let pad = w - c.chars().count();
            let _ = write!(out, " {c}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_markdown() {
        let rows = vec![
            Row::new("a", "1 ms")
                .baseline("0.5 ms", ratio(1.0, 0.5))
                .target("< 2 ms", true),
            Row::new("b", "x"),
        ];
        let t = render(&rows);
        assert!(t.contains("2.00×"));
        assert!(t.contains("yes"));
        assert_eq!(t.lines().count(), 4);
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}
